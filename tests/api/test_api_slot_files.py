"""llama-server's slot save / restore / erase (POST /slots/{id}, --slot-save-path) through the
real model: a saved slot restored (into another slot) serves the same prompt from its cache
with the same greedy output as the in-memory prefix cache did; counts, files, erase, and every
refusal (bad names, missing file, busy slot, unknown slot or action)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest
from conftest import ServerHandle, start_server

PROMPT = "A list of the planets of the solar system, from the closest to the Sun: Mercury, Venus, Earth,"
N_PREDICT = 8


@pytest.fixture(scope="module")
def saving(tmp_path_factory) -> Iterator[tuple[ServerHandle, str]]:
    save_dir = str(tmp_path_factory.mktemp("slots"))
    with start_server("-np", "3", "-c", "1024", "--slot-save-path", save_dir) as handle:
        yield handle, save_dir


def post(server: ServerHandle, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def complete(server: ServerHandle, **body: object) -> dict:
    r = post(server, "/completion", {"prompt": PROMPT, "temperature": 0, "n_predict": N_PREDICT,
                                     "ignore_eos": True, "return_tokens": True} | body)
    assert r.status_code == 200, r.text
    return r.json()


def action(server: ServerHandle, id_slot: int | str, name: str, body: dict | None = None) -> httpx.Response:
    return post(server, f"/slots/{id_slot}?action={name}", body or {})


def slot_state(server: ServerHandle, id_slot: int) -> dict:
    return next(s for s in httpx.get(f"{server.base_url}/slots", timeout=30).json() if s["id"] == id_slot)


def test_save_erase_restore_serves_the_prompt_from_the_file(saving):
    server, save_dir = saving
    cold = complete(server, id_slot=1)
    n_prompt = cold["tokens_evaluated"]
    warm = complete(server, id_slot=1)  # from the slot's own prefix cache
    assert warm["tokens_cached"] == n_prompt - 1

    saved = action(server, 1, "save", {"filename": "planets.bin"})
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert set(body) == {"id_slot", "filename", "n_saved", "n_written", "timings"}
    assert set(body["timings"]) == {"save_ms"}
    assert (body["id_slot"], body["filename"], body["n_saved"]) == (1, "planets.bin", n_prompt + N_PREDICT - 1)
    assert body["n_written"] == os.path.getsize(os.path.join(save_dir, "planets.bin")) > 0
    assert os.listdir(save_dir) == ["planets.bin"]

    erased = action(server, 1, "erase")
    assert erased.json() == {"id_slot": 1, "n_erased": body["n_saved"]}
    assert slot_state(server, 1)["n_cached_tokens"] == 0

    restored = action(server, 2, "restore", {"filename": "planets.bin"})
    assert restored.status_code == 200, restored.text
    again = restored.json()
    assert set(again) == {"id_slot", "filename", "n_restored", "n_read", "timings"}
    assert (again["id_slot"], again["n_restored"], again["n_read"]) == (2, body["n_saved"], body["n_written"])
    assert slot_state(server, 2)["n_cached_tokens"] == body["n_saved"]

    from_file = complete(server)  # any slot: the prefix cache finds the restored one
    assert from_file["id_slot"] == 2 and from_file["tokens_cached"] == n_prompt - 1
    # The same cells and the same last-token batch as the warm run: the same greedy tokens.
    assert from_file["tokens"] == warm["tokens"]


def test_bad_requests_are_refused_by_name(saving):
    server, _ = saving
    for name in ("../x", "/abs", "", "a/b", "..", "x.", "a\\b", "a:b"):
        r = action(server, 0, "save", {"filename": name})
        assert r.status_code == 400 and r.json()["error"]["param"] == "filename", (name, r.text)
    r = action(server, 0, "restore", {"filename": "never-saved.bin"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert action(server, 0, "save", {}).status_code == 400  # no filename
    assert action(server, 0, "copy", {"filename": "a.bin"}).json()["error"]["param"] == "action"
    assert action(server, "abc", "erase").json()["error"]["param"] == "id_slot"
    for id_slot in (3, 10**30):
        r = action(server, id_slot, "erase")
        assert r.status_code == 400 and f"slot {id_slot} does not exist" in r.json()["error"]["message"]


def test_a_cut_or_garbled_file_is_a_400_and_the_executor_lives(saving):
    """llama.cpp's own file loader reads past the end of a truncated file and aborts the process
    on an assertion: every cut file must be refused, the server serving on."""
    server, save_dir = saving
    complete(server, id_slot=0)
    assert action(server, 0, "save", {"filename": "whole.bin"}).status_code == 200
    data = open(os.path.join(save_dir, "whole.bin"), "rb").read()
    cuts = {"half.bin": data[: len(data) // 2], "short.bin": data[:-100], "header.bin": data[:14],
            "tail.bin": data + b"\0" * 64}
    for name, content in cuts.items():
        with open(os.path.join(save_dir, name), "wb") as f:
            f.write(content)
        r = action(server, 1, "restore", {"filename": name})
        assert r.status_code == 400 and "unable to restore" in r.json()["error"]["message"], (name, r.text)
        assert slot_state(server, 1)["n_cached_tokens"] == 0
    assert action(server, 1, "restore", {"filename": "whole.bin"}).status_code == 200
    assert "restarting it in" not in server.log()  # no process died
    complete(server)


def test_a_name_of_255_bytes_saves_and_a_fifo_is_refused_without_waiting(saving):
    server, save_dir = saving
    complete(server, id_slot=0)
    longest = "n" * 251 + ".bin"  # the file was first written as NAME.partial: too long a name, a 500
    saved = action(server, 0, "save", {"filename": longest})
    assert saved.status_code == 200, saved.text
    assert action(server, 1, "restore", {"filename": longest}).status_code == 200
    os.mkfifo(os.path.join(save_dir, "pipe"))  # opening it would wait for a writer, forever
    r = action(server, 1, "restore", {"filename": "pipe"})
    assert r.status_code == 400 and "not a slot file" in r.json()["error"]["message"]
    assert save_dir not in r.text


def test_a_busy_slot_is_a_409(saving):
    server, save_dir = saving
    body = {"prompt": PROMPT, "n_predict": 400, "ignore_eos": True, "stream": True, "id_slot": 0}
    with httpx.stream("POST", f"{server.base_url}/completion", json=body, timeout=120) as stream:
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert "content" in json.loads(first[6:])
        r = action(server, 0, "save", {"filename": "busy.bin"})
        assert r.status_code == 409 and r.json()["error"]["type"] == "conflict_error", r.text
        assert action(server, 0, "erase").status_code == 409
    assert not os.path.exists(os.path.join(save_dir, "busy.bin"))


def test_a_restored_file_is_reused_only_by_the_key_that_computed_it(saving):
    """A slot saved from a salted request, restored into another slot: requests of the same
    salt reuse it; an unsalted request does not (the salt, and the adapter set, go with the
    file)."""
    server, _ = saving
    complete(server, id_slot=0, cache_salt="tenant-a")
    assert action(server, 0, "save", {"filename": "salted.bin"}).status_code == 200
    for slot in range(3):
        assert action(server, slot, "erase").status_code == 200
    complete(server, id_slot=2, prompt="Something else entirely, to give slot 2 a past.")
    assert action(server, 2, "restore", {"filename": "salted.bin"}).status_code == 200
    assert complete(server, id_slot=2)["tokens_cached"] <= 1  # unsalted: computed again
    assert action(server, 2, "restore", {"filename": "salted.bin"}).status_code == 200
    n_prompt = complete(server, id_slot=1)["tokens_evaluated"]
    assert complete(server, id_slot=2, cache_salt="tenant-a")["tokens_cached"] == n_prompt - 1
