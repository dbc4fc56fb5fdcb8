"""Sampling on the device (--backend-sampling), in process on the tiny llama model.

Greedy: the device's argmax picks the tokens the host path picks, alone and in steps that mix
device rows with rows the host samples (log-probabilities, a sampled chain under speculation, a
verified draft), and a sequence whose next request reads its logits goes back to the host. These
tests run the same plans on an executor with the option and on one without, and compare what
they return. Sampled chains (without speculation): a seed draws the same tokens each time, every
token is one the chain could pick from the host's logits, and the draws follow its distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tiny_models import tiny_llama

import executor.sampling.device as device_module
from executor.sampling.device import DeviceSampling
from executor.engine import ModelEngine
from executor.sampling.sequence import SequenceFailed, logits_view
from ggserve.config import ServeConfig, cpu_has_amx
from ipc.protocol import BatchItem, ErrorCode, KvOp, KvOpKind, SamplingParams, SeqStart, StepPlan, StepResult

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
    read = DeviceSampling.token

    def spy(self, batch_row: int) -> int:
        rows.append(batch_row)
        return read(self, batch_row)

    monkeypatch.setattr(DeviceSampling, "token", spy)
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



def test_a_device_chain_llama_cpp_refuses_fails_its_request_alone(engines, monkeypatch) -> None:
    device, _ = engines
    build = device_module.build_chain

    refused = SamplingParams(temperature=0, logit_bias=[(78, 0.25)])

    def refuse(params: SamplingParams, *args: object) -> object:
        if params == refused:
            raise SequenceFailed("llama.cpp rejected a sampler parameter")
        return build(params, *args)

    monkeypatch.setattr(device_module, "build_chain", refuse)
    result = device.step(start(1, [SeqStart(0, refused), SeqStart(1, GREEDY)]))
    assert result.error is None and [f.seq_id for f in result.failures] == [0]
    error = result.failures[0].error
    assert error.code == ErrorCode.INVALID_REQUEST and "rejected" in error.message
    assert [s.seq_id for s in result.samples] == [1] and device.device.attached(1) and not device.device.attached(0)
    assert 0 not in device.samplers

# llama-server's default sampled chain, which the device runs whole
SERVER_DEFAULT = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)


@pytest.fixture(scope="module")
def sampled_device():
    """An executor with the option and no speculation: sampled chains run on the device too."""
    engine = ModelEngine(ServeConfig(model=tiny_llama(), n_parallel=3, ctx_size=512, threads=2,
                                     repack=not cpu_has_amx(), backend_sampling=True), 0)
    yield engine
    engine.close()


def _chain_candidates(row: np.ndarray, slack: float = 0.01) -> set[int]:
    """The tokens llama-server's default chain can pick from a row (top-k, top-p, min-p), with
    some slack at the cut-offs for the rounding of another batch shape."""
    top = np.argsort(-row.astype(np.float64))[: SERVER_DEFAULT["top_k"]]
    probs = np.exp(row[top].astype(np.float64) - row[top].max())
    probs /= probs.sum()
    before = np.cumsum(probs) - probs  # the probability of the better candidates
    keep = (before < SERVER_DEFAULT["top_p"] + slack) & (probs >= SERVER_DEFAULT["min_p"] * probs[0] * (1 - slack))
    return set(top[keep].tolist())


def test_sampled_sequences_draw_on_the_device_from_the_chains_candidates(sampled_device, engines, device_reads) -> None:
    _, host = engines
    starts = [SeqStart(0, SamplingParams(**SERVER_DEFAULT, seed=1)),
              SeqStart(1, SamplingParams(**SERVER_DEFAULT, seed=2)),
              SeqStart(2, SamplingParams(**SERVER_DEFAULT, logit_bias=[(t, -math.inf) for t in range(5)]))]
    first = generate(sampled_device, starts[:2], 12)
    assert all(sampled_device.device.attached(s) for s in range(2))
    assert len(device_reads) == 2 * 13
    assert outputs(generate(sampled_device, starts[:2], 12)) == outputs(first)  # a seed draws the same tokens
    runs = generate(sampled_device, starts, 12)
    assert sampled_device.device.attached(2)
    for seq in range(3):
        tokens = [s.token_id for r in runs for s in r.samples if s.seq_id == seq]
        # the host's logits at every position the sequence sampled (teacher-forced)
        text = PROMPTS[seq] + tokens
        run(host, start(30, [SeqStart(seq, GREEDY)]))
        item = BatchItem(seq, text[:-1], 0, False, logprob_targets=text[1:])
        run(host, StepPlan(31, [KvOp(KvOpKind.CLEAR, seq)], items=[item]))
        rows = logits_view(host.ctx, len(text) - 1, host.n_vocab)
        for j, token in enumerate(tokens):
            assert token in _chain_candidates(rows[len(PROMPTS[seq]) - 1 + j]), (seq, j, token)
        if seq == 2:
            assert not set(tokens) & set(range(5))
    assert len({s.token_id for r in runs for s in r.samples}) > 3  # it samples, it does not take the argmax


def test_the_first_token_follows_the_chains_distribution_across_seeds(sampled_device, engines) -> None:
    """The device's draws of one position, over many seeds, against the chain's probabilities
    from the host's logits (chi-square over bins of at least 5 expected draws)."""
    _, host = engines
    params = dict(SERVER_DEFAULT, temperature=1.5)  # a flatter distribution: more tokens drawn
    run(host, start(40, [SeqStart(0, GREEDY)]))
    row = logits_view(host.ctx, 1, host.n_vocab)[0].astype(np.float64)
    top = np.argsort(-row)[: params["top_k"]]
    probs = np.exp(row[top] - row[top].max())
    probs /= probs.sum()
    keep = np.searchsorted(np.cumsum(probs), params["top_p"]) + 1
    top, logits = top[:keep], row[top[:keep]]
    above_min_p = np.exp(logits - logits[0]) >= params["min_p"]
    top, logits = top[above_min_p], logits[above_min_p]
    expected = np.exp((logits - logits[0]) / params["temperature"])
    expected /= expected.sum()
    draws: list[int] = []
    for seed in range(40):  # three sequences a step, each its own seed, all on PROMPTS[0]
        result = run(sampled_device, StepPlan(
            41 + seed, [KvOp(KvOpKind.CLEAR, s) for s in range(3)],
            [SeqStart(s, SamplingParams(**params, seed=100 * seed + s)) for s in range(3)], [0, 1, 2],
            [BatchItem(s, PROMPTS[0], 0, True) for s in range(3)]))
        draws += [s.token_id for s in result.samples]
    assert set(draws) <= set(top.tolist())
    # bins in order of probability, each of at least 5 expected draws (the last takes the rest)
    observed_by_token = {t: draws.count(t) for t in top.tolist()}
    bins, exp_bins, obs, exp = [], [], 0, 0.0
    for t, p in zip(top.tolist(), expected):
        obs, exp = obs + observed_by_token[t], exp + p * len(draws)
        if exp >= 5:
            bins.append(obs)
            exp_bins.append(exp)
            obs, exp = 0, 0.0
    if exp:
        bins[-1] += obs
        exp_bins[-1] += exp
    chi2 = sum((o - e) ** 2 / e for o, e in zip(bins, exp_bins))
    dof = len(bins) - 1
    bound = dof * (1 - 2 / (9 * dof) + 3.09 * np.sqrt(2 / (9 * dof))) ** 3  # 99.9% (Wilson-Hilferty)
    assert dof >= 2 and chi2 < bound, (chi2, bound, bins, exp_bins)
