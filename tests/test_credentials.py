"""Tests for aiooss_resume._credentials: Credentials, providers, environment lookup."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiooss_resume._credentials import (
    Credentials,
    CredentialsProvider,
    EnvironmentCredentialsProvider,
    StaticCredentialsProvider,
    credentials_from_environ,
    resolve_credentials_provider,
    resolve_region,
)
from aiooss_resume._errors import CredentialsError

AK = "TESTAKID1234567890"
SECRET = "TESTSECRETabcdefghijklmnopqrstuvwxyz0123"
TOKEN = "CAIS+testSTStoken/with+slash=and=equals"

ALL_SIX = (
    "OSS_ACCESS_KEY_ID",
    "OSS_ACCESS_KEY_SECRET",
    "OSS_SESSION_TOKEN",
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
)

# Secrets and tokens are drawn from an alphabet that cannot spell any fixed text of a repr or a
# message, so "the secret is not in the text" cannot pass or fail by coincidence.
_secrets = st.text(alphabet="0123456789+/=QXZ", min_size=12, max_size=60)
_key_ids = st.text(alphabet="abcdefghijklmnop", min_size=1, max_size=30)


# ---------------------------------------------------------------------------------------------
# Credentials


def test_fields_and_defaults() -> None:
    creds = Credentials(AK, SECRET)
    assert (creds.access_key_id, creds.access_key_secret, creds.security_token) == (
        AK,
        SECRET,
        None,
    )
    assert Credentials(AK, SECRET, TOKEN).security_token == TOKEN


def test_frozen_hashable_and_comparable() -> None:
    creds = Credentials(AK, SECRET, TOKEN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        creds.access_key_secret = "x"  # type: ignore[misc]
    assert creds == Credentials(AK, SECRET, TOKEN)
    assert creds != Credentials(AK, SECRET)
    assert hash(creds) == hash(Credentials(AK, SECRET, TOKEN))
    assert pickle.loads(pickle.dumps(creds)) == creds
    assert copy.deepcopy(creds) == creds


def test_repr_shows_id_and_token_presence_only() -> None:
    with_token = Credentials(AK, SECRET, TOKEN)
    without = Credentials(AK, SECRET)
    assert repr(with_token) == (
        f"Credentials(access_key_id='{AK}', access_key_secret=<hidden>, security_token=<set>)"
    )
    assert repr(without) == (
        f"Credentials(access_key_id='{AK}', access_key_secret=<hidden>, security_token=None)"
    )
    for text in (repr(with_token), str(with_token), f"{with_token}", f"{with_token!s:>10}"):
        assert SECRET not in text
        assert TOKEN not in text
    assert SECRET not in repr([with_token, {"c": without}])


@given(key_id=_key_ids, secret=_secrets, token=st.one_of(st.none(), _secrets))
def test_repr_never_contains_secret_or_token(key_id: str, secret: str, token: str | None) -> None:
    creds = Credentials(key_id, secret, token)
    for text in (repr(creds), str(creds), repr(StaticCredentialsProvider(creds))):
        assert secret not in text
        assert token is None or token not in text
        assert key_id in text


_BAD_VALUES = ["", " ", "x ", " x", "x\n", "\nx", "a\nb", "a\r\nb", "a\tb", "a\x00b", "a\x7fb"]


@pytest.mark.parametrize("field", ["access_key_id", "access_key_secret", "security_token"])
@pytest.mark.parametrize("bad", _BAD_VALUES)
def test_invalid_fields_rejected(field: str, bad: str) -> None:
    kwargs = {"access_key_id": AK, "access_key_secret": SECRET, "security_token": TOKEN}
    kwargs[field] = bad
    with pytest.raises(ValueError, match=field):
        Credentials(**kwargs)


@pytest.mark.parametrize("field", ["access_key_id", "access_key_secret", "security_token"])
def test_non_strings_rejected(field: str) -> None:
    kwargs: dict[str, object] = {
        "access_key_id": AK,
        "access_key_secret": SECRET,
        "security_token": TOKEN,
    }
    kwargs[field] = b"bytes"
    with pytest.raises(TypeError, match=field):
        Credentials(**kwargs)  # type: ignore[arg-type]


@given(
    secret=_secrets,
    prefix=st.sampled_from(["", " ", "\t", "\n"]),
    suffix=st.sampled_from(["", " ", "\n", "\r\n"]),
    inner=st.sampled_from(["", "\n", "\x00"]),
    field=st.sampled_from(["access_key_secret", "security_token"]),
)
def test_error_messages_never_contain_the_secret(
    secret: str, prefix: str, suffix: str, inner: str, field: str
) -> None:
    bad = prefix + secret[:6] + inner + secret[6:] + suffix
    if bad == secret:  # nothing wrong with it
        return
    kwargs = {"access_key_id": AK, "access_key_secret": SECRET}
    kwargs[field] = bad
    with pytest.raises(ValueError, match=field) as info:
        Credentials(**kwargs)
    assert secret[:6] not in str(info.value)
    assert secret[6:] not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Providers


class _CustomProvider:
    async def get_credentials(self) -> Credentials:
        return Credentials(AK, SECRET)


def test_protocol_is_runtime_checkable() -> None:
    creds = Credentials(AK, SECRET)
    assert isinstance(StaticCredentialsProvider(creds), CredentialsProvider)
    assert isinstance(EnvironmentCredentialsProvider({}), CredentialsProvider)
    assert isinstance(_CustomProvider(), CredentialsProvider)
    not_a_provider: object = creds
    assert not isinstance(not_a_provider, CredentialsProvider)


@pytest.mark.anyio
async def test_static_provider() -> None:
    creds = Credentials(AK, SECRET, TOKEN)
    provider = StaticCredentialsProvider(creds)
    assert provider.credentials is creds
    assert await provider.get_credentials() is creds
    assert await provider.get_credentials() is creds
    assert SECRET not in repr(provider)
    assert TOKEN not in repr(provider)


def test_static_provider_rejects_non_credentials() -> None:
    with pytest.raises(TypeError):
        StaticCredentialsProvider((AK, SECRET))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_environment_provider_reads_once_and_caches() -> None:
    env = {"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SECRET}
    provider = EnvironmentCredentialsProvider(env)
    first = await provider.get_credentials()
    assert first == Credentials(AK, SECRET)
    env["OSS_ACCESS_KEY_ID"] = "changed"
    assert await provider.get_credentials() is first
    assert "custom mapping" in repr(provider)
    assert SECRET not in repr(provider)


@pytest.mark.anyio
async def test_environment_provider_error_is_not_cached() -> None:
    env: dict[str, str] = {}
    provider = EnvironmentCredentialsProvider(env)
    with pytest.raises(CredentialsError):
        await provider.get_credentials()
    env.update(ALIBABA_CLOUD_ACCESS_KEY_ID=AK, ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET)
    assert await provider.get_credentials() == Credentials(AK, SECRET)


@pytest.mark.anyio
async def test_environment_provider_defaults_to_os_environ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ALL_SIX:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", SECRET)
    monkeypatch.setenv("OSS_SESSION_TOKEN", TOKEN)
    provider = EnvironmentCredentialsProvider()
    assert await provider.get_credentials() == Credentials(AK, SECRET, TOKEN)
    assert repr(provider) == "EnvironmentCredentialsProvider(os.environ)"
    assert credentials_from_environ() == Credentials(AK, SECRET, TOKEN)


# ---------------------------------------------------------------------------------------------
# Environment chain


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"OSS_ACCESS_KEY_ID": "a", "OSS_ACCESS_KEY_SECRET": "s"},
            Credentials("a", "s"),
            id="oss-family",
        ),
        pytest.param(
            {"OSS_ACCESS_KEY_ID": "a", "OSS_ACCESS_KEY_SECRET": "s", "OSS_SESSION_TOKEN": "t"},
            Credentials("a", "s", "t"),
            id="oss-family-sts",
        ),
        pytest.param(
            {"ALIBABA_CLOUD_ACCESS_KEY_ID": "b", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "u"},
            Credentials("b", "u"),
            id="alibaba-family",
        ),
        pytest.param(
            {
                "ALIBABA_CLOUD_ACCESS_KEY_ID": "b",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "u",
                "ALIBABA_CLOUD_SECURITY_TOKEN": "v",
            },
            Credentials("b", "u", "v"),
            id="alibaba-family-sts",
        ),
        pytest.param(
            {key: key.lower() for key in ALL_SIX},
            Credentials("oss_access_key_id", "oss_access_key_secret", "oss_session_token"),
            id="oss-family-wins",
        ),
        pytest.param(
            {
                "OSS_ACCESS_KEY_ID": "a",
                "OSS_ACCESS_KEY_SECRET": "s",
                "ALIBABA_CLOUD_SECURITY_TOKEN": "v",
            },
            Credentials("a", "s"),
            id="no-alibaba-token-with-oss-pair",
        ),
        pytest.param(
            {
                "OSS_SESSION_TOKEN": "t",
                "ALIBABA_CLOUD_ACCESS_KEY_ID": "b",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "u",
            },
            Credentials("b", "u"),
            id="no-oss-token-with-alibaba-pair",
        ),
        pytest.param(
            {
                "OSS_ACCESS_KEY_ID": "a",
                "OSS_SESSION_TOKEN": "t",
                "ALIBABA_CLOUD_ACCESS_KEY_ID": "b",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "u",
            },
            Credentials("b", "u"),
            id="incomplete-oss-family-skipped",
        ),
        pytest.param(
            {
                "OSS_ACCESS_KEY_ID": "",
                "OSS_ACCESS_KEY_SECRET": "s",
                "ALIBABA_CLOUD_ACCESS_KEY_ID": "b",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "u",
            },
            Credentials("b", "u"),
            id="empty-means-unset",
        ),
        pytest.param(
            {"OSS_ACCESS_KEY_ID": "a", "OSS_ACCESS_KEY_SECRET": "s", "OSS_SESSION_TOKEN": ""},
            Credentials("a", "s"),
            id="empty-token-means-none",
        ),
    ],
)
def test_environment_chain(env: dict[str, str], expected: Credentials) -> None:
    assert credentials_from_environ(env) == expected


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="empty"),
        pytest.param({"OSS_ACCESS_KEY_ID": AK}, id="id-only"),
        pytest.param(
            {"OSS_ACCESS_KEY_ID": AK, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}, id="mixed"
        ),
        pytest.param(
            {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SECRET}, id="mixed-2"
        ),
        pytest.param({"OSS_SESSION_TOKEN": TOKEN}, id="token-only"),
        pytest.param({"OSS_ACCESS_KEY_ID": "", "OSS_ACCESS_KEY_SECRET": ""}, id="blank"),
    ],
)
def test_missing_credentials_name_all_six_variables(env: dict[str, str]) -> None:
    with pytest.raises(CredentialsError) as info:
        credentials_from_environ(env)
    message = str(info.value)
    for name in ALL_SIX:
        assert name in message
    assert SECRET not in message
    assert TOKEN not in message


def test_missing_credentials_mentions_partial_setup() -> None:
    with pytest.raises(CredentialsError, match="; only OSS_ACCESS_KEY_ID is set, but"):
        credentials_from_environ({"OSS_ACCESS_KEY_ID": AK})


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        ("OSS_ACCESS_KEY_ID", " padded"),
        ("OSS_ACCESS_KEY_SECRET", SECRET + "\n"),
        ("OSS_SESSION_TOKEN", TOKEN + "\r\n"),
        ("OSS_ACCESS_KEY_SECRET", SECRET[:10] + "\n" + SECRET[10:]),
    ],
)
def test_malformed_environment_value(variable: str, bad: str) -> None:
    env = {"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SECRET, "OSS_SESSION_TOKEN": TOKEN}
    env[variable] = bad
    with pytest.raises(CredentialsError, match=variable) as info:
        credentials_from_environ(env)
    message = str(info.value)
    assert SECRET[:10] not in message
    assert SECRET[10:] not in message
    assert TOKEN not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@given(
    oss=st.fixed_dictionaries(
        {},
        optional={
            "OSS_ACCESS_KEY_ID": _key_ids,
            "OSS_ACCESS_KEY_SECRET": _secrets,
            "OSS_SESSION_TOKEN": _secrets,
        },
    ),
    ali=st.fixed_dictionaries(
        {},
        optional={
            "ALIBABA_CLOUD_ACCESS_KEY_ID": _key_ids,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": _secrets,
            "ALIBABA_CLOUD_SECURITY_TOKEN": _secrets,
        },
    ),
)
def test_environment_chain_never_mixes_families(oss: dict[str, str], ali: dict[str, str]) -> None:
    env = {**oss, **ali}
    families = [
        ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"),
        (
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            "ALIBABA_CLOUD_SECURITY_TOKEN",
        ),
    ]
    chosen = next((f for f in families if f[0] in env and f[1] in env), None)
    if chosen is None:
        with pytest.raises(CredentialsError):
            credentials_from_environ(env)
        return
    id_var, secret_var, token_var = chosen
    assert credentials_from_environ(env) == Credentials(
        env[id_var], env[secret_var], env.get(token_var)
    )


# ---------------------------------------------------------------------------------------------
# Region and provider resolution


@pytest.mark.parametrize(
    ("region", "env", "expected"),
    [
        ("cn-hangzhou", {"OSS_REGION": "cn-beijing"}, "cn-hangzhou"),
        (
            None,
            {"OSS_REGION": "cn-beijing", "ALIBABA_CLOUD_REGION_ID": "cn-shanghai"},
            "cn-beijing",
        ),
        (None, {"ALIBABA_CLOUD_REGION_ID": "cn-shanghai"}, "cn-shanghai"),
        (None, {"OSS_REGION": "", "ALIBABA_CLOUD_REGION_ID": "cn-shanghai"}, "cn-shanghai"),
        (None, {"OSS_REGION": " cn-beijing\n"}, "cn-beijing"),
        (None, {"OSS_REGION": "  "}, None),
        (None, {}, None),
    ],
)
def test_resolve_region(region: str | None, env: dict[str, str], expected: str | None) -> None:
    assert resolve_region(region, env) == expected


@pytest.mark.parametrize("bad", ["", " cn-hangzhou", "cn-hangzhou\n"])
def test_resolve_region_rejects_bad_argument(bad: str) -> None:
    with pytest.raises(ValueError, match="region"):
        resolve_region(bad, {})


def test_resolve_region_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSS_REGION", raising=False)
    monkeypatch.setenv("ALIBABA_CLOUD_REGION_ID", "ap-southeast-1")
    assert resolve_region(None) == "ap-southeast-1"


@pytest.mark.anyio
async def test_resolve_credentials_provider() -> None:
    creds = Credentials(AK, SECRET)
    static = resolve_credentials_provider(creds)
    assert isinstance(static, StaticCredentialsProvider)
    assert await static.get_credentials() is creds

    custom = _CustomProvider()
    assert resolve_credentials_provider(custom) is custom

    from_env = resolve_credentials_provider(
        None, {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}
    )
    assert isinstance(from_env, EnvironmentCredentialsProvider)
    assert await from_env.get_credentials() == creds


def test_resolve_credentials_provider_is_lazy() -> None:
    # Building a client with no credentials in sight must not fail; the first request does.
    assert isinstance(resolve_credentials_provider(None, {}), EnvironmentCredentialsProvider)


@pytest.mark.parametrize("bad", [(AK, SECRET), {"access_key_id": AK}, AK])
def test_resolve_credentials_provider_rejects_other_types(bad: object) -> None:
    with pytest.raises(TypeError, match="credentials"):
        resolve_credentials_provider(bad)  # type: ignore[arg-type]
