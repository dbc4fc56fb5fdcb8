"""Workloads beyond the random, shared-prefix, multi-turn and long-mix sessions of bench.workloads,
each with its own driver: embeddings, multimodal, router mode, JSON-schema output (grammar_speed),
and the soak run (soak, its requests in soak_client, its findings in soak_report)."""
