"""The HTTP seam: a tiny Transport Protocol, the aiohttp transport and an in-memory mock.

Theory of operation
-------------------
The client speaks to OSS through ``Transport.send(HttpRequest) -> HttpResponse``. Only this
module imports aiohttp's client; every aiohttp or socket failure is mapped here, once, to
``TransportError``, so no foreign exception crosses the public boundary.

Bodies are ``bytes`` or a *factory* returning a fresh async iterator of chunks: a retry calls
the factory again (the file is re-read with ``pread``), so no body is ever held whole in
memory. Streamed bodies are sent with an explicit ``Content-Length`` (aiohttp would otherwise
switch to chunked encoding), and aiohttp is told not to invent a ``Content-Type``, which
would break the signature (spec 4.1).

Timeouts are idle timeouts, not totals (a 5 GB part may legitimately take minutes): the
deadline moves forward every time a body chunk is handed to the socket, and after the body,
waiting for the response may take at most ``read_timeout``. A peer that stops reading our
body, or never answers, fails the request with ``TransportError`` instead of hanging.

A request may carry a response *sink* (a download): then a 2xx answer's body is not kept but
handed, in chunks of ``SINK_CHUNK`` bytes, to a writer the sink factory returns for that
attempt, and the ``HttpResponse`` has an empty body. Each chunk handed over moves the idle
deadline forward, as each chunk sent does.

A response whose body ends before its ``Content-Length`` (the connection closed mid-body) is
a ``TransportError`` too, never a short body taken for a whole one: the request may have
taken effect, but its answer was lost, so it is retried like any other lost connection.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol, final, runtime_checkable
from urllib.parse import unquote

import aiohttp
from yarl import URL

from ._errors import ProtocolError, TransportError

__all__ = [
    "AiohttpTransport",
    "BodyFactory",
    "Chunk",
    "HttpRequest",
    "HttpResponse",
    "MockTransport",
    "SinkFactory",
    "Transport",
]

Chunk = bytes | bytearray | memoryview
"""A piece of a streamed request body. Anything but ``bytes`` (a ``memoryview`` of a read
buffer, usually) may be filled with a later chunk once nothing refers to it any more: a
transport that keeps a chunk after asking for the next one keeps a reference to it (or a
copy), and never changes it."""

BodyFactory = Callable[[], AsyncIterator[Chunk]]
"""Returns a new async iterator over the body's chunks; called once per attempt."""

SinkFactory = Callable[[], Callable[[bytes], Awaitable[None]]]
"""Returns a new writer for a 2xx response's body, called once per attempt (a download)."""

MAX_RESPONSE_BODY = 16 * 1024 * 1024
"""Larger answers without a sink are not OSS's XML: objects are downloaded through a sink."""

SINK_CHUNK = 1024 * 1024
"""Bytes handed to a response sink at a time (one ``pwrite`` of the download's file)."""

WRITE_SLICE = 256 * 1024
"""Over HTTPS, the largest piece of a body chunk handed to aiohttp at once (0: whole
chunks). asyncio's TLS transport encrypts what it is given on the event loop in one go, so
a 1 MiB chunk for each of several connections could hold one loop iteration for 6-9 ms;
in 256 KiB pieces the longest iteration measured 4.0 instead of 6.1 ms at 8 MiB x 4 and
7.1 instead of 8.7 ms at 8 MiB x 16, at the same throughput and CPU
(``benchmarks/results/ab-tls-slice.json``). Plain HTTP is not sliced: its send is a copy
into the socket buffer, and slicing it measured no clear gain."""


SECRET_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-oss-security-token",
        "security-token",  # the Python v2 SDK's unsigned V1 spelling of the STS token
    }
)
"""Header names (lower case) whose values never appear in a repr."""

SECRET_QUERY_PARAMS: Final = frozenset(
    {"signature", "x-oss-signature", "security-token", "x-oss-security-token"}
)
"""Query parameters (lower case) of presigned URLs whose values never appear in a repr."""

_REDACTED: Final = "<redacted>"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with the value of every secret-bearing header replaced.

    An ``Authorization`` value keeps its scheme (``OSS4-HMAC-SHA256``, ``OSS``): the
    signature would let anyone replay the request while it is fresh.
    """
    shown: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() not in SECRET_HEADERS:
            shown[name] = value
        elif name.lower() == "authorization" and " " in value.strip():
            shown[name] = f"{value.strip().split(' ', 1)[0]} {_REDACTED}"
        else:
            shown[name] = _REDACTED
    return shown


def redact_url(url: str) -> str:
    """``url`` with the values of presigned-URL secrets (signature, STS token) replaced."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    fragment = ""
    if "#" in query:
        query, fragment = query.split("#", 1)
        fragment = "#" + fragment
    pieces = []
    for piece in query.split("&"):
        name, eq, _value = piece.partition("=")
        if eq and unquote(name).lower() in SECRET_QUERY_PARAMS:
            piece = f"{name}={_REDACTED}"
        pieces.append(piece)
    return f"{base}?{'&'.join(pieces)}{fragment}"


def _describe_body(body: bytes | BodyFactory | None) -> str:
    # Bodies are never echoed: a part is megabytes, and an error document may quote the
    # request's string to sign, STS token included.
    if body is None:
        return "None"
    if callable(body):
        return "<streamed>"
    return f"<{len(body)} bytes>"


@dataclass(frozen=True, slots=True, repr=False)
class HttpRequest:
    """A fully signed request. ``url`` is absolute and already percent-encoded.

    Its ``repr`` hides secrets: the ``Authorization`` signature, the STS token and any other
    value in :data:`SECRET_HEADERS`, presigned-URL signatures, and the body's bytes.

    ``body`` is ``bytes``, or a callable returning a fresh async iterator of chunks (one
    call per attempt). A chunk may be a ``memoryview`` of a read buffer that the library
    fills again once nothing refers to it: a transport that needs a chunk after asking for
    the next one keeps a reference to it (or copies it), and never changes it.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | BodyFactory | None = None
    content_length: int | None = None
    sink: SinkFactory | None = None

    def __repr__(self) -> str:
        return (
            f"HttpRequest(method={self.method!r}, url={redact_url(self.url)!r}, "
            f"headers={redact_headers(self.headers)!r}, body={_describe_body(self.body)}, "
            f"content_length={self.content_length!r})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class HttpResponse:
    """A complete response; header names are lower-cased.

    Its ``repr`` shows the body's length, not its bytes (an OSS error document may quote the
    request's string to sign, STS token included).
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def __repr__(self) -> str:
        return (
            f"HttpResponse(status={self.status!r}, headers={redact_headers(self.headers)!r}, "
            f"body={_describe_body(self.body)})"
        )


@runtime_checkable
class Transport(Protocol):
    """What the client needs from HTTP: send a request, get a complete response."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send ``request``; raise ``TransportError`` when no complete response arrives."""
        ...

    async def aclose(self) -> None:
        """Release connections (idempotent)."""
        ...


@final
class AiohttpTransport:
    """The production transport over an ``aiohttp.ClientSession``.

    The session is created on first use (inside the running loop) unless one is given; a
    given session belongs to the caller and is not closed by ``aclose``.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 100,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            # never a bool: ssl=False would silently turn certificate verification off
            raise TypeError("ssl must be an ssl.SSLContext (or None for the system's CAs)")
        if ssl is not None and session is not None:
            raise ValueError("pass ssl or session, not both (a session has its own connector)")
        self._ssl: ssl_module.SSLContext | bool = True if ssl is None else ssl
        self._session = session
        self._owns_session = session is None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_connections = max_connections

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                auto_decompress=False,
            )
        return self._session

    async def send(self, request: HttpRequest) -> HttpResponse:
        session = self._get_session()
        loop = asyncio.get_running_loop()
        headers = dict(request.headers)
        data: bytes | AsyncIterator[Chunk]
        try:
            async with asyncio.timeout(
                loop.time() + self._connect_timeout + self._read_timeout
            ) as deadline:
                if callable(request.body):
                    if request.content_length is None:
                        raise ValueError("a streamed body needs a content_length")
                    headers["Content-Length"] = str(request.content_length)
                    https = request.url.startswith("https://")
                    data = self._watch(request.body(), deadline, loop, https)
                else:
                    data = request.body or b""
                async with session.request(
                    request.method,
                    URL(request.url, encoded=True),
                    headers=headers,
                    data=data,
                    skip_auto_headers=("Content-Type",),
                    allow_redirects=False,
                ) as resp:
                    deadline.reschedule(loop.time() + self._read_timeout)
                    if request.sink is not None and 200 <= resp.status < 300:
                        await self._stream(resp, request.sink(), deadline, loop)
                        body = b""
                    elif request.method == "HEAD":
                        body = b""  # none, whatever Content-Length says (the object's size)
                    else:
                        body = await _read_limited(resp)
                    return HttpResponse(
                        status=resp.status,
                        headers={k.lower(): v for k, v in resp.headers.items()},
                        body=body,
                    )
        except TimeoutError:
            raise TransportError(
                f"{request.method} {_short(request.url)}: no progress for "
                f"{self._read_timeout:g} s (timed out)"
            ) from None
        except (aiohttp.ClientPayloadError, asyncio.IncompleteReadError) as exc:
            # aiohttp's text quotes its parser's internal "400" status, which reads like an
            # HTTP answer; say what happened instead.
            raise TransportError(
                f"{request.method} {_short(request.url)}: response truncated: the connection "
                "closed before the whole body arrived"
            ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            # A certificate that does not verify will not verify on the next attempt.
            error = TransportError(
                f"{request.method} {_short(request.url)}: TLS certificate verification failed "
                f"({exc.certificate_error}); to trust a private CA pass "
                "Client(ssl=ssl.create_default_context(cafile=...))"
            )
            error.retryable = False
            raise error from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(
                f"{request.method} {_short(request.url)}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _watch(
        self,
        chunks: AsyncIterator[Chunk],
        deadline: asyncio.Timeout,
        loop: asyncio.AbstractEventLoop,
        url_is_https: bool = False,
    ) -> AsyncIterator[Chunk]:
        # aiohttp asks for the next chunk only once the previous one is written (it awaits
        # the transport's drain), so each chunk is proof that the peer is still reading.
        #
        # No chunk is copied on the way to the socket:
        # * an empty first chunk makes aiohttp send the request head on its own; otherwise
        #   it joins the head and the first chunk into one new bytes (below Python 3.12.9,
        #   where it does not use ``writelines``): 1 MiB copied per part;
        # * a buffer is passed on as a ``memoryview``, because aiohttp cuts every chunk to
        #   the remaining Content-Length (``chunk[:remaining]``), which copies a
        #   ``bytearray`` but only views a ``memoryview``.
        # Each copy also faulted in fresh memory (~60,000 page faults per GiB at 1 MiB
        # chunks): together they cost ~30% of the client's CPU (``ChunkPool``).
        step = WRITE_SLICE if url_is_https else 0
        try:
            yield b""
            async for chunk in chunks:
                deadline.reschedule(loop.time() + self._read_timeout)
                view: Chunk
                if 0 < step < len(chunk):
                    view = memoryview(chunk)  # slices of a view are views, of bytes copies
                    for start in range(0, len(chunk), step):
                        yield view[start : start + step]
                else:
                    view = chunk if isinstance(chunk, bytes) else memoryview(chunk)
                    yield view
                del view
            deadline.reschedule(loop.time() + self._read_timeout)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        write: Callable[[bytes], Awaitable[None]],
        deadline: asyncio.Timeout,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # Whole SINK_CHUNK slices (readexactly), not whatever the socket had: each write is
        # a pwrite in a worker thread, and 16 KiB ones would cost a thread hop each.
        remaining = resp.content_length
        while remaining is None or remaining > 0:
            if remaining is None:
                chunk = await resp.content.read(SINK_CHUNK)
                if not chunk:
                    return
            else:
                chunk = await resp.content.readexactly(min(SINK_CHUNK, remaining))
                remaining -= len(chunk)
            deadline.reschedule(loop.time() + self._read_timeout)
            await write(chunk)
            deadline.reschedule(loop.time() + self._read_timeout)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_RESPONSE_BODY:
        raise ProtocolError(f"response body of {resp.content_length} bytes is too large")
    body = await resp.content.read(MAX_RESPONSE_BODY + 1)
    if len(body) > MAX_RESPONSE_BODY:
        raise ProtocolError("response body is too large")
    # read(n) may return early; drain the rest (bounded above).
    while not resp.content.at_eof():
        more = await resp.content.read(MAX_RESPONSE_BODY + 1 - len(body))
        if not more:
            break
        body += more
        if len(body) > MAX_RESPONSE_BODY:
            raise ProtocolError("response body is too large")
    return body


def _short(url: str) -> str:
    # Never echo query strings (they may carry upload ids and tokens) into messages.
    return url.split("?", 1)[0]


MockHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@final
class MockTransport:
    """An in-memory transport: every request goes to ``handler``.

    Streamed bodies are consumed first and passed to the handler as ``bytes``, so handlers
    can inspect them and the client's CRC bookkeeping runs as it would over a socket.
    """

    def __init__(self, handler: MockHandler) -> None:
        self._handler = handler
        self.requests: list[HttpRequest] = []

    async def send(self, request: HttpRequest) -> HttpResponse:
        body = request.body
        if callable(body):
            body = b"".join([chunk async for chunk in body()])
            if request.content_length is not None and len(body) != request.content_length:
                raise TransportError("streamed body length differs from Content-Length")
        materialised = HttpRequest(
            request.method, request.url, dict(request.headers), body, request.content_length
        )
        self.requests.append(materialised)
        return await self._handler(materialised)

    async def aclose(self) -> None:
        return None
