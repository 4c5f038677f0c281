"""Evaluation metrics on host (NumPy), over whole splits gathered from the eval loop."""

from __future__ import annotations

import numpy as np


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(logits, -1) == labels))


def mean_per_class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean over the classes present in `labels` of each class's accuracy."""
  pred = np.argmax(logits, -1)
  classes = np.unique(labels)
  return float(np.mean([np.mean(pred[labels == c] == c) for c in classes]))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
  logits = logits.astype(np.float64)
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return float(-np.mean(logp[np.arange(len(labels)), labels]))


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  return {'top1': top1(logits, labels),
          'mean_per_class_accuracy': mean_per_class_accuracy(logits, labels),
          'loss': cross_entropy(logits, labels),
          'num_examples': int(len(labels))}
