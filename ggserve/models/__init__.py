"""Models: resolving a GGUF path or the embedded default (resolve), reading GGUF metadata (gguf_meta),
and router mode's model sources, memory estimates, room policy and loaded engines."""
