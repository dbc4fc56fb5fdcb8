"""Greedy sampling on the device (--backend-sampling), in process on the tiny llama model: the
device's argmax picks the tokens the host path picks, alone and in steps that mix device rows
with rows the host samples (log-probabilities, a sampled chain, a verified draft), and a
sequence whose next request reads its logits goes back to the host. Each test runs the same
plans on an executor with the option and on one without, and compares what they return."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tiny_models import tiny_llama

from executor.device_sampling import DeviceGreedy
from executor.engine import ModelEngine
from executor.sampling import logits_view
from ggserve.config import ServeConfig, cpu_has_amx
from ipc.protocol import BatchItem, KvOp, KvOpKind, SamplingParams, SeqStart, StepPlan, StepResult

GREEDY = SamplingParams(temperature=0)
SAMPLED = SamplingParams(temperature=0.8, seed=7)
PROMPTS = [list(range(1000 + 50 * s, 1012 + 50 * s)) for s in range(3)]


@pytest.fixture(scope="module")
def engines():
    def make(backend_sampling: bool) -> ModelEngine:
        return ModelEngine(ServeConfig(model=tiny_llama(), n_parallel=3, ctx_size=512, threads=2,
                                       repack=not cpu_has_amx(), backend_sampling=backend_sampling,
                                       spec_type="ngram-simple"), 0)

    device, host = make(True), make(False)
    assert device.device is not None and host.device is None
    yield device, host
    device.close()
    host.close()


@pytest.fixture
def device_reads(monkeypatch) -> list[int]:
    """The batch rows whose token the device sampled, in the order they were read."""
    rows: list[int] = []
    read = DeviceGreedy.token

    def spy(self, batch_row: int) -> int:
        rows.append(batch_row)
        return read(self, batch_row)

    monkeypatch.setattr(DeviceGreedy, "token", spy)
    return rows


def run(engine: ModelEngine, plan: StepPlan) -> StepResult:
    result = engine.step(plan)
    assert result.error is None and not result.failures and not result.no_kv_room
    return result


def start(step_id: int, starts: list[SeqStart]) -> StepPlan:
    """Fresh requests prefilling their PROMPTS on emptied sequences."""
    seqs = [s.seq_id for s in starts]
    return StepPlan(step_id, [KvOp(KvOpKind.CLEAR, s) for s in seqs], starts, seqs,
                    [BatchItem(s, PROMPTS[s], 0, True) for s in seqs])


def generate(engine: ModelEngine, starts: list[SeqStart], n_steps: int) -> list[StepResult]:
    """The prompts, then ``n_steps`` decode steps feeding back each sequence's token."""
    results = [run(engine, start(1, starts))]
    for step in range(n_steps):
        last = {s.seq_id: s.token_id for s in results[-1].samples}
        results.append(run(engine, StepPlan(2 + step, items=[
            BatchItem(seq, [last[seq]], len(PROMPTS[seq]) + step, True) for seq in sorted(last)])))
    return results


def outputs(results: list[StepResult]) -> list[list[tuple[int, int, object]]]:
    return [sorted((s.seq_id, s.token_id, s.logprob) for s in r.samples) for r in results]


def test_greedy_sequences_take_the_devices_argmax_which_is_the_hosts(engines, device_reads) -> None:
    device, host = engines
    starts = [SeqStart(s, GREEDY) for s in range(3)]
    on_device = generate(device, starts, 12)
    assert all(device.device.attached(s) for s in range(3))
    assert len(device_reads) == 3 * 13  # every token of every sequence came from the device
    assert outputs(on_device) == outputs(generate(host, starts, 12))
    # with every row sampled on the device, llama.cpp copies no logits to the host
    stale = logits_view(device.ctx, 3, device.n_vocab)
    stale[:] = np.nan
    last = {s.seq_id: s.token_id for s in on_device[-1].samples}
    run(device, StepPlan(20, items=[BatchItem(s, [last[s]], len(PROMPTS[s]) + 12, True) for s in range(3)]))
    assert np.isnan(stale).all()


def test_a_step_mixing_device_and_host_rows_samples_each_as_the_host_would(engines, device_reads) -> None:
    device, host = engines
    unbiased = [s.token_id for r in generate(host, [SeqStart(0, GREEDY)], 10) for s in r.samples]
    # bans (as ignore_eos bans the end-of-generation tokens) of what it would pick, and a raise
    biased = SamplingParams(temperature=0, logit_bias=[(t, -math.inf) for t in set(unbiased[:3])] + [(77, 0.5)])
    starts = [SeqStart(0, biased), SeqStart(1, GREEDY, logprobs=3), SeqStart(2, SAMPLED)]
    on_device = generate(device, starts, 10)
    assert device.device.attached(0) and not device.device.attached(1) and not device.device.attached(2)
    assert len(device_reads) == 11  # sequence 0's tokens only, under its bias
    assert outputs(on_device) == outputs(generate(host, starts, 10))  # tokens and logprobs alike
    assert unbiased[0] != on_device[0].samples[0].token_id


def test_a_sequence_whose_next_request_reads_logits_samples_on_the_host_again(engines) -> None:
    device, host = engines
    generate(device, [SeqStart(0, GREEDY)], 3)
    assert device.device.attached(0)
    starts = [SeqStart(0, GREEDY, prompt_logprobs=2), SeqStart(1, GREEDY, logprobs=1)]
    plan = start(1, starts)
    plan.items[0].logprob_targets = PROMPTS[0][1:]
    results = [run(e, plan) for e in (device, host)]
    assert not device.device.attached(0)
    assert results[0].prompt_logprobs == results[1].prompt_logprobs and results[0].prompt_logprobs
    assert outputs(results[:1]) == outputs(results[1:])


def test_a_draft_is_verified_on_the_devices_argmax(engines, device_reads) -> None:
    device, host = engines
    continuation = [s.token_id for r in generate(host, [SeqStart(0, GREEDY)], 6) for s in r.samples]
    # the first three tokens the model would pick, then one it would not
    draft = continuation[1:4] + [(continuation[4] + 1) % 1000 + 5]
    verified = []
    for engine in (device, host):
        run(engine, start(1, [SeqStart(0, GREEDY)]))
        item = BatchItem(0, [continuation[0], *draft], len(PROMPTS[0]), True, draft=4)
        verified.append(run(engine, StepPlan(9, items=[item])).samples)
    assert verified[0] == verified[1]
    assert verified[0][0].n_accepted == 3 and verified[0][0].token_id == continuation[4]
    assert device_reads[-5:] == list(range(5))  # the step's five rows, read from the device
