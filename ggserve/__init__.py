"""ggserve: command line, configuration, and supervision of the server's processes."""
