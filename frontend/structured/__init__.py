"""Constrained output, tool calls and reasoning: what a chat or completion request asks its
output to look like (grammars, JSON schemas, tool-call formats) and reading it back (tool calls,
reasoning text), for any model."""
