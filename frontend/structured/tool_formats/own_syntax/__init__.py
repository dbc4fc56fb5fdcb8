"""Formats whose calls write arguments in a value syntax of their own (Gemma 4's, LFM2's Python calls)."""
