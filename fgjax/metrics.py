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


def _normalise(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def reid_cmc_map(query: np.ndarray, query_ids: np.ndarray, query_cams: np.ndarray,
                 gallery: np.ndarray, gallery_ids: np.ndarray, gallery_cams: np.ndarray,
                 ranks=(1, 5, 10)) -> dict[str, float]:
  """Re-identification CMC rank-k and mAP with the Market-1501 protocol.

  Features are l2-normalised and ranked by Euclidean distance (= cosine). For each query, gallery
  images of the same identity seen by the same camera are ignored; identity 0 (distractors) are
  ordinary negatives. Queries with no valid true match are skipped (and counted). CMC@k: fraction
  of queries whose first true match is within the top k. AP: mean of precision at each true match.
  """
  q, g = _normalise(query), _normalise(gallery)
  dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1) if len(q) * len(g) < 4e6 else (
      2 - 2 * q @ g.T)
  hits = np.zeros(max(ranks), np.float64)
  aps, skipped = [], 0
  for i in range(len(q)):
    valid = ~((gallery_ids == query_ids[i]) & (gallery_cams == query_cams[i]))
    order = np.argsort(dist[i][valid], kind='stable')
    matches = (gallery_ids[valid] == query_ids[i])[order]
    if not matches.any():
      skipped += 1
      continue
    first = int(np.argmax(matches))
    if first < len(hits):
      hits[first:] += 1
    positions = np.nonzero(matches)[0]
    aps.append(np.mean((np.arange(len(positions)) + 1) / (positions + 1)))
  n = max(len(aps), 1)
  out = {f'cmc_rank{k}': float(hits[k - 1] / n) for k in ranks}
  out.update({'map': float(np.mean(aps)) if aps else 0.0, 'num_queries': len(aps),
              'num_queries_without_match': skipped})
  return out


def recall_at_k(features: np.ndarray, labels: np.ndarray, ks=(1, 2, 4, 8)) -> dict[str, float]:
  """Retrieval Recall@K within one set (each item queries all others; cosine similarity)."""
  f = _normalise(features)
  sim = f @ f.T
  np.fill_diagonal(sim, -np.inf)
  top = np.argsort(-sim, axis=1, kind='stable')[:, :max(ks)]
  correct = labels[top] == labels[:, None]
  return {f'recall_at_{k}': float(np.mean(correct[:, :k].any(axis=1))) for k in ks}
