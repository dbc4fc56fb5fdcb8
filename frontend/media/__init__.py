"""Media in requests: the files a client sends (files), videos turned into frames (video), and the
shared-memory arena their bytes reach the executor through (arena)."""
