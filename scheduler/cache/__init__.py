"""KV cache bookkeeping: the pool of cells (kv), reuse of cached prompts by shifting (reuse), and
the index of prefixes saved to host memory (host_cache)."""
