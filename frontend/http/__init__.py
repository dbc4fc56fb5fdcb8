"""HTTP plumbing: ASGI messages, API keys, CORS, errors, server-sent events."""
