"""The wire: message types (protocol), ZeroMQ sockets (transport), shared-memory arrays (shm)."""
