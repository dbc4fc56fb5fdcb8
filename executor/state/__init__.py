"""Copies of sequences' KV state: in host memory for --cache-ram (host_cache), in files for slot
save and restore (slot_files)."""
