"""The stored Responses: bounded, least recently used first out, shared through files."""

from __future__ import annotations

import time

from frontend.api import responses as api
from frontend.response_store import ResponseStore, StoredResponse


def stored(i: int) -> StoredResponse:
    response = api.Response(
        id=f"resp_{i:032x}", created_at=0, status="completed", model="m", usage=None, instructions=None,
        max_output_tokens=None, metadata={}, parallel_tool_calls=True, previous_response_id=None,
        reasoning=api.ReasoningConfig(), store=True, temperature=None, text=api.TextConfig(), tool_choice="none",
        tools=[], top_p=None, output=[api.OutputMessage(id="msg_1", content=[api.OutputTextPart("hi")],
                                                        status="completed")])
    return StoredResponse(response, [{"role": "user", "content": f"turn {i}"}])


def test_round_trip_and_another_worker_sees_it(tmp_path):
    ResponseStore(str(tmp_path)).put(stored(1))
    again = ResponseStore(str(tmp_path)).get(stored(1).response.id)  # as another HTTP worker would
    assert again == stored(1)


def test_least_recently_used_go_past_the_limit(tmp_path):
    store = ResponseStore(str(tmp_path), limit=2)
    for i in (1, 2):
        store.put(stored(i))
        time.sleep(0.02)  # file times are coarse
    assert store.get(stored(1).response.id) is not None  # now 2 is the least recently used
    time.sleep(0.02)
    store.put(stored(3))
    assert store.get(stored(2).response.id) is None
    assert store.get(stored(1).response.id) is not None and store.get(stored(3).response.id) is not None


def test_delete_and_ids_that_name_no_file(tmp_path):
    store = ResponseStore(str(tmp_path))
    store.put(stored(1))
    assert store.delete(stored(1).response.id) and not store.delete(stored(1).response.id)
    assert store.get(stored(1).response.id) is None
    assert store.get("../config.json") is None and not store.delete("resp_../../x")
