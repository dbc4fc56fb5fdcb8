"""The scheduler's counters for /metrics and its slot states for /slots, driven by the fake
executor of the policy tests (every step takes 0.01 s)."""

from __future__ import annotations

import pytest
from test_scheduler_policy import Harness, info, prompt

STEP_S = 0.01


def test_counters_have_llama_server_meaning() -> None:
    h = Harness(n_slots=2)
    system = prompt(50)
    h.add("a", system + [7], max_tokens=4)  # one prefill step of 51 tokens, then 3 decode steps
    h.run_until_idle()
    h.add("b", system + [9, 9], max_tokens=4)  # reuses 50 cached tokens: a prefill of 2, then 3 decodes
    h.run_until_idle()
    stats = h.sched.stats()
    (ex,) = stats.executors
    assert (ex.steps_total, ex.step_seconds_total) == (8, pytest.approx(8 * STEP_S))
    assert ex.prompt_tokens_total == 51 + 2  # evaluated only
    assert ex.prompt_tokens_cached_total == 50
    assert ex.prompt_seconds_total == pytest.approx(2 * STEP_S)  # the two steps that were all prompt
    assert ex.tokens_predicted_total == 8
    assert ex.busy_slots_total == 8  # one busy slot in each step
    assert stats.n_tokens_max == 52 + 3  # b's sequence: its prompt and the 3 tokens fed back
    assert stats.prompt_tokens_per_second == pytest.approx(53 / (2 * STEP_S))
    assert stats.predicted_tokens_per_second > 0 and stats.tokens_predicted_seconds_total > 0
    assert ex.kv_tokens == 55 and ex.n_busy_slots == 0 and ex.ready
    h.sched.metrics.reset_window()  # a /metrics scrape: the rates start over, the totals go on
    again = h.sched.stats()
    assert (again.prompt_tokens_per_second, again.predicted_tokens_per_second) == (0.0, 0.0)
    assert again.executors[0].prompt_tokens_total == 53


def test_counters_go_on_across_an_executor_restart() -> None:
    h = Harness(n_slots=1)
    h.add("a", prompt(10), max_tokens=3)
    h.run_until_idle()
    before = h.sched.stats().executors[0]
    h.sched.executor_failed(0, "killed")
    assert not h.sched.stats().executors[0].ready
    h.sched.executor_ready(info(n_slots=1))
    after = h.sched.stats().executors[0]
    assert after.ready and after.kv_tokens == 0  # a new process: empty cache
    assert (after.steps_total, after.prompt_tokens_total) == (before.steps_total, before.prompt_tokens_total)


def test_slot_states_describe_the_running_request_then_the_last_one() -> None:
    h = Harness(n_slots=1)
    h.add("a", prompt(20), max_tokens=5, logprobs=2, ignore_eos=True)
    h.step()  # prefill: the first token is sampled
    (slot,) = h.sched.stats().slots
    assert slot.busy and slot.request_id == "a"
    assert (slot.n_prompt_tokens, slot.n_prompt_tokens_processed, slot.n_generated_tokens) == (20, 20, 1)
    assert (slot.max_tokens, slot.logprobs, slot.ignore_eos) == (5, 2, True)
    assert slot.sampling is not None and slot.sampling.temperature == 0
    h.run_until_idle()
    (slot,) = h.sched.stats().slots
    assert not slot.busy and slot.request_id == "a" and slot.n_generated_tokens == 5
    assert slot.n_cached_tokens == 24  # its KV stays: the prefix cache
