"""The machine around a run: CPU time of other processes (machine), and the server's process tree
with its memory (proctree)."""
