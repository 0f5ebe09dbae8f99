"""Streamgate's Python client: open streams, send records into them and follow their
results, many streams over one WebSocket that reconnects and resumes by itself, with sends
that are safe to retry.

    async with streamgate.Client("http://127.0.0.1:8080", api_key=KEY) as client:
        sid = await client.start(processor="uppercase")
        ack = await client.send(sid, {"n": 1})
        async for frame in client.subscribe(sid, from_="earliest"):
            ...
"""

from .client import Client, From, Subscription
from .errors import (
    ERROR_CLASSES,
    AuthenticationError,
    ClientClosedError,
    ConnectError,
    ErrorCode,
    ForbiddenError,
    IdempotencyKeyError,
    InternalError,
    InvalidRequestError,
    LimitExceededError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    StreamEndedError,
    StreamgateError,
    StreamNotFoundError,
    TokenExpiredError,
    TokenSourceError,
    TooLargeError,
    TransportError,
    UnavailableError,
)
from .frames import (
    Accepted,
    Ack,
    EndFrame,
    ErrorFrame,
    ErrorInfo,
    Frame,
    GapFrame,
    ResultFrame,
    StreamInfo,
    TokenIssued,
)

__version__ = "0.1.0"

__all__ = [
    "Accepted",
    "Ack",
    "AuthenticationError",
    "Client",
    "ClientClosedError",
    "ConnectError",
    "ERROR_CLASSES",
    "EndFrame",
    "ErrorCode",
    "ErrorFrame",
    "ErrorInfo",
    "ForbiddenError",
    "Frame",
    "From",
    "GapFrame",
    "IdempotencyKeyError",
    "InternalError",
    "InvalidRequestError",
    "LimitExceededError",
    "ProtocolError",
    "RateLimitedError",
    "ResultFrame",
    "ServerError",
    "StreamEndedError",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamgateError",
    "Subscription",
    "TokenExpiredError",
    "TokenIssued",
    "TokenSourceError",
    "TooLargeError",
    "TransportError",
    "UnavailableError",
]
