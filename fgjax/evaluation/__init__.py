"""Evaluation libraries: `protocols` (the jitted eval step; classification, re-id and retrieval
protocols), `plots` (per-class accuracy, confusion, CMC, retrieval examples) and `svm` (one-vs-all
linear SVMs on embeddings). The command is `python -m fgjax.evaluate`."""
