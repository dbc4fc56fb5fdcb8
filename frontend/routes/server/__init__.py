"""Server endpoints: health, models, props, slots, metrics, slot files, LoRA adapters, the tokenizer, router
mode's model management, and the web UI."""
