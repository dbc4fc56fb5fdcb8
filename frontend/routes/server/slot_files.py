"""llama-server's ``POST /slots/{id}?action=save|restore|erase`` (with ``--slot-save-path``).

``save`` writes an idle slot's cached tokens and their KV cells to a file of the save directory,
``restore`` loads one into an idle slot (its prefix cache then serves any request sharing those
tokens), ``erase`` drops the slot's cached prefix. The reply bodies are llama-server's. A file
name is one plain name inside the directory (no separator, no ``..``, llama-server's rules), so
no request reaches another path. Statuses: 501 without ``--slot-save-path`` (llama-server's),
400 for a bad slot id, action or name, 404 for a missing file (llama-server answers 400 there),
409 for a slot running a request (llama-server waits for it instead).
"""

from __future__ import annotations

import os
import struct
import unicodedata

import msgspec

from frontend.http.asgi import Request, Response, json_response
from frontend.http.errors import ApiError, from_engine, invalid, unavailable
from frontend.state import Frontend
from ipc.protocol import SlotActionDone, SlotActionKind

# llama.cpp's sequence state file starts with these three uint32: magic 'ggsq', version, token count.
_HEADER = struct.Struct("<III")
_MAGIC, _VERSION = 0x67677371, 3
# Characters a file name may not hold (llama.cpp's fs_validate_filename, whose rules we keep).
_FORBIDDEN = set('/\\:*?"<>|') | {"\uff0e", "\u2215", "\u2216", "\ufffd", "\ufeff"}
# Seconds past --step-timeout to wait for the scheduler: it answers a failed or hung executor itself.
_REPLY_MARGIN_S = 10.0


class SlotFileRequest(msgspec.Struct):
    filename: str  # save and restore; erase reads no body


ACTIONS = {"save": SlotActionKind.SAVE, "restore": SlotActionKind.RESTORE, "erase": SlotActionKind.ERASE}
PARAMETERS = (  # for /openapi.json
    {"name": "id_slot", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
    {"name": "action", "in": "query", "required": True, "schema": {"enum": [*ACTIONS]}},
)


async def slot_action(fe: Frontend, req: Request) -> Response:
    if not fe.cfg.slot_save_path:
        raise ApiError(501, "This server does not support slots action. Start it with `--slot-save-path`")
    id_text = req.path.rpartition("/")[2]
    if not id_text.isascii() or not id_text.isdigit():
        raise invalid(f"invalid slot id {id_text!r}", param="id_slot")
    id_slot = int(id_text)
    action = req.query.get("action", "")
    kind = ACTIONS.get(action)
    if kind is None:
        raise invalid(f"invalid action {action!r}: save, restore or erase", param="action")
    info = fe.engine_info()
    if id_slot >= info.n_slots * info.n_executors:
        raise invalid(f"slot {id_slot} does not exist ({info.n_slots * info.n_executors} slots)", param="id_slot")
    if kind == SlotActionKind.ERASE:
        done = await _ask(fe, kind, id_slot)
        return json_response({"id_slot": id_slot, "n_erased": done.n_tokens})
    filename = req.decode(SlotFileRequest).filename
    _check_filename(filename)
    path = os.path.join(fe.cfg.slot_save_path, filename)
    if kind == SlotActionKind.SAVE:
        if os.path.lexists(path) and not os.path.isfile(path):
            raise invalid(f"{filename!r} exists in the slot save directory and is not a file", param="filename")
        done = await _ask(fe, kind, id_slot, path)
        return json_response({"id_slot": id_slot, "filename": filename, "n_saved": done.n_tokens,
                              "n_written": done.n_bytes, "timings": {"save_ms": done.ms}})
    done = await _ask(fe, kind, id_slot, path, _announced_tokens(path, filename))
    return json_response({"id_slot": id_slot, "filename": filename, "n_restored": done.n_tokens,
                          "n_read": done.n_bytes, "timings": {"restore_ms": done.ms}})


async def _ask(fe: Frontend, kind: SlotActionKind, id_slot: int, path: str = "", n_tokens: int = 0) -> SlotActionDone:
    timeout_s = fe.cfg.step_timeout + _REPLY_MARGIN_S
    try:
        done = await fe.engine.slot_action(kind, id_slot, timeout_s, path, n_tokens)
    except TimeoutError:
        raise unavailable(f"the scheduler did not answer the slot action within {timeout_s:g} s") from None
    if done.error is not None:
        raise from_engine(done.error)
    return done


def _check_filename(name: str) -> None:
    """A 400 unless ``name`` is one plain file name (llama.cpp's fs_validate_filename rules)."""
    problem = ""
    if not name or len(name.encode()) > 255:
        problem = "it must have 1 to 255 bytes"
    elif any(c in _FORBIDDEN or unicodedata.category(c) in ("Cc", "Cs") for c in name):
        problem = 'it may not contain a path separator, a control character or any of : * ? " < > |'
    elif ".." in name or name == "." or name[0] == " " or name[-1] in " .":
        problem = "it may not contain '..', be '.', start with a space or end with a space or '.'"
    if problem:
        raise invalid(f"invalid filename {name!r}: {problem}", param="filename")


def _announced_tokens(path: str, filename: str) -> int:
    """The token count in a slot file's header: the KV cells its restore needs."""
    if os.path.lexists(path) and not os.path.isfile(path):  # a FIFO's open() would wait for a writer
        raise invalid(f"{filename!r} is not a slot file", param="filename")
    try:
        with open(path, "rb") as f:
            header = f.read(_HEADER.size)
    except FileNotFoundError:
        raise ApiError(404, f"no slot file {filename!r} in the slot save directory", param="filename") from None
    except OSError as exc:
        raise invalid(f"cannot read slot file {filename!r}: {exc.strerror}", param="filename") from None
    if len(header) < _HEADER.size or _HEADER.unpack(header)[:2] != (_MAGIC, _VERSION):
        raise invalid(f"{filename!r} is not a slot file of this llama.cpp version", param="filename")
    return _HEADER.unpack(header)[2]
