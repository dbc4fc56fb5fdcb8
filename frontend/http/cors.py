"""CORS: which browser origins may call the API (``--cors-origins``, default ``*``: any).

Every answer carries ``Access-Control-Allow-Origin`` for an allowed origin (errors and streams
too, or the browser hides them from the page); ``OPTIONS`` on any route is the preflight and
answers 204 with the route's methods and the headers the browser asked to send
(``Authorization``, ``Content-Type``). With a list of origins the caller's own origin is echoed
back with ``Vary: Origin``, so caches keep answers for different origins apart.
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]

_MAX_AGE_S = b"86400"  # browsers may cache a preflight this long


class Cors:
    def __init__(self, origins: list[str]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(origins)

    def _allow_origin(self, headers: dict[str, str]) -> bytes | None:
        if self._any:
            return b"*"
        origin = headers.get("origin")
        if origin is not None and origin in self._origins:
            return origin.encode("latin-1")
        return None

    def headers(self, headers: dict[str, str]) -> Headers:
        """The CORS headers of any answer to a request with these (lower-case) headers."""
        origin = self._allow_origin(headers)
        if origin is None:
            return []
        out = [(b"access-control-allow-origin", origin), (b"access-control-expose-headers", b"x-request-id")]
        if not self._any:
            out.append((b"vary", b"Origin"))
        return out

    def preflight(self, headers: dict[str, str], methods: list[str]) -> Headers:
        """Headers of the answer to OPTIONS, beyond ``headers()``."""
        allow = ", ".join([*methods, "OPTIONS"]).encode()
        out = [(b"allow", allow)]
        if self._allow_origin(headers) is not None:
            requested = headers.get("access-control-request-headers", "")
            out += [
                (b"access-control-allow-methods", allow),
                (b"access-control-allow-headers", requested.encode("latin-1") if requested else b"*"),
                (b"access-control-max-age", _MAX_AGE_S),
            ]
        return out
