"""The model and context as llama.cpp is asked to set them up: parameters, where tensors and
threads go, and what is added to the model (LoRA adapters, control vectors)."""
