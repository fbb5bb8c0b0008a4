"""Fault injection for the emulator: rules, the plan that matches them, and their text form.

Theory of operation
-------------------
A :class:`Fault` is a rule: *which* requests (an operation name, optionally a part number
or, for GetObject, the first byte of the ``Range`` asked for),
*when* (from the ``nth`` matching request on, for ``times`` requests) and *what* (the actions).
The server asks the :class:`FaultPlan` once per authenticated request, after routing, with the
operation, part number and range start; every rule that matches counts the request, and the
rules whose window covers it *fire*. The actions of all firing rules are merged into one
:class:`Effect` that the server applies:

=========================  =================================================================
``delay=s``                sleep, then process normally
``stall=s``                hold the request without answering for ``s`` seconds (cancelled
                           at shutdown), then drop the connection
``throttle_bytes_per_sec`` read the request body (and send a GetObject body) at that rate
``reset_after_bytes=n``    read ``n`` body bytes, then abort the TCP connection; on a
                           GetObject (no request body) send the headers and ``n`` bytes of
                           the *response* body (never all of it), then reset (TCP RST)
``status``/``code``        read the body, then answer with that OSS error
``wrong_crc``              process normally, then send a wrong ``x-oss-hash-crc64ecma``
``omit_crc``               process normally, then send no ``x-oss-hash-crc64ecma``
``drop_response``          process normally (the operation takes effect), then close the
                           connection without answering: the lost-Complete case of spec 10.3
``truncate_response``      process normally (the operation takes effect), then send the
                           status line and headers with a ``Content-Length`` larger than the
                           body bytes that follow (half the body), and close the connection;
                           a HEAD answer, which has no body, is cut inside its headers
``truncate_after_bytes=n`` like ``truncate_response``, but the body is cut after ``n`` bytes
                           (at most all but one byte of it)
``corrupt_body``           GetObject: process normally, but flip one byte of the body sent
                           (the middle one), so its CRC-64 no longer matches the headers
``hook``                   an async callable given the request context; it may return a
                           response to send instead of processing the request
=========================  =================================================================

Every firing is appended to ``FaultPlan.fired`` (and to the request log), so a test can
assert that the fault it planted really happened. ``chaos()`` adds a rule that fires on a
seeded-random fraction of the matching requests: the sequence of decisions is reproducible
for a given seed (the order in which concurrent requests arrive is not).

The plan is shared between the server's event loop and the test's thread
(:class:`ThreadedOssServer`), so it is guarded by a ``threading.Lock``.

Text form (command line, ``Fault.parse``)::

    OPERATION[:name=value]...

``OPERATION`` is an operation name (``UploadPart``, ``CompleteMultipartUpload``...) or ``*``.
Names: ``part``, ``range_start``, ``nth``, ``times`` (an integer, or ``inf``), ``status``, ``code``,
``message``, ``reset_after_bytes``, ``truncate_after_bytes``, ``stall``, ``delay``,
``throttle`` / ``throttle_bytes_per_sec``, and the flags ``wrong_crc``, ``omit_crc``,
``drop_response``, ``truncate_response``, ``corrupt_body`` (bare, or ``=true``/``=false``).
A status without a code gets OSS's usual code for it (503 -> ``SlowDown``, 500 ->
``InternalError``...), a code without a status gets its usual status.
Examples: ``UploadPart:part=3:times=2:status=503:code=SlowDown``,
``UploadPart:nth=2:reset_after_bytes=65536``, ``CompleteMultipartUpload:drop_response``,
``UploadPart:truncate_response``, ``GetObject:range_start=8388608:reset_after_bytes=65536``,
``GetObject:truncate_after_bytes=1000``, ``GetObject:corrupt_body``.
``chaos:probability=0.2:seed=7[:kinds=error+reset][:operations=UploadPart+PutObject]`` adds a
chaos rule.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from ._protocol import OPERATIONS, default_code, default_status

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "ChaosKind",
    "ChaosSpec",
    "Effect",
    "Fault",
    "FaultContext",
    "FaultHandle",
    "FaultHook",
    "FaultPlan",
    "FaultRecord",
    "parse_fault_spec",
]

ChaosKind = Literal[
    "error", "slowdown", "reset", "wrong_crc", "drop_response", "truncate", "delay", "corrupt"
]
_CHAOS_KINDS: Final[tuple[ChaosKind, ...]] = (
    "error",
    "slowdown",
    "reset",
    "wrong_crc",
    "drop_response",
    "truncate",
    "delay",
    "corrupt",
)
# Actions that only mean something on an answer carrying an object body.
_BODY_OPERATIONS: Final = (None, "GetObject")


class ChaosSpec(NamedTuple):
    """The arguments of ``FaultPlan.chaos`` parsed from a ``chaos:...`` spec."""

    probability: float
    seed: int
    kinds: tuple[ChaosKind, ...]
    operations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FaultContext:
    """What a fault hook is told about the request it fired on."""

    operation: str
    method: str
    bucket: str | None
    key: str | None
    part_number: int | None
    upload_id: str | None
    request_id: str
    request: web.BaseRequest


FaultHook = Callable[[FaultContext], Awaitable["web.StreamResponse | None"]]


@dataclass(frozen=True, kw_only=True)
class Fault:
    """A fault rule. Leave ``operation`` as None to match every operation.

    Window: the rule fires on matching requests number ``nth``, ``nth + 1``, ...,
    ``nth + times - 1`` (1-based; ``times=None`` means forever). ``range_start`` matches
    only requests whose ``Range`` header starts at that byte (``bytes=START-...``).
    """

    operation: str | None = None
    part_number: int | None = None
    range_start: int | None = None
    nth: int = 1
    times: int | None = 1
    status: int | None = None
    code: str | None = None
    message: str | None = None
    reset_after_bytes: int | None = None
    stall: float | None = None
    delay: float | None = None
    wrong_crc: bool = False
    omit_crc: bool = False
    drop_response: bool = False
    truncate_response: bool = False
    truncate_after_bytes: int | None = None
    corrupt_body: bool = False
    throttle_bytes_per_sec: int | None = None
    hook: FaultHook | None = None

    def __post_init__(self) -> None:
        if self.operation is not None and self.operation not in OPERATIONS:
            raise ValueError(
                f"unknown operation {self.operation!r}; expected one of {', '.join(OPERATIONS)}"
            )
        if self.nth < 1:
            raise ValueError("nth must be >= 1")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for forever)")
        for name in (
            "reset_after_bytes",
            "truncate_after_bytes",
            "throttle_bytes_per_sec",
            "range_start",
        ):
            value = getattr(self, name)
            if value is not None and value < (1 if name.startswith("throttle") else 0):
                raise ValueError(f"{name} out of range: {value}")
        for name in ("stall", "delay"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.status is not None and not 200 <= self.status <= 599:
            raise ValueError(f"status out of range: {self.status}")
        if self.corrupt_body and self.operation not in _BODY_OPERATIONS:
            raise ValueError("corrupt_body applies to GetObject only (an object body)")
        if self.range_start is not None and self.operation not in _BODY_OPERATIONS:
            raise ValueError("range_start applies to GetObject only (a Range header)")

    @property
    def error(self) -> tuple[int, str] | None:
        """The (status, code) this rule answers with, if it answers with an error."""
        if self.status is None and self.code is None:
            return None
        status = self.status if self.status is not None else default_status(self.code or "")
        code = self.code if self.code is not None else default_code(status)
        return status, code

    def describe(self) -> str:
        """The rule in the text form of :func:`parse_fault_spec`."""
        parts = [self.operation or "*"]
        for name in (
            "part_number",
            "range_start",
            "nth",
            "times",
            "status",
            "code",
            "message",
            "reset_after_bytes",
            "truncate_after_bytes",
            "stall",
            "delay",
            "throttle_bytes_per_sec",
        ):
            value = getattr(self, name)
            default = {"nth": 1, "times": 1}.get(name)
            if value is not None and value != default:
                label = "part" if name == "part_number" else name
                parts.append(f"{label}={value}")
        if self.times is None:
            parts.append("times=inf")
        parts.extend(n for n in _FLAG_FIELDS if getattr(self, n))
        if self.hook is not None:
            parts.append("hook")
        return ":".join(parts)

    @staticmethod
    def parse(spec: str) -> Fault:
        """Parse the text form (see the module docstring); raises ``ValueError``."""
        result = parse_fault_spec(spec)
        if not isinstance(result, Fault):
            raise ValueError("a chaos spec describes a chaos rule, not a Fault")
        return result


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One firing of a fault: which rule, on which request."""

    fault: str
    operation: str
    part_number: int | None
    request_id: str


@dataclass(slots=True)
class Effect:
    """The merged actions of every rule firing on one request."""

    error: tuple[int, str, str | None] | None = None
    reset_after_bytes: int | None = None
    stall: float | None = None
    delay: float = 0.0
    wrong_crc: bool = False
    omit_crc: bool = False
    drop_response: bool = False
    truncate_response: bool = False
    truncate_after_bytes: int | None = None
    corrupt_body: bool = False
    throttle_bytes_per_sec: int | None = None
    hooks: list[FaultHook] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)

    def merge(self, fault: Fault) -> None:
        self.fired.append(fault.describe())
        if fault.error is not None and self.error is None:
            status, code = fault.error
            self.error = (status, code, fault.message)
        if fault.reset_after_bytes is not None:
            self.reset_after_bytes = min(
                fault.reset_after_bytes, self.reset_after_bytes or fault.reset_after_bytes
            )
        if fault.stall is not None:
            self.stall = max(fault.stall, self.stall or 0.0)
        self.delay += fault.delay or 0.0
        self.wrong_crc |= fault.wrong_crc
        self.omit_crc |= fault.omit_crc
        self.drop_response |= fault.drop_response
        self.truncate_response |= fault.truncate_response
        if fault.truncate_after_bytes is not None:
            self.truncate_after_bytes = min(
                fault.truncate_after_bytes,
                self.truncate_after_bytes
                if self.truncate_after_bytes is not None
                else fault.truncate_after_bytes,
            )
        self.corrupt_body |= fault.corrupt_body
        if fault.throttle_bytes_per_sec is not None:
            self.throttle_bytes_per_sec = min(
                fault.throttle_bytes_per_sec,
                self.throttle_bytes_per_sec or fault.throttle_bytes_per_sec,
            )
        if fault.hook is not None:
            self.hooks.append(fault.hook)


class FaultHandle:
    """What ``FaultPlan.add`` returns: the rule, how often it fired, and a way to remove it."""

    def __init__(self, plan: FaultPlan, fault: Fault) -> None:
        self._plan = plan
        self.fault = fault
        self.matched = 0
        self.fired = 0

    @property
    def exhausted(self) -> bool:
        """True once the rule's window has passed (it will never fire again)."""
        times = self.fault.times
        return times is not None and self.matched >= self.fault.nth + times - 1

    def remove(self) -> None:
        self._plan.remove(self)

    def __repr__(self) -> str:
        return f"<FaultHandle {self.fault.describe()} matched={self.matched} fired={self.fired}>"


class _Chaos:
    def __init__(
        self,
        probability: float,
        seed: int,
        kinds: Sequence[ChaosKind],
        operations: Sequence[str],
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        unknown = [k for k in kinds if k not in _CHAOS_KINDS]
        if unknown or not kinds:
            raise ValueError(f"chaos kinds must be a non-empty subset of {_CHAOS_KINDS}")
        for operation in operations:
            if operation not in OPERATIONS:
                raise ValueError(f"unknown operation {operation!r}")
        self.probability = probability
        self.kinds = tuple(kinds)
        self.operations = frozenset(operations)
        self.rng = random.Random(seed)
        self.seed = seed

    def decide(self, operation: str) -> Fault | None:
        if operation not in self.operations:
            return None
        # Always draw twice, so the decision sequence depends only on the seed and the number
        # of matching requests.
        roll, pick = self.rng.random(), self.rng.choice(self.kinds)
        if roll >= self.probability:
            return None
        base = Fault(operation=operation)
        if pick == "error":
            return replace(base, status=500, code="InternalError")
        if pick == "slowdown":
            return replace(base, status=503, code="SlowDown")
        if pick == "reset":
            return replace(base, reset_after_bytes=1024)
        if pick == "wrong_crc":
            return replace(base, wrong_crc=True)
        if pick == "drop_response":
            return replace(base, drop_response=True)
        if pick == "truncate":
            return replace(base, truncate_response=True)
        if pick == "corrupt":
            # only a GetObject has a body to corrupt; elsewhere a wrong CRC header is the
            # same lie told about the data
            if operation == "GetObject":
                return replace(base, corrupt_body=True)
            return replace(base, wrong_crc=True)
        return replace(base, delay=0.05)


class FaultPlan:
    """The fault rules of one server. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: list[FaultHandle] = []
        self._chaos: list[_Chaos] = []
        self.fired: list[FaultRecord] = []

    def add(self, fault: Fault) -> FaultHandle:
        """Add a rule; it applies to requests arriving from now on."""
        handle = FaultHandle(self, fault)
        with self._lock:
            self._handles.append(handle)
        return handle

    def remove(self, handle: FaultHandle) -> None:
        with self._lock:
            if handle in self._handles:
                self._handles.remove(handle)

    def clear(self) -> None:
        """Remove every rule (the record of past firings is kept)."""
        with self._lock:
            self._handles.clear()
            self._chaos.clear()

    def chaos(
        self,
        probability: float,
        seed: int,
        kinds: Iterable[ChaosKind] = ("error", "slowdown", "reset"),
        operations: Iterable[str] = ("UploadPart",),
    ) -> None:
        """Make a seeded-random ``probability`` fraction of ``operations`` requests fail.

        Each failing request gets one of ``kinds``: ``error`` (500 InternalError), ``slowdown``
        (503 SlowDown), ``reset`` (connection reset after 1 KiB of body), ``wrong_crc``,
        ``drop_response``, ``truncate`` (``truncate_response``: the answer's body is cut
        short of its ``Content-Length``), ``delay`` (50 ms) or ``corrupt`` (``corrupt_body``
        on GetObject, ``wrong_crc`` elsewhere). On GetObject, ``reset`` resets the
        connection after 1 KiB of the response body.
        """
        rule = _Chaos(probability, seed, tuple(kinds), tuple(operations))
        with self._lock:
            self._chaos.append(rule)

    def add_spec(self, spec: str) -> FaultHandle | None:
        """Add a rule given in the text form; returns None for a ``chaos:`` spec."""
        parsed = parse_fault_spec(spec)
        if isinstance(parsed, Fault):
            return self.add(parsed)
        self.chaos(*parsed)
        return None

    @property
    def rules(self) -> list[FaultHandle]:
        with self._lock:
            return list(self._handles)

    def evaluate(
        self,
        operation: str,
        part_number: int | None,
        request_id: str,
        *,
        range_start: int | None = None,
    ) -> Effect | None:
        """Count this request against every rule; return the merged effect of those firing.

        ``range_start`` is the first byte the request's ``Range`` asks for (None: no range).
        """
        effect: Effect | None = None
        with self._lock:
            firing: list[Fault] = []
            for handle in self._handles:
                fault = handle.fault
                if fault.operation is not None and fault.operation != operation:
                    continue
                if fault.part_number is not None and fault.part_number != part_number:
                    continue
                if fault.range_start is not None and fault.range_start != range_start:
                    continue
                handle.matched += 1
                if handle.matched < fault.nth:
                    continue
                if fault.times is not None and handle.matched >= fault.nth + fault.times:
                    continue
                handle.fired += 1
                firing.append(fault)
            for chaos in self._chaos:
                decided = chaos.decide(operation)
                if decided is not None:
                    firing.append(decided)
            for fault in firing:
                if effect is None:
                    effect = Effect()
                effect.merge(fault)
                self.fired.append(FaultRecord(fault.describe(), operation, part_number, request_id))
        return effect


def _flag(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in ("", "1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: expected a boolean, got {value!r}")


_INT_FIELDS: Final = {
    "part": "part_number",
    "part_number": "part_number",
    "nth": "nth",
    "status": "status",
    "range_start": "range_start",
    "reset_after_bytes": "reset_after_bytes",
    "reset": "reset_after_bytes",
    "truncate_after_bytes": "truncate_after_bytes",
    "throttle": "throttle_bytes_per_sec",
    "throttle_bytes_per_sec": "throttle_bytes_per_sec",
}
_FLOAT_FIELDS: Final = {"stall": "stall", "delay": "delay"}
# A tuple, not a set: describe() lists the flags in this order.
_FLAG_FIELDS: Final = (
    "wrong_crc",
    "omit_crc",
    "drop_response",
    "truncate_response",
    "corrupt_body",
)


def parse_fault_spec(spec: str) -> Fault | ChaosSpec:
    """Parse one ``--fault`` value: a :class:`Fault`, or a :class:`ChaosSpec` for ``chaos:``.

    Raises ``ValueError`` with a readable message.
    """
    head, *items = spec.strip().split(":")
    fields: dict[str, Any] = {}
    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower().replace("-", "_")
        pairs.append((name, value.strip() if sep else ""))
        if not sep and name not in _FLAG_FIELDS:
            raise ValueError(f"fault spec {spec!r}: {name!r} needs a value ({name}=...)")
    if head.strip().lower() == "chaos":
        options = dict(pairs)
        try:
            probability = float(options.pop("probability", options.pop("p", "0.1")))
            seed = int(options.pop("seed", "0"))
        except ValueError as exc:
            raise ValueError(f"fault spec {spec!r}: {exc}") from None
        kinds: list[ChaosKind] = []
        for kind in options.pop("kinds", "error+slowdown+reset").replace(",", "+").split("+"):
            if kind not in _CHAOS_KINDS:
                raise ValueError(f"fault spec {spec!r}: unknown chaos kind {kind!r}")
            kinds.append(kind)
        operations = tuple(options.pop("operations", "UploadPart").replace(",", "+").split("+"))
        if options:
            raise ValueError(f"fault spec {spec!r}: unknown chaos option(s) {sorted(options)}")
        try:
            _Chaos(probability, seed, kinds, operations)  # validates
        except ValueError as exc:
            raise ValueError(f"fault spec {spec!r}: {exc}") from None
        return ChaosSpec(probability, seed, tuple(kinds), operations)
    operation = head.strip()
    fields["operation"] = None if operation in ("*", "") else operation
    for name, value in pairs:
        try:
            if name in _INT_FIELDS:
                fields[_INT_FIELDS[name]] = int(value)
            elif name in _FLOAT_FIELDS:
                fields[_FLOAT_FIELDS[name]] = float(value)
            elif name in _FLAG_FIELDS:
                fields[name] = _flag(value, name)
            elif name == "times":
                fields["times"] = None if value.lower() in ("inf", "forever", "*") else int(value)
            elif name in ("code", "message"):
                fields[name] = value
            else:
                raise ValueError(f"unknown fault option {name!r}")
        except ValueError as exc:
            raise ValueError(f"fault spec {spec!r}: {exc}") from None
    try:
        return Fault(**fields)
    except ValueError as exc:
        raise ValueError(f"fault spec {spec!r}: {exc}") from None
