"""Embedding servers: the step that decodes whole inputs (embedder) and the tap that reads the
hidden states without the output layer (hidden_tap)."""
