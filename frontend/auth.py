"""API keys: ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``, compared in constant time.

With no key configured every request passes and any Authorization header is ignored (the openai
SDK always sends one).
"""

from __future__ import annotations

import hmac


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def allows(self, headers: dict[str, str]) -> bool:
        if not self._keys:
            return True
        presented = headers.get("x-api-key", "")
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            presented = credentials.strip()
        if not presented:
            return False
        candidate = presented.encode()
        # Compare with every key (no early exit) so timing tells nothing about which one is close.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched
