"""Command-line flags beyond ggserve's own (ggserve.cli): llama-server's, read from the command
line or its environment variables, checked and turned into configuration."""
