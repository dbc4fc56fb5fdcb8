"""What a benchmark on a lent GPU machine needs: a CUDA build made here, and the script run there."""
