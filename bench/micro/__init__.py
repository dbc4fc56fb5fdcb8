"""Micro-benchmarks of one piece: the engine or llama.cpp driven directly, in one process
(engine_overhead, mixed_step_cost, idle_prefix_cost, embed_transport; llama_direct sets llama.cpp
up as the executor does), the HTTP frontend alone (frontend_load), and the GGUF stand-in that
carries a model's shapes to a machine its weights cannot reach (gguf_standin)."""
