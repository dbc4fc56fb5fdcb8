"""/props and /slots bodies in llama-server's shapes, without a server."""

from __future__ import annotations

from frontend.observe.introspection import generation_params, slot_json
from ipc.protocol import EngineInfo, SamplingParams, SlotState

INFO = EngineInfo(model_path="m.gguf", model_alias="m", n_ctx=4096, n_ctx_slot=1024, n_slots=4, n_executors=2,
                  n_batch=512, max_queue=8, epoch=1)

def test_generation_params_use_llama_server_names() -> None:
    params = generation_params(SamplingParams(temperature=0.5, top_k=7, seed=None, grammar="root ::= x"), 64, True, 3)
    assert (params["temperature"], params["top_k"], params["seed"]) == (0.5, 7, 0xFFFFFFFF)
    assert (params["n_predict"], params["max_tokens"], params["ignore_eos"], params["n_probs"]) == (64, 64, True, 3)
    assert "grammar" not in params and "logit_bias" not in params


def test_slot_json_counts_ids_over_executors_and_shows_the_request() -> None:
    idle = slot_json(SlotState(slot_id=1, executor_id=1, busy=False), INFO)
    assert (idle["id"], idle["id_slot"], idle["id_executor"], idle["n_ctx"]) == (5, 1, 1, 1024)
    assert "id_task" not in idle  # it never ran a request
    busy = slot_json(SlotState(slot_id=0, executor_id=0, busy=True, request_id="r-0", n_prompt_tokens=20,
                               n_generated_tokens=5, n_prompt_tokens_cached=8, n_prompt_tokens_processed=12,
                               max_tokens=64, sampling=SamplingParams(temperature=0.2)), INFO)
    assert (busy["id_task"], busy["n_prompt_tokens"], busy["n_prompt_tokens_cache"]) == ("r-0", 20, 8)
    assert busy["n_prompt_tokens_processed"] == 12 and busy["params"]["temperature"] == 0.2
    assert busy["next_token"] == [{"has_next_token": True, "n_remain": 59, "n_decoded": 5}]
    done = slot_json(SlotState(slot_id=0, executor_id=0, busy=False, request_id="r-0", n_generated_tokens=5,
                               max_tokens=64, sampling=SamplingParams()), INFO)
    assert done["id_task"] == "r-0"  # the last request's settings stay; its budget does not (llama-server's)
    assert done["next_token"] == [{"has_next_token": False, "n_remain": -1, "n_decoded": 0}]
