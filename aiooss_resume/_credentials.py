"""Credentials, credential providers, and the environment lookup for credentials and region.

A request is signed with an AccessKey pair, plus an STS security token when the pair is
temporary (protocol spec 2.6: the token travels as ``x-oss-security-token`` and is signed).
Temporary credentials expire, so the client never holds a ``Credentials`` for long: it asks a
``CredentialsProvider`` before signing each request. A provider that talks to a token service
must therefore cache, and refresh shortly before expiry; the two providers here never change
their answer.

The environment lookup knows two families of variables:

1. ``OSS_ACCESS_KEY_ID`` / ``OSS_ACCESS_KEY_SECRET`` / ``OSS_SESSION_TOKEN``
2. ``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` /
   ``ALIBABA_CLOUD_SECURITY_TOKEN``

The first family whose id *and* secret are both set wins, and its own token (if any) is used.
Families are never mixed: a token belongs to the key pair it was issued with, and pairing an
id from one family with a secret from another can only produce ``SignatureDoesNotMatch``
errors that are far harder to diagnose than a clear "not found". An empty variable counts as
unset, as it does for most tools that read the environment.

Secrets never appear in a repr, a str, or an error message; only the AccessKey id (which OSS
itself echoes in error documents) and whether a token is set are shown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, final, runtime_checkable

from ._errors import CredentialsError

__all__ = [
    "ENV_ACCESS_KEY_ID",
    "ENV_ACCESS_KEY_SECRET",
    "ENV_ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ENV_ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ENV_ALIBABA_CLOUD_REGION_ID",
    "ENV_ALIBABA_CLOUD_SECURITY_TOKEN",
    "ENV_REGION",
    "ENV_SESSION_TOKEN",
    "Credentials",
    "CredentialsProvider",
    "EnvironmentCredentialsProvider",
    "StaticCredentialsProvider",
    "credentials_from_environ",
    "resolve_credentials_provider",
    "resolve_region",
]

ENV_ACCESS_KEY_ID = "OSS_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "OSS_ACCESS_KEY_SECRET"
ENV_SESSION_TOKEN = "OSS_SESSION_TOKEN"
ENV_ALIBABA_CLOUD_ACCESS_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_ALIBABA_CLOUD_ACCESS_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ENV_ALIBABA_CLOUD_SECURITY_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"
ENV_REGION = "OSS_REGION"
ENV_ALIBABA_CLOUD_REGION_ID = "ALIBABA_CLOUD_REGION_ID"

# (id, secret, token) per family, in order of precedence.
_ENV_FAMILIES: tuple[tuple[str, str, str], ...] = (
    (ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SESSION_TOKEN),
    (
        ENV_ALIBABA_CLOUD_ACCESS_KEY_ID,
        ENV_ALIBABA_CLOUD_ACCESS_KEY_SECRET,
        ENV_ALIBABA_CLOUD_SECURITY_TOKEN,
    ),
)


def _check_field(name: str, value: object) -> None:
    """Reject values that cannot go into an HTTP header intact.

    The message names the field and the problem, never the value: the value may be a secret,
    and error messages end up in logs.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if value != value.strip():
        # Usually a stray newline from a file or a copy-paste; a signature computed with it
        # would silently never match.
        raise ValueError(f"{name} must not have leading or trailing whitespace")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        # A CR/LF inside a header value would split the header (header injection).
        raise ValueError(f"{name} must not contain control characters such as newlines")


@final
@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """An AccessKey pair, with the STS token when the pair is temporary.

    ``repr`` and ``str`` show the AccessKey id and whether a token is set, never the secret or
    the token. Construction raises ``ValueError`` (``TypeError`` for non-strings) if a field is
    empty, has surrounding whitespace, or contains control characters; the message names the
    field, not its value.
    """

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None

    def __post_init__(self) -> None:
        _check_field("access_key_id", self.access_key_id)
        _check_field("access_key_secret", self.access_key_secret)
        if self.security_token is not None:
            _check_field("security_token", self.security_token)

    def __repr__(self) -> str:
        token = "<set>" if self.security_token is not None else "None"
        return (
            f"Credentials(access_key_id={self.access_key_id!r}, "
            f"access_key_secret=<hidden>, security_token={token})"
        )

    __str__ = __repr__


@runtime_checkable
class CredentialsProvider(Protocol):
    """Anything that can hand out the credentials to sign the next request with.

    The client awaits ``get_credentials()`` before signing every request, so implementations
    should return a cached value and refresh it only when it is about to expire. Failures
    should be raised as ``CredentialsError``.
    """

    async def get_credentials(self) -> Credentials:
        """Return the credentials to sign the next request with."""
        ...


@final
class StaticCredentialsProvider:
    """Always returns the same ``Credentials``."""

    __slots__ = ("_credentials",)

    def __init__(self, credentials: Credentials) -> None:
        if not isinstance(credentials, Credentials):
            raise TypeError(f"credentials must be a Credentials, not {type(credentials).__name__}")
        self._credentials = credentials

    @property
    def credentials(self) -> Credentials:
        """The credentials this provider returns."""
        return self._credentials

    async def get_credentials(self) -> Credentials:
        """Return the fixed credentials."""
        return self._credentials

    def __repr__(self) -> str:
        return f"StaticCredentialsProvider({self._credentials!r})"


def _env_value(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value or None  # empty means unset


def credentials_from_environ(environ: Mapping[str, str] | None = None) -> Credentials:
    """Read credentials from the environment (``os.environ`` when ``environ`` is None).

    See the module docstring for the variables and their precedence. Raises
    ``CredentialsError`` if no family has both an id and a secret, or if the chosen family
    holds a malformed value (the message names the variable, never its value).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    for id_var, secret_var, token_var in _ENV_FAMILIES:
        key_id = _env_value(env, id_var)
        secret = _env_value(env, secret_var)
        if key_id is None or secret is None:
            continue
        token = _env_value(env, token_var)
        for var, value in ((id_var, key_id), (secret_var, secret), (token_var, token)):
            if value is None:
                continue
            try:
                _check_field(var, value)
            except (TypeError, ValueError) as exc:
                # The environment is the outside world, so this is a CredentialsError;
                # ``from None`` keeps the chained traceback free of anything value-bearing.
                raise CredentialsError(f"environment variable {exc}") from None
        return Credentials(key_id, secret, token)

    partial = sorted(
        var
        for id_var, secret_var, _ in _ENV_FAMILIES
        for var in (id_var, secret_var)
        if _env_value(env, var) is not None
    )
    message = (
        "no OSS credentials found: pass credentials explicitly, or set "
        f"{ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET} (plus {ENV_SESSION_TOKEN} for STS "
        f"credentials), or {ENV_ALIBABA_CLOUD_ACCESS_KEY_ID} and "
        f"{ENV_ALIBABA_CLOUD_ACCESS_KEY_SECRET} (plus {ENV_ALIBABA_CLOUD_SECURITY_TOKEN})"
    )
    if partial:
        verb = "is" if len(partial) == 1 else "are"
        message += (
            f"; only {', '.join(partial)} {verb} set, but a family is used only when both its "
            "id and its secret are set, and families are never mixed"
        )
    raise CredentialsError(message)


@final
class EnvironmentCredentialsProvider:
    """Credentials from the environment, read on first use and then cached.

    Caching keeps the per-request cost at zero and means a signing run never changes key
    pairs half-way because someone edited ``os.environ``. Build a new provider to re-read.
    """

    __slots__ = ("_cached", "_environ")

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        self._cached: Credentials | None = None

    async def get_credentials(self) -> Credentials:
        """Return the environment's credentials; raise ``CredentialsError`` if there are none."""
        # No await between the check and the store, so concurrent callers cannot interleave.
        if self._cached is None:
            self._cached = credentials_from_environ(self._environ)
        return self._cached

    def __repr__(self) -> str:
        source = "os.environ" if self._environ is None else "custom mapping"
        return f"EnvironmentCredentialsProvider({source})"


def resolve_region(region: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Return ``region`` if given, else ``OSS_REGION``, else ``ALIBABA_CLOUD_REGION_ID``, else None.

    Surrounding whitespace in the environment values is ignored and an empty value counts as
    unset. An explicit ``region`` must be a non-empty string without surrounding whitespace
    (``ValueError`` otherwise).
    """
    if region is not None:
        if not isinstance(region, str):
            raise TypeError(f"region must be a str, not {type(region).__name__}")
        if not region or region != region.strip():
            raise ValueError(f"region must be a non-empty name without whitespace: {region!r}")
        return region
    env: Mapping[str, str] = os.environ if environ is None else environ
    for var in (ENV_REGION, ENV_ALIBABA_CLOUD_REGION_ID):
        value = (env.get(var) or "").strip()
        if value:
            return value
    return None


def resolve_credentials_provider(
    credentials: Credentials | CredentialsProvider | None,
    environ: Mapping[str, str] | None = None,
) -> CredentialsProvider:
    """Turn the client's ``credentials`` argument into a provider.

    ``Credentials`` become a ``StaticCredentialsProvider``; a provider is returned as is;
    ``None`` means the environment (``EnvironmentCredentialsProvider(environ)``, read lazily on
    the first request). Anything else raises ``TypeError``.
    """
    if credentials is None:
        return EnvironmentCredentialsProvider(environ)
    if isinstance(credentials, Credentials):
        return StaticCredentialsProvider(credentials)
    if isinstance(credentials, CredentialsProvider):
        return credentials
    raise TypeError(
        "credentials must be Credentials, a CredentialsProvider or None, "
        f"not {type(credentials).__name__}"
    )
