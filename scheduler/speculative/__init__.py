"""Speculative decoding, the scheduler's half: model-free drafts and how long each one is.

A decoding request with speculation on proposes the tokens that followed the last time its
latest tokens appeared in its own prompt + output (prompt lookup); with a draft model (-md) the
scheduler books cells for the draft instead, and the executor drafts (executor.draft) and says
which tokens it drafted. Its step item then carries
the pending token and the draft; the executor verifies them in the same ``llama_decode`` as
every other sequence's tokens (ipc.protocol.BatchItem.draft) and reports how many were
accepted; the scheduler drops the rejected ones from the KV cache (a TRUNCATE before the next
step) and from its books.

Verification samples the target at each draft position and accepts while the sample equals the
draft. A model-free draft is a point mass, for which this is exactly the standard rejection
rule: the output has the target's distribution at any temperature, and with the same seed the
same random draws go to the same output positions as without speculation.

Drafts cost compute: on a CPU a decode's time grows with its tokens, so speculation must pay for
itself. Each executor keeps its step time as a curve of the step's tokens (``StepCost``); each
request keeps its recent acceptance rate ``alpha`` (``Acceptance``, starting from the rate of
all requests lately), so the j-th draft token is expected to yield ``alpha ** j`` output tokens.
The step's draft tokens are the most valuable ones, as many as maximise its expected output
tokens per second (``allocate``): when the batch is already compute-bound (many decodes, each
draft token nearly as costly as a whole output token) drafts stop, and a request whose drafts
keep failing drafts shorter, then not at all, until a probe shows it agreeing again.

The parts: drafter (the settings, a request's proposals and acceptance rate), allocation (the
step-time curve and the draft lengths that pay), drafts (each step's drafts and what a verified
one outputs).
"""
