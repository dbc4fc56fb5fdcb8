"""HTTP endpoints, one module per family; each handler is ``async (Frontend, Request) -> response``."""
