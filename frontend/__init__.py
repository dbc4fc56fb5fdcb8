"""HTTP process: OpenAI-compatible API on granian; talks to the scheduler over ZeroMQ."""
