"""Text <-> tokens: the tokenizer, chat templates, prompts, assistant prefill and stop strings."""
