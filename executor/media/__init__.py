"""Images and audio in prompts: encoding media chunks and decoding their embeddings (decoder), and
the M-RoPE positions they take (positions)."""
