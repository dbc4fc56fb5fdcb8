"""Greedy sampling on the model's device (``--backend-sampling``, llama-server's ``-bs``).

llama.cpp can end its graph with a sampler chain per sequence (its experimental backend-sampling
API): the argmax then runs on the GPU beside the model, and when every output row of a step
belongs to such a sequence llama.cpp copies no logits to the host at all. At 16 sequences of
Gemma 3 that is 16 x 262k floats a step that neither cross PCIe nor go through numpy's argmax,
which is most of what the executor adds to a GPU step.

Only greedy sequences sample there, with at most a logit bias (``ignore_eos`` is one) and no
log-probabilities (of the prompt or the output) or grammar (``SeqSampler.device_bias``). Every
other sequence keeps the host path, which reads the raw logits llama.cpp then copies for the
whole step. Sampled chains stay on the host on purpose: there they pick, seed for seed, the
tokens llama.cpp's CPU chain picks.

Attaching or detaching a chain makes llama.cpp plan its graph again (a reserve, ~1-3 ms), so a
sequence keeps its chain across requests until a request with another bias, or one that needs
the host path, starts on it; an idle sequence's chain runs on a dummy row, which keeps the
graph's shape steady. On a CPU the graph's argmax is llama.cpp's single-threaded scalar loop,
slower than numpy's: the option is for GPU executors.

ggml's argmax keeps the last of equal maxima, numpy's the first, so on an exact tie of the top
two logits the device may pick the other of the two (equally likely) tokens.
"""

from __future__ import annotations

import logging

import llama_cpp

log = logging.getLogger("executor")


Bias = tuple[tuple[int, float], ...]


class DeviceGreedy:
    """The greedy chains attached to an executor's sequences, each with its logit bias."""

    def __init__(self, ctx: llama_cpp.llama_context_p, n_vocab: int) -> None:
        self.ctx = ctx
        self.n_vocab = n_vocab
        self._chains: dict[int, tuple[Bias, llama_cpp.llama_sampler_p]] = {}
        self._unsupported = False  # llama.cpp refused a chain: every sequence samples on the host

    def attached(self, seq_id: int) -> bool:
        return seq_id in self._chains

    def set(self, seq_id: int, bias: Bias | None) -> None:
        """From its next step on, sample ``seq_id`` on the device under this logit bias (empty:
        none), or on the host (None)."""
        held = self._chains.get(seq_id)
        if (held[0] if held is not None else None) == bias:
            return
        if held is not None:
            llama_cpp.llama_set_sampler(self.ctx, seq_id, None)
            llama_cpp.llama_sampler_free(held[1])
            del self._chains[seq_id]
        if bias is None or self._unsupported:
            return
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if bias:
            pairs = (llama_cpp.llama_logit_bias * len(bias))(*bias)
            bias_sampler = llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(bias), pairs)
            llama_cpp.llama_sampler_chain_add(chain, bias_sampler)
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        if llama_cpp.llama_set_sampler(self.ctx, seq_id, chain):
            self._chains[seq_id] = (bias, chain)
        else:  # the device lacks an operation the chain needs
            log.warning("backend sampling: llama.cpp cannot sample on this device; sampling on the host")
            llama_cpp.llama_sampler_free(chain)
            self._unsupported = True

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
