"""API errors: one exception type carrying the HTTP status and the OpenAI error object.

The body is ``{"error": {"message", "type", "param", "code"}}``. ``code`` is the HTTP status as
llama-server sends it; ``type`` uses llama-server's names (``exceed_context_size_error`` keeps its
clients working). Extra fields (``n_prompt_tokens``, ``n_ctx``) sit beside them.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ipc.protocol import EngineError, ErrorCode

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}

# Seconds a busy or loading server asks clients to wait before retrying (openai SDK honours it).
RETRY_AFTER_S = 1


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPE_BY_STATUS.get(status, "server_error")
        self.param = param
        self.extra = extra or {}
        self.headers = headers or []

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.status}
        return msgspec.json.encode({"error": error | self.extra})


def invalid(message: str, param: str | None = None) -> ApiError:
    """A 400 for a request the client got wrong."""
    return ApiError(400, message, param=param)


def unavailable(message: str) -> ApiError:
    """A 503 the client should retry after a moment (queue full, model loading)."""
    return ApiError(503, message, headers=[(b"retry-after", str(RETRY_AFTER_S).encode())])


def from_engine(error: EngineError | None) -> ApiError:
    """The HTTP form of a request the engine failed."""
    if error is None:
        return ApiError(500, "the engine failed the request without saying why")
    if error.code == ErrorCode.INVALID_REQUEST:
        return invalid(error.message)
    if error.code in _STATUS:
        return ApiError(_STATUS[error.code], error.message)
    if error.code in _RETRYABLE:
        return unavailable(error.message)
    return ApiError(500, error.message)


_STATUS = {ErrorCode.SLOT_BUSY: 409, ErrorCode.NOT_FOUND: 404}

# Engine failures a client should retry: the server heals (a failed process is restarted), sheds
# load or is being replaced (draining). The openai SDK retries 503 after Retry-After.
_RETRYABLE = frozenset(
    {ErrorCode.OVERLOADED, ErrorCode.SHUTTING_DOWN, ErrorCode.EXECUTOR_FAILED, ErrorCode.NO_KV_ROOM,
     ErrorCode.PEER_FORGOTTEN}
)


# What msgspec raises, besides DecodeError, on a body it cannot read: bytes that are not UTF-8
# inside a string (UnicodeDecodeError, a ValueError) or nesting past its recursion limit.
UNREADABLE_JSON = (ValueError, RecursionError)


def from_validation(exc: msgspec.ValidationError | msgspec.DecodeError) -> ApiError:
    """A 400 from msgspec's decode error; ``param`` is the JSON path of the bad field."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return invalid(f"request body is not valid JSON: {text}")
    text, _, path = text.partition(" - at `$")
    path = path.rstrip("`").removeprefix(".")
    param = path
    if (missing := _MISSING.fullmatch(text)) is not None:  # the param is the missing field, as OpenAI names it
        param = f"{path}.{missing[1]}" if path else missing[1]
    return invalid(f"{text} (at {path})" if path else text, param=param or None)


_MISSING = re.compile(r"Object missing required field `([^`]+)`")
