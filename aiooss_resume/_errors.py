"""The exception tree of aiooss_resume.

Misuse of the API raises builtins (``ValueError``, ``TypeError``, ``FileNotFoundError``).
Failures of the world raise this tree::

    OssError
      ServiceError          OSS answered with an error document (status, code, request id...)
        NoSuchUploadError     the upload id is gone (expired, aborted or completed)
      TransportError        no complete HTTP response: connection refused/reset, timeout
      ProtocolError         a response arrived but could not be understood (bad XML, bad header)
      IntegrityError        a CRC-64 did not match: a part, or the whole object
      CheckpointError       a checkpoint cannot be read, written or locked
      FileChangedError      the source file changed while it was being uploaded
      CredentialsError      no credentials could be found, or a provider failed
      StreamLengthError     a stream upload's source yielded more or fewer bytes than it may

A subclass exists only where code branches on it; everything else is an attribute.
No secret ever appears in a message or a repr: OSS quotes the request's string to sign in a
``SignatureDoesNotMatch`` answer, and with STS credentials that text holds the security token,
so ``ServiceError`` redacts it (see :func:`redact_secrets`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, final

__all__ = [
    "CheckpointError",
    "CredentialsError",
    "FileChangedError",
    "IntegrityError",
    "NoSuchUploadError",
    "OssError",
    "ProtocolError",
    "ServiceError",
    "StreamLengthError",
    "TransportError",
]


_REDACTED: Final = "<redacted>"
# The STS token as a signed header line (V1 StringToSign, V4 CanonicalRequest) and as a
# query parameter (presigned URLs: V1 sub-resource ``security-token``, V4
# ``x-oss-security-token``).
_TOKEN_LINE: Final = re.compile(r"^([ \t]*x-oss-security-token[ \t]*:)[^\r\n]*", re.I | re.M)
_TOKEN_PARAM: Final = re.compile(r"((?:x-oss-)?security-token=)[^&\s]*", re.IGNORECASE)
# V1 answers repeat the string to sign as space-separated hex bytes (StringToSignBytes).
_HEX_BYTES: Final = re.compile(r"\s*[0-9a-fA-F]{2}(?:\s+[0-9a-fA-F]{2})*\s*", re.ASCII)


def redact_secrets(text: str) -> str:
    """``text`` with any STS security token OSS quoted in it replaced by ``<redacted>``.

    Handles the header line ``x-oss-security-token:...`` of a string to sign or canonical
    request, the ``security-token=...`` query parameter, and the same texts spelt as
    space-separated hex bytes (OSS's ``StringToSignBytes``).
    """
    redacted = _TOKEN_PARAM.sub(rf"\g<1>{_REDACTED}", _TOKEN_LINE.sub(rf"\g<1>{_REDACTED}", text))
    if redacted == text and _HEX_BYTES.fullmatch(text):
        decoded = bytes.fromhex(text).decode("utf-8", errors="replace")
        cleaned = redact_secrets(decoded)
        if cleaned != decoded:
            redacted = " ".join(f"{b:02x}" for b in cleaned.encode("utf-8"))
    return redacted


class OssError(Exception):
    """Root of every failure raised by aiooss_resume."""


class ServiceError(OssError):
    """OSS answered with an error.

    Attributes:
        status: the HTTP status code.
        code: the OSS error code (``NoSuchUpload``, ``SlowDown`` ...), or ``""`` when the
            response carried no error document.
        message: OSS's human-readable message (informational; branch on ``code``).
        request_id: the ``x-oss-request-id`` of the failed request (quote it to support).
        ec: the detailed error code (``x-oss-ec`` / ``<EC>``), or ``""``.
        host_id: the ``<HostId>`` element, or ``""``.
        details: any further children of the error document (``StringToSign``...), with any
            STS security token they quote replaced by ``<redacted>``.
        server_date: the response's ``Date`` header, used to correct clock skew.
    """

    status: int
    code: str
    message: str
    request_id: str
    ec: str
    host_id: str
    details: Mapping[str, str]
    server_date: str

    def __init__(
        self,
        status: int,
        code: str,
        message: str = "",
        request_id: str = "",
        *,
        ec: str = "",
        host_id: str = "",
        details: Mapping[str, str] | None = None,
        server_date: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = redact_secrets(message)
        self.request_id = request_id
        self.ec = ec
        self.host_id = host_id
        self.details = {name: redact_secrets(value) for name, value in (details or {}).items()}
        self.server_date = server_date
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"OSS error {self.status} {self.code or '(no code)'}"
        if self.message:
            text += f": {self.message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        if self.ec:
            text += f" [ec {self.ec}]"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        # The instance dict goes along as state so that notes (``add_note``: how many
        # attempts were made, where the checkpoint is) survive a trip between processes.
        return (
            _rebuild_service_error,
            (
                type(self),
                self.status,
                self.code,
                self.message,
                self.request_id,
                self.ec,
                self.host_id,
                dict(self.details),
                self.server_date,
            ),
            dict(self.__dict__),
        )


def _rebuild_service_error(
    cls: type[ServiceError],
    status: int,
    code: str,
    message: str,
    request_id: str,
    ec: str,
    host_id: str,
    details: dict[str, str],
    server_date: str,
) -> ServiceError:
    return cls(
        status,
        code,
        message,
        request_id,
        ec=ec,
        host_id=host_id,
        details=details,
        server_date=server_date,
    )


@final
class NoSuchUploadError(ServiceError):
    """The multipart upload id is unknown to OSS: expired, aborted or already completed."""


@final
class TransportError(OssError):
    """No complete HTTP response was received (connection failure, reset or timeout).

    Attributes:
        retryable: False when sending again cannot help: the server's TLS certificate did
            not verify (pass ``Client(ssl=...)`` trusting its CA). True otherwise.
    """

    retryable: bool = True


@final
class ProtocolError(OssError):
    """A response was received but is not what the OSS protocol allows (malformed XML...)."""


@final
class IntegrityError(OssError):
    """A CRC-64 computed locally differs from the one OSS reported.

    Attributes:
        expected: the CRC computed from the local bytes.
        actual: the CRC reported by OSS (``None`` if absent).
    """

    def __init__(self, message: str, *, expected: int, actual: int | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_integrity_error,
            (str(self), self.expected, self.actual),
            dict(self.__dict__),
        )


def _rebuild_integrity_error(message: str, expected: int, actual: int | None) -> IntegrityError:
    return IntegrityError(message, expected=expected, actual=actual)


@final
class CheckpointError(OssError):
    """A checkpoint file cannot be written, read or locked."""


@final
class FileChangedError(OssError):
    """The source file changed while it was being uploaded; no mixed object was made.

    A multipart upload is aborted (and its checkpoint deleted) before Complete; a single
    PutObject is checked again before its last byte is sent, so the changed file is not
    stored and the object already under the key is untouched. The message says when an
    earlier attempt, whose answer was lost, may have stored a version of the file.
    """


@final
class CredentialsError(OssError):
    """No usable credentials: none given, none in the environment, or a provider failed."""


@final
class StreamLengthError(OssError):
    """A stream upload's source yielded a length the upload cannot store as asked.

    Either ``size=`` was given and the stream yielded fewer or more bytes, or the size was
    not given and the stream outgrew 10,000 parts of ``part_size`` bytes. Nothing is stored
    under the key: the multipart upload is aborted (and its checkpoint removed).

    Attributes:
        expected: the ``size=`` given, or None when the size was not given.
        actual: the bytes the stream had yielded when the error was found (a lower bound
            when it yielded too many: reading stops at the first byte too many).
    """

    def __init__(self, message: str, *, expected: int | None, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_stream_length_error,
            (str(self), self.expected, self.actual),
            dict(self.__dict__),
        )


def _rebuild_stream_length_error(
    message: str, expected: int | None, actual: int
) -> StreamLengthError:
    return StreamLengthError(message, expected=expected, actual=actual)
