"""Micro-benchmarks that drive the engine or llama.cpp directly, in one process (engine_overhead,
mixed_step_cost, idle_prefix_cost, embed_transport; llama_direct sets llama.cpp up as the executor
does), and the GGUF stand-in that carries a model's shapes to a machine its weights cannot reach
(gguf_standin)."""
