"""Stored Responses (OpenAI's ``store``): what ``previous_response_id`` and GET /v1/responses/{id} read.

The frontend runs several granian workers, and a client's next request may reach any of them,
so the store is not one worker's memory: each response is a file in the run directory, which
all workers share and which is removed when the server stops (nothing outlives the server, as
with a memory store). At most ``limit`` responses are kept; past that the least recently used
go (a read counts as a use). A file is written whole and renamed into place, so a reader never
sees half of one.
"""

from __future__ import annotations

import os
import re
import tempfile

import msgspec

from frontend.api.responses import Response

LIMIT = 1000
# The ids this server gives (``resp_`` + 32 hex digits); anything else names no file.
_ID = re.compile(r"resp_[0-9a-f]{32}")


class StoredResponse(msgspec.Struct, array_like=True):
    response: Response
    # the conversation up to and including this response's output: input items as given,
    # instructions excepted (a follow-up's own instructions replace them, as OpenAI does)
    items: list[dict[str, object]]


class ResponseStore:
    def __init__(self, directory: str, limit: int = LIMIT) -> None:
        self._dir = directory
        self._limit = limit
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(StoredResponse)

    def put(self, stored: StoredResponse) -> None:
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(self._encoder.encode(stored))
        os.replace(tmp, self._path(stored.response.id))
        self._evict()

    def get(self, response_id: str) -> StoredResponse | None:
        if not _ID.fullmatch(response_id):
            return None
        path = self._path(response_id)
        try:
            with open(path, "rb") as f:
                data = f.read()
            os.utime(path)  # used: the last to be evicted
        except FileNotFoundError:
            return None
        return self._decoder.decode(data)

    def delete(self, response_id: str) -> bool:
        if not _ID.fullmatch(response_id):
            return False
        try:
            os.remove(self._path(response_id))
        except FileNotFoundError:
            return False
        return True

    def _path(self, response_id: str) -> str:
        return os.path.join(self._dir, response_id)

    def _evict(self) -> None:
        with os.scandir(self._dir) as entries:
            files = [e for e in entries if _ID.fullmatch(e.name)]
        if len(files) <= self._limit:
            return
        files.sort(key=lambda e: e.stat().st_mtime_ns)
        for entry in files[: len(files) - self._limit]:
            try:
                os.remove(entry.path)
            except FileNotFoundError:  # another worker evicted it first
                pass
