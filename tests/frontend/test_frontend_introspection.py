"""/props and /slots bodies in llama-server's shapes, without a server."""

from __future__ import annotations

from ggserve.chat_templates import CHATML
from frontend.text.chat_template import ChatTemplate
from frontend.observe.introspection import generation_params, slot_json, template_caps
from ipc.protocol import EngineInfo, SamplingParams, SlotState

INFO = EngineInfo(model_path="m.gguf", model_alias="m", n_ctx=4096, n_ctx_slot=1024, n_slots=4, n_executors=2,
                  n_batch=512, max_queue=8, epoch=1)

# A template in the style of Hermes / Qwen: a system turn, tools, and tool calls with their ids.
TOOL_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }}{% endfor %}</tools>{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>"
    "{% if m.content is string %}{{ m.content }}{% elif m.content %}{% for p in m.content %}{{ p.text }}{% endfor %}"
    "{% endif %}"
    "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}</call>{% endfor %}"
    "{% if m.tool_call_id %}[{{ m.tool_call_id }}]{% endif %}{% endfor %}"
)


def test_template_caps_come_from_rendering_probes() -> None:
    chatml = template_caps(ChatTemplate(CHATML, "<bos>", "<eos>"))
    assert chatml["supports_system_role"] and chatml["supports_string_content"]
    assert not chatml["supports_typed_content"]  # it prints the parts list as it is
    assert not (chatml["supports_tools"] or chatml["supports_tool_calls"] or chatml["supports_tool_call_id"])
    tools = template_caps(ChatTemplate(TOOL_TEMPLATE, "", ""))
    assert all(tools.values()), tools


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
