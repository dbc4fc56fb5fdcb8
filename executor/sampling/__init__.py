"""Picking tokens: each sequence's sampler (sequence), the common chain vectorised over a step's rows
(fast), chains run on the model's device (device), lazy grammars and reasoning budgets."""
