"""Scheduler process: continuous batching, slots, prefix cache, admission, data parallelism."""
