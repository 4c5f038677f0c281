"""Per-method losses. Each takes (outputs, batch, config) and returns (scalar loss, metrics dict).

Losses are computed in float32 whatever the compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy with integer labels (optionally label-smoothed), float32."""
  logits = logits.astype(jnp.float32)
  if label_smoothing:
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    onehot = optax.smooth_labels(onehot, label_smoothing)
    return optax.softmax_cross_entropy(logits, onehot).mean()
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32).mean()


def classification(outputs: dict, batch: dict, config) -> tuple[jax.Array, dict]:
  """Cross-entropy on outputs['logits'] against batch['label']."""
  smoothing = config.model.get('label_smoothing', 0.0)
  loss = cross_entropy(outputs['logits'], batch['label'], smoothing)
  return loss, {'accuracy': accuracy(outputs['logits'], batch['label'])}
