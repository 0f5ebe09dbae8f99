"""The shapes that cross the wire, as frozen dataclasses: the frames a subscription yields
(:class:`ResultFrame`, :class:`ErrorFrame`, :class:`GapFrame`, :class:`EndFrame`), the answer
to a record sent (:class:`Ack`), and the HTTP bodies (:class:`StreamInfo`, :class:`TokenIssued`,
:class:`Accepted`). Fields the daemon adds in a newer version are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union

from .errors import ErrorCode, ProtocolError, parse_code


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The ``error`` object of an ``error`` frame (code ``processing_failed``)."""

    code: ErrorCode | str
    message: str
    acknowledged: int | None = None
    line: int | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ErrorInfo:
        return cls(
            code=parse_code(str(obj.get("code", "internal"))),
            message=str(obj.get("message", "")),
            acknowledged=obj.get("acknowledged"),
            line=obj.get("line"),
        )


@dataclass(frozen=True, slots=True)
class _Outcome:
    #: The frame's offset in the results topic; resume after it with ``from_=cursor + 1``.
    cursor: int
    stream_id: str
    #: Where the input record is in the input topic (a re-processed record has the same).
    input_partition: int
    input_offset: int
    #: When the daemon accepted the input record, and when it was processed (ms since epoch).
    received_ms: int
    processed_ms: int
    #: The idempotency key the input record was sent with, if any.
    idempotency_key: str | None
    #: A traced record's result: W3C trace context of the span that processed it.
    traceparent: str | None


@dataclass(frozen=True, slots=True)
class ResultFrame(_Outcome):
    """A processed record's result (a record may have zero or many); ``data`` may be ``None``."""

    data: Any = None
    type: Literal["result"] = field(default="result", init=False)


@dataclass(frozen=True, slots=True)
class ErrorFrame(_Outcome):
    """Processing failed for one input record; the stream goes on."""

    error: ErrorInfo | None = None
    type: Literal["error"] = field(default="error", init=False)


@dataclass(frozen=True, slots=True)
class EndFrame(_Outcome):
    """The stream ended: every result before it was delivered, nothing follows."""

    type: Literal["end"] = field(default="end", init=False)


@dataclass(frozen=True, slots=True)
class GapFrame:
    """``skipped`` results from ``from_cursor`` on were not delivered (``on_lag="skip"``):
    subscribing ``from_=from_cursor`` replays them."""

    stream_id: str
    from_cursor: int
    skipped: int
    type: Literal["gap"] = field(default="gap", init=False)

    @property
    def last_cursor(self) -> int:
        """The last cursor the gap covers."""
        return self.from_cursor + self.skipped - 1


#: What a subscription yields.
Frame = Union[ResultFrame, ErrorFrame, GapFrame, EndFrame]


@dataclass(frozen=True, slots=True)
class Ack:
    """A record is stored: at ``offset`` of its stream's input partition. ``replayed``: its
    idempotency key was sent before (a retry); nothing new was stored, and ``offset`` is
    ``-1`` when the answering instance does not know where the first send was stored."""

    stream_id: str
    seq: int
    offset: int
    replayed: bool = False


def _outcome_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "cursor": int(obj["cursor"]),
        "stream_id": str(obj["stream_id"]),
        "input_partition": int(obj["input_partition"]),
        "input_offset": int(obj["input_offset"]),
        "received_ms": int(obj["received_ms"]),
        "processed_ms": int(obj["processed_ms"]),
        "idempotency_key": obj.get("idempotency_key"),
        "traceparent": obj.get("traceparent"),
    }


def parse_frame(obj: Mapping[str, Any]) -> Frame | None:
    """A stream frame (``result``, ``error``, ``gap``, ``end``) as a dataclass; ``None`` for
    any other type."""
    kind = obj.get("type")
    try:
        if kind == "result":
            return ResultFrame(**_outcome_fields(obj), data=obj.get("data"))
        if kind == "error":
            error = obj.get("error")
            return ErrorFrame(
                **_outcome_fields(obj),
                error=ErrorInfo.from_json(error) if isinstance(error, Mapping) else None,
            )
        if kind == "end":
            return EndFrame(**_outcome_fields(obj))
        if kind == "gap":
            return GapFrame(
                stream_id=str(obj["stream_id"]),
                from_cursor=int(obj["from_cursor"]),
                skipped=int(obj["skipped"]),
            )
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"unreadable {kind} frame: {e!r}") from e
    return None


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One stream as ``describe`` and ``list`` show it (the counters are the instance's)."""

    stream_id: str
    owner: str
    processor: dict[str, Any]
    state: Literal["open", "ended"] | str
    created_ms: int
    ended_ms: int | None
    records_in: int
    records_out: int
    subscribers: int
    last_activity_ms: int

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StreamInfo:
        try:
            return cls(
                stream_id=str(obj["stream_id"]),
                owner=str(obj["owner"]),
                processor=dict(obj["processor"]),
                state=str(obj["state"]),
                created_ms=int(obj["created_ms"]),
                ended_ms=obj.get("ended_ms"),
                records_in=int(obj["records_in"]),
                records_out=int(obj["records_out"]),
                subscribers=int(obj["subscribers"]),
                last_activity_ms=int(obj["last_activity_ms"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"unreadable stream: {e!r}") from e


@dataclass(frozen=True, slots=True)
class TokenIssued:
    """A stream token: present it as ``Client(url, token=...)`` or from a ``token_source``."""

    token: str
    streams: list[str]
    scope: list[str]
    #: Unix time (seconds) at which it stops working, open connections included.
    expires_at: int
    stream_id: str | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TokenIssued:
        try:
            return cls(
                token=str(obj["token"]),
                streams=[str(s) for s in obj.get("streams", [])],
                scope=[str(s) for s in obj["scope"]],
                expires_at=int(obj["expires_at"]),
                stream_id=obj.get("stream_id"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"unreadable token answer: {e!r}") from e


@dataclass(frozen=True, slots=True)
class Accepted:
    """Every record of a batch is stored. ``replayed``: the ``Idempotency-Key`` was sent
    before with the same body; nothing new was stored, and no result will come twice."""

    stream_id: str
    records: int
    partition: int
    offsets: list[int]
    replayed: bool = False

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Accepted:
        try:
            return cls(
                stream_id=str(obj["stream_id"]),
                records=int(obj["records"]),
                partition=int(obj["partition"]),
                offsets=[int(o) for o in obj["offsets"]],
                replayed=bool(obj.get("replayed", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"unreadable send answer: {e!r}") from e
