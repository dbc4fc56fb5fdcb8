"""Executor process: one llama.cpp context per device; runs the scheduler's step plans."""
