"""tfds builders for the real datasets, reading the official archives (see README "Datasets")."""
