"""llama.cpp helpers that more than one process uses: its log routed into Python logging (log), and
the multimodal projector (projector: the frontend counts media chunks, the executor encodes them)."""
