"""fgjax: fine-grained visual recognition in JAX/Flax on one sharded trainer.

Entry points: ``python -m fgjax.train``, ``python -m fgjax.evaluate``. The module map is in
DESIGN.md; methods plug into the trainer through :mod:`fgjax.methods`.
"""

__version__ = "0.1.0"
