"""CORS: which browser origins may call the API, answered as llama-server answers.

``--cors-origins`` (default ``*``) is a comma-separated list; two values are special, as in
llama-server: ``*`` allows any origin, and with ``--cors-credentials`` (the default) the caller's
``Origin`` is echoed back instead of ``*`` (browsers refuse ``*`` on a request with credentials);
``localhost`` allows the origins whose host is ``localhost``, ``127.0.0.1`` or ``::1``. Any other
entry is an origin allowed as written. Every answer to an allowed origin carries
``Access-Control-Allow-Origin`` (errors and streams too, or the browser hides them from the page),
with ``Vary: Origin`` whenever the value depends on the caller, so caches keep answers apart.

``OPTIONS`` on any path is the preflight: 200 with an empty body (no API key: browsers send
none) and ``--cors-methods``, ``--cors-headers`` and ``Access-Control-Allow-Credentials``, as
llama-server's defaults (``GET, POST, DELETE, OPTIONS`` and ``*``).
"""

from __future__ import annotations

import urllib.parse

Headers = list[tuple[bytes, bytes]]

_MAX_AGE_S = b"86400"  # browsers may cache a preflight this long
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_localhost(origin: str) -> bool:
    """Whether the origin (``scheme://host[:port]``) names this machine."""
    try:
        return urllib.parse.urlsplit(origin).hostname in _LOCAL_HOSTS
    except ValueError:  # a malformed origin (e.g. an unclosed IPv6 bracket) is no local one
        return False


class Cors:
    def __init__(self, origins: list[str], methods: str, allow_headers: str, credentials: bool) -> None:
        self._any = "*" in origins
        self._localhost = "localhost" in origins
        self._origins = frozenset(origins)
        self._credentials = credentials
        self._preflight = [
            (b"access-control-allow-credentials", b"true" if credentials else b"false"),
            (b"access-control-allow-methods", methods.encode("latin-1")),
            (b"access-control-allow-headers", allow_headers.encode("latin-1")),
            (b"access-control-max-age", _MAX_AGE_S),
        ]

    def _allow_origin(self, origin: str | None) -> bytes | None:
        """The Access-Control-Allow-Origin value for a request from `origin`; None: not allowed."""
        if self._any and not (self._credentials and origin):
            return b"*"
        if origin is None:
            return None
        if self._any or origin in self._origins or (self._localhost and is_localhost(origin)):
            return origin.encode("latin-1")
        return None

    def headers(self, headers: dict[str, str]) -> Headers:
        """The CORS headers of any answer to a request with these (lower-case) headers."""
        allowed = self._allow_origin(headers.get("origin"))
        if allowed is None:
            return []
        out = [(b"access-control-allow-origin", allowed), (b"access-control-expose-headers", b"x-request-id")]
        if allowed != b"*":
            out.append((b"vary", b"Origin"))
        return out

    def preflight(self) -> Headers:
        """Headers of the answer to OPTIONS, beyond ``headers()``."""
        return self._preflight
