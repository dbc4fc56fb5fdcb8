"""Generating endpoints: chat, completions, llama-server's /completion and /infill, Responses, Anthropic Messages,
transcriptions, and resumable streams."""
