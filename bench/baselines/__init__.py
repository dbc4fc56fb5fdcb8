"""What ggserve is measured against: llama-server and llama-batched-bench built from the pinned
llama.cpp (llama_cpp_build), llama-cpp-python's own server (llama_cpp_server), and llama-server's
pytest suite run against both servers (llama_suite)."""
