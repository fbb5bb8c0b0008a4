"""The one entry point for humans and CI: ``nox -s lint typing tests`` (CI), ``bench``, ``docs``."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["lint", "typing", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
# node ali-oss for tests/test_emulator_ali_oss.py; keep in step with ALI_OSS_VERSION there.
ALI_OSS_VERSION = "6.23.0"


def _ali_oss(session: nox.Session) -> dict[str, str]:
    """Install the pinned ali-oss into the nox cache (once); its node_modules for the tests.

    Without node or npm nothing is installed and the interop tests skip, saying so.
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        session.warn("node/npm not found: the node ali-oss interop tests will be skipped")
        return {}
    prefix = session.cache_dir / f"ali-oss-{ALI_OSS_VERSION}"
    node_modules = prefix / "node_modules"
    if not (node_modules / "ali-oss" / "package.json").is_file():
        session.run(
            "npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
            f"ali-oss@{ALI_OSS_VERSION}", external=True,
        )  # fmt: skip
    return {"AIOOSS_ALI_OSS_NODE_MODULES": str(node_modules)}


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff==0.17.6")  # pinned: new releases change formatting
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """mypy --strict over the package."""
    # trustme: the emulator's run-time TLS certificate (testing/_tls.py imports it lazily)
    session.install("-e", ".", "mypy==2.4.1", "trustme==1.2.1")
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite with coverage (soak tests excluded; pass '-m soak' to run them)."""
    # .[test] brings trustme, which tests/test_tls.py needs for the emulator's certificates
    session.install("-e", ".[test]")
    args = session.posargs or ["-m", "not soak"]
    env = _ali_oss(session)
    session.run("pytest", "--cov=aiooss_resume", "--cov-report=term", *args, env=env)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against the official SDKs (never part of the test gate)."""
    session.install("-e", ".[bench]")  # with trustme, for `upload --tls`
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site; warnings are errors."""
    session.install("-e", ".[docs]")
    # pinned: strict mode turns any new griffe/mkdocstrings warning into a failure
    session.install(
        "mkdocs==1.6.1",
        "mkdocs-material==9.8.2",
        "mkdocstrings==1.0.8",
        "mkdocstrings-python==2.0.11",
        "ruff==0.17.6",
    )
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )
