"""API keys: ``Authorization: Bearer <key>``, the bare key as the whole Authorization header (as
llama-server takes it), or ``X-Api-Key: <key>``; compared in constant time.

With no key configured every request passes and any Authorization header is ignored (the openai
SDK always sends one).
"""

from __future__ import annotations

import hmac

_HTTP_SPACE = " \t"


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def allows(self, headers: dict[str, str]) -> bool:
        if not self._keys:
            return True
        # Only HTTP's whitespace is trimmed: str.strip() would also take \x85 and \xa0, which are
        # bytes of UTF-8 characters here (a key ending in "à" never matched).
        presented = [headers.get("x-api-key", "").strip(_HTTP_SPACE)]
        authorization = headers.get("authorization", "").strip(_HTTP_SPACE)
        scheme, _, credentials = authorization.partition(" ")
        presented.append(credentials.strip(_HTTP_SPACE) if scheme.lower() == "bearer" else authorization)
        # Compare with every key (no early exit) so timing tells nothing about which one is close.
        matched = False
        # Header values arrive decoded as latin-1 (byte for byte): back to the bytes the client sent,
        # which for a key that is not ASCII are its UTF-8.
        for candidate in (p.encode("latin-1") for p in presented if p):
            for key in self._keys:
                matched |= hmac.compare_digest(candidate, key)
        return matched
