"""Pooling endpoints: embeddings, reranking and scoring (embedding and reranking models)."""
