"""Sampling on the model's device (``--backend-sampling``, llama-server's ``-bs``).

llama.cpp can end its graph with a sampler chain per sequence (its experimental backend-sampling
API): the pick then runs on the GPU beside the model, and when every output row of a step
belongs to such a sequence llama.cpp copies no logits to the host at all. At 16 sequences of
Gemma 3 that is 16 x 262k floats a step that neither cross PCIe nor go through numpy, which is
most of what the executor adds to a GPU step.

A sequence samples there when its request needs nothing but the chain (``SeqSampler.
device_params``): greedy with at most a logit bias (``ignore_eos`` is one), or the common
sampled chain (top-k first, then top-p, min-p, temperature, dist; executor.sampling.fast), and
no log-probabilities (of the prompt or the output) or grammar, which read the raw logits. The
chain is the one llama-server builds (``executor.sampling.sequence.build_chain``), so a greedy sequence picks the
host's tokens; a sampled one draws from the same distribution with its own arithmetic, so for a
seed it picks other tokens than on the host (llama-server's ``-bs`` does the same), the same
ones on every run. A resumed sequence's chain skips the draws its tokens so far took.

Sampled chains stay on the host when speculation is on: a verified draft samples several rows of
a sequence in one step, and llama.cpp then needs each accepted token handed back to keep its
random stream in step (not done here).

Attaching or detaching a chain makes llama.cpp plan its graph again (a reserve, ~1-3 ms), so a
sequence keeps its chain across requests while the next request's chain is the same (greedy
with the same bias, or the same sampled settings without a seed); an idle sequence's chain runs
on a dummy row, which keeps the graph's shape steady and draws nothing. On a CPU the graph's
sampling is llama.cpp's single-threaded scalar code, slower than the host path's: the option is
for GPU executors.

ggml's argmax keeps the last of equal maxima, numpy's the first, so on an exact tie of the top
two logits the device may pick the other of the two (equally likely) tokens.
"""

from __future__ import annotations

import logging

import llama_cpp
import msgspec

from executor.sampling.sequence import build_chain, skip_draws
from ipc.protocol import SamplingParams

log = logging.getLogger("executor")


class DeviceSampling:
    """The sampler chains attached to an executor's sequences."""

    def __init__(self, ctx: llama_cpp.llama_context_p, vocab: llama_cpp.llama_vocab_p, n_vocab: int,
                 sampled: bool) -> None:
        """``sampled``: whether sampled chains may run here (not with speculation), besides greedy ones."""
        self.ctx = ctx
        self.vocab = vocab
        self.n_vocab = n_vocab
        self.sampled = sampled
        # by sequence: the chain and what it may serve again (None: only the request it was built for)
        self._chains: dict[int, tuple[object, llama_cpp.llama_sampler_p]] = {}
        self._unsupported: set[bool] = set()  # kinds (greedy or not) llama.cpp refused on this device

    def attached(self, seq_id: int) -> bool:
        return seq_id in self._chains

    def set(self, seq_id: int, params: SamplingParams | None, n_drawn: int = 0) -> None:
        """From its next step on, sample ``seq_id`` on the device with the chain of ``params``
        (which has already drawn for ``n_drawn`` tokens: a resumed sequence), or on the host
        (None)."""
        greedy = params is not None and params.temperature <= 0
        if params is not None and (greedy in self._unsupported or not (greedy or self.sampled)):
            params = None
        key = _reuse_key(params) if params is not None else None
        held = self._chains.get(seq_id)
        if held is not None and key is not None and held[0] == key:
            return
        if held is not None:
            llama_cpp.llama_set_sampler(self.ctx, seq_id, None)
            llama_cpp.llama_sampler_free(held[1])
            del self._chains[seq_id]
        if params is None:
            return
        chain = build_chain(params, self.vocab, self.n_vocab, greedy)
        skip_draws(chain, n_drawn)
        if llama_cpp.llama_set_sampler(self.ctx, seq_id, chain):
            self._chains[seq_id] = (key, chain)
        else:  # the device lacks an operation the chain needs
            log.warning("backend sampling: llama.cpp cannot run %s chains on this device; sampling them on the host",
                        "greedy" if greedy else "sampled")
            llama_cpp.llama_sampler_free(chain)
            self._unsupported.add(greedy)

    def token(self, batch_row: int) -> int:
        """The token sampled for the output at batch index ``batch_row`` (of an attached sequence)."""
        token = llama_cpp.llama_get_sampled_token_ith(self.ctx, batch_row)
        if token < 0:
            raise RuntimeError(f"no token was sampled on the device for batch row {batch_row}")
        return token

    def close(self) -> None:
        for seq_id, (_, chain) in self._chains.items():
            llama_cpp.llama_set_sampler(self.ctx, seq_id, None)
            llama_cpp.llama_sampler_free(chain)
        self._chains.clear()


def _reuse_key(params: SamplingParams) -> object:
    """What makes an attached chain fit the next request too, or None when nothing does: a
    seeded chain must start its random stream afresh."""
    if params.temperature <= 0:
        return ("greedy", tuple((t, b) for t, b in params.logit_bias))
    return None if params.seed is not None else msgspec.json.encode(params)
