"""``serve``: run the OSS emulator from the command line until interrupted.

``python -m aiooss_resume.testing serve [options]`` (and ``aiooss-resume serve``, which
delegates here through :func:`add_serve_arguments` and :func:`run_serve`) prints the endpoint
URL, exactly ``http://HOST:PORT``, as the first line of stdout and flushes it, so a parent
process can start the server with ``--port 0`` and read where it listens. With ``--tls`` the
URL is ``https://HOST:PORT`` and the second line is the path of the CA certificate to trust
(made at start, see ``_tls``). A short human summary goes to stderr. SIGINT or SIGTERM stop
it cleanly with exit status 0.

Credentials: ``--access-key-id``/``--access-key-secret``, else the environment variables
``OSS_ACCESS_KEY_ID``/``OSS_ACCESS_KEY_SECRET``, else the emulator's fixed demo values
(``DEFAULT_ACCESS_KEY_ID``/``DEFAULT_ACCESS_KEY_SECRET``). The stderr summary shows the key id
and, when it is the demo value, the secret; a secret given by option or environment is never
printed (it may be a real one: the same variables configure the library's clients).
Faults: ``--fault SPEC`` (repeatable), in the text form documented in ``_faults``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta

from ._faults import ChaosSpec, Fault, parse_fault_spec
from ._protocol import OssHttpError, validate_bucket_name
from ._server import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_REGION,
    DEFAULT_REQUEST_TIMEOUT,
    OssServer,
)
from ._tls import TlsCertificates, self_signed_tls

__all__ = ["add_serve_arguments", "run_serve", "serve_main"]

_FAULT_HELP = (
    "inject a fault: OPERATION[:name=value]... with names part, range_start, nth, times "
    "(int or inf), status, code, message, reset_after_bytes, truncate_after_bytes, stall, "
    "delay, throttle, and the flags wrong_crc, omit_crc, drop_response, truncate_response, "
    "corrupt_body; e.g. UploadPart:part=3:times=2:status=503:code=SlowDown, "
    "UploadPart:nth=2:reset_after_bytes=65536 or GetObject:range_start=0:corrupt_body; or "
    "chaos:probability=P:seed=N[:kinds=error+slowdown+reset+wrong_crc+drop_response"
    "+truncate+delay+corrupt][:operations=UploadPart+...]. Repeatable."
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to ``parser`` (for the project's main CLI)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument(
        "--root", default=None, help="directory for objects and uploads (default: temporary)"
    )
    parser.add_argument(
        "--access-key-id",
        default=None,
        help="accepted AccessKey ID (default: $OSS_ACCESS_KEY_ID if set, else the demo value "
        f"{DEFAULT_ACCESS_KEY_ID})",
    )
    parser.add_argument(
        "--access-key-secret",
        default=None,
        help="accepted AccessKey secret (default: $OSS_ACCESS_KEY_SECRET if set, else the demo "
        f"value {DEFAULT_ACCESS_KEY_SECRET})",
    )
    parser.add_argument(
        "--security-token", default=None, help="require this STS token on every request"
    )
    parser.add_argument("--region", default=DEFAULT_REGION, help="region V4 signatures must use")
    parser.add_argument(
        "--virtual-host-base",
        default="localhost",
        metavar="HOST",
        help="also read the bucket from a Host of BUCKET.HOST (default: localhost); Hosts of "
        "the form BUCKET.oss-REGION[-internal].aliyuncs.com always are",
    )
    parser.add_argument(
        "--cname",
        action="append",
        dest="cnames",
        default=[],
        metavar="HOST=BUCKET",
        help="a Host of HOST (any port) means BUCKET, the whole path being the key, as for a "
        "custom domain (repeatable)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="SECONDS",
        help="answer 400 RequestTimeout when a request body sends no byte for this long "
        f"(default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    parser.add_argument(
        "--bucket",
        action="append",
        dest="buckets",
        default=None,
        help="serve only this bucket (repeatable; default: create buckets on first use)",
    )
    parser.add_argument(
        "--store",
        choices=("disk", "discard"),
        default="disk",
        help="discard: keep sizes and checksums only, never the bytes (benchmarks)",
    )
    parser.add_argument(
        "--max-skew", type=float, default=900.0, help="allowed clock skew in seconds"
    )
    parser.add_argument(
        "--list-parts-page-size", type=int, default=None, help="force small ListParts pages"
    )
    parser.add_argument(
        "--namespace-xml", action="store_true", help="add an xmlns to every XML answer"
    )
    parser.add_argument(
        "--fault", action="append", dest="faults", default=[], metavar="SPEC", help=_FAULT_HELP
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a throwaway certificate made now for 127.0.0.1/localhost; the "
        "CA certificate to trust is written to --tls-ca-file, whose path is printed on the "
        "second stdout line (needs the trustme package: aiooss_resume[test])",
    )
    parser.add_argument(
        "--tls-ca-file",
        default=None,
        metavar="PATH",
        help="with --tls: where to write the CA certificate (PEM); default: a temporary "
        "file, removed at exit",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level of the emulator's messages on stderr",
    )


def serve_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aiooss_resume.testing serve``; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["serve"]:
        arguments = arguments[1:]
    parser = argparse.ArgumentParser(
        prog="python -m aiooss_resume.testing serve",
        description="Run a local OSS emulator until interrupted; prints its endpoint URL first.",
    )
    add_serve_arguments(parser)
    args = parser.parse_args(arguments)
    try:
        _faults_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        _check_options(args)
    except ValueError as exc:
        parser.error(str(exc))
    return run_serve(args)


def _cnames_from(args: argparse.Namespace) -> dict[str, str]:
    cnames: dict[str, str] = {}
    for spec in args.cnames:
        host, sep, bucket = spec.partition("=")
        if not sep or not host.strip() or not bucket.strip():
            raise ValueError(f"--cname wants HOST=BUCKET, not {spec!r}")
        cnames[host.strip().lower()] = bucket.strip()
    return cnames


def _check_options(args: argparse.Namespace) -> None:
    """Refuse option values the server would refuse, as a usage error rather than a traceback."""
    if not args.request_timeout > 0:  # also NaN
        raise ValueError("--request-timeout must be a positive number of seconds")
    if args.tls_ca_file is not None and not args.tls:
        raise ValueError("--tls-ca-file needs --tls")
    for bucket in _cnames_from(args).values():
        try:
            validate_bucket_name(bucket)
        except OssHttpError:
            raise ValueError(f"--cname: invalid bucket name {bucket!r}") from None


def _faults_from(args: argparse.Namespace) -> list[Fault | ChaosSpec]:
    return [parse_fault_spec(spec) for spec in args.faults]


def run_serve(args: argparse.Namespace) -> int:
    """Serve with the options of :func:`add_serve_arguments` until SIGINT/SIGTERM."""
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(name)s %(message)s"
    )
    try:
        faults = _faults_from(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        _check_options(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    with contextlib.ExitStack() as cleanup:
        tls: TlsCertificates | None = None
        if args.tls:
            ca_file = args.tls_ca_file
            if ca_file is None:
                directory = cleanup.enter_context(
                    tempfile.TemporaryDirectory(prefix="oss-emulator-tls-")
                )
                ca_file = os.path.join(directory, "ca.pem")
            try:
                tls = self_signed_tls(ca_file=ca_file)
            except (RuntimeError, OSError) as exc:
                print(f"error: --tls: {exc}", file=sys.stderr)  # noqa: T201
                return 2
        try:
            return asyncio.run(_serve(args, faults, tls))
        except KeyboardInterrupt:  # platforms without loop signal handlers
            return 0


async def _serve(
    args: argparse.Namespace, faults: list[Fault | ChaosSpec], tls: TlsCertificates | None
) -> int:
    server = OssServer(
        args.root,
        host=args.host,
        port=args.port,
        access_key_id=args.access_key_id
        or os.environ.get("OSS_ACCESS_KEY_ID")
        or DEFAULT_ACCESS_KEY_ID,
        access_key_secret=args.access_key_secret
        or os.environ.get("OSS_ACCESS_KEY_SECRET")
        or DEFAULT_ACCESS_KEY_SECRET,
        security_token=args.security_token,
        region=args.region,
        buckets=args.buckets,
        store=args.store,
        max_skew=timedelta(seconds=args.max_skew),
        list_parts_page_size=args.list_parts_page_size,
        namespace_xml=args.namespace_xml,
        virtual_host_base=args.virtual_host_base or None,
        request_timeout=args.request_timeout,
        cname=_cnames_from(args),
        ssl_context=tls.server_context if tls is not None else None,
    )
    for rule in faults:
        if isinstance(rule, Fault):
            server.faults.add(rule)
        else:
            server.faults.chaos(*rule)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with server:
        print(server.endpoint, flush=True)  # noqa: T201  (the CLI's contract)
        if tls is not None:
            print(tls.ca_file, flush=True)  # noqa: T201  (second line with --tls)
        credentials = server.credentials
        secret = (
            f"secret {credentials.access_key_secret}"
            if credentials.access_key_secret == DEFAULT_ACCESS_KEY_SECRET
            else "secret as configured (not shown)"
        )
        print(  # noqa: T201
            f"OSS emulator: access key id {credentials.access_key_id}, {secret}, "
            f"region {server.region}, root {server.root}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    return 0
