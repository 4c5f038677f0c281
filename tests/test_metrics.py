"""Re-id CMC/mAP and retrieval Recall@K against brute-force oracles (and scikit-learn's AP)."""

import numpy as np
from sklearn.metrics import average_precision_score

from fgjax import metrics


def _oracle(q, qi, qc, g, gi, gc, ranks):
  """Loop oracle: sort by cosine distance, drop same-id-same-camera, first hit and AP."""
  cmc, aps = np.zeros(max(ranks)), []
  for i in range(len(q)):
    cand = [j for j in range(len(g)) if not (gi[j] == qi[i] and gc[j] == qc[i])]
    cos = [float(q[i] @ g[j] / np.linalg.norm(q[i]) / np.linalg.norm(g[j])) for j in cand]
    order = [cand[k] for k in np.argsort(-np.asarray(cos), kind='stable')]
    rel = np.asarray([gi[j] == qi[i] for j in order])
    if not rel.any():
      continue
    cmc[int(np.argmax(rel)):] += 1
    scores = -np.arange(len(order), dtype=float)
    aps.append(average_precision_score(rel, scores))
  return {f'cmc_rank{k}': cmc[k - 1] / len(aps) for k in ranks} | {'map': np.mean(aps)}


def test_reid_matches_oracle():
  rng = np.random.default_rng(0)
  ids = np.arange(12)
  centres = rng.normal(size=(12, 16))
  gi = np.concatenate([ids, ids, ids, [0, 0]])  # identity 0: also distractor-like extras
  gc = rng.integers(0, 3, len(gi))
  g = centres[gi] + rng.normal(scale=1.2, size=(len(gi), 16))
  qi = ids
  qc = rng.integers(0, 3, len(qi))
  q = centres[qi] + rng.normal(scale=1.2, size=(len(qi), 16))
  got = metrics.reid_metrics(q, qi, qc, g, gi, gc, ranks=(1, 5))
  want = _oracle(q, qi, qc, g, gi, gc, ranks=(1, 5))
  for k in ('cmc_rank1', 'cmc_rank5', 'map'):
    np.testing.assert_allclose(got[k], want[k], rtol=1e-12)
  assert 0 < got['cmc_rank1'] < 1  # a non-trivial case


def test_same_camera_matches_are_ignored():
  q = np.asarray([[1.0, 0.0]])
  g = np.asarray([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
  got = metrics.reid_metrics(q, np.asarray([5]), np.asarray([0]), g, np.asarray([5, 5, 9]),
                             np.asarray([0, 1, 1]), ranks=(1, 2))
  # The identical image (same id, same camera) is ignored; the true match ranks 2nd behind id 9.
  assert got['cmc_rank1'] == 0.0 and got['cmc_rank2'] == 1.0 and got['map'] == 0.5


def test_recall_at_k():
  f = np.asarray([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.8, 0.6]], float)
  # Cosine neighbours, worked out by hand: 0 -> 1, 4; 1 -> 0, 4; 2 -> 3, 4; 3 -> 2, 4; 4 -> 1, 0.
  got = metrics.recall_at_k(f, np.asarray([0, 0, 1, 1, 0]), ks=(1, 2))
  assert got == {'recall_at_1': 1.0, 'recall_at_2': 1.0}
  got = metrics.recall_at_k(f, np.asarray([0, 1, 1, 0, 0]), ks=(1, 2))
  # R@1: every nearest neighbour has the other label. R@2: items 0, 3 and 4 find a match.
  assert got == {'recall_at_1': 0.0, 'recall_at_2': 0.6}
