"""Resumable streams (llama-server's ``X-Conversation-Id``): a stream recorded by the HTTP worker
that runs it, which any worker can replay, follow, stop or look up."""
