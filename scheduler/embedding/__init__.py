"""Embedding requests: their queue and steps (jobs), and the arena regions their vectors occupy
until the frontends have read them (vector_regions)."""
