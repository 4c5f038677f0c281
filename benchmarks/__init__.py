"""fgjax benchmarks: JSON lines on stdout, fgjax side by side with its PyTorch peer in one run."""
