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


# ----------------------------------------------------------------------------------------------
# Re-identification (Market-1501 / CUHK03 protocols, as torchreid's eval_market1501 / eval_cuhk03)
# ----------------------------------------------------------------------------------------------

def _chunk_rows(num_cols: int, budget: int = 1 << 22) -> int:
  """Rows per chunk so that a (rows, num_cols) work array has about `budget` entries."""
  return max(1, budget // max(num_cols, 1))


def distance_matrix(query: np.ndarray, gallery: np.ndarray, metric: str = 'euclidean',
                    normalize: bool = False) -> np.ndarray:
  """(Q, G) float64 distances: 'euclidean' = squared Euclidean (torchreid), 'cosine' = 1 - cos.

  `normalize` l2-normalises both sets first (then both metrics rank identically).
  """
  if metric not in ('euclidean', 'cosine'):
    raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
  q, g = query.astype(np.float64), gallery.astype(np.float64)
  if normalize or metric == 'cosine':
    q, g = _normalise(q), _normalise(g)
  if metric == 'cosine':
    return 1.0 - q @ g.T
  d = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * (q @ g.T)
  return np.maximum(d, 0.0)


def _first_hits_and_ap(distmat, q_pids, g_pids, q_camids, g_camids):
  """Per query: rank (0-based, among kept gallery items) of the first true match, and AP.

  Gallery items with the query's id AND camera are dropped; queries without a remaining match get
  rank -1 and AP nan. Vectorised over chunks of queries; ties in distance are broken by gallery
  order (stable sort).
  """
  num_q, num_g = distmat.shape
  first = np.full(num_q, -1, np.int64)
  ap = np.full(num_q, np.nan)
  step = _chunk_rows(num_g)
  for s in range(0, num_q, step):
    e = min(s + step, num_q)
    order = np.argsort(distmat[s:e], axis=1, kind='stable')
    gp, gc = g_pids[order], g_camids[order]
    same_id = gp == q_pids[s:e, None]
    keep = ~(same_id & (gc == q_camids[s:e, None]))
    hit = same_id & keep
    kept_rank = np.cumsum(keep, axis=1) - 1  # rank among kept items (valid where keep)
    num_rel = hit.sum(1)
    valid = num_rel > 0
    first_pos = np.argmax(hit, axis=1)
    first[s:e] = np.where(valid, kept_rank[np.arange(e - s), first_pos], -1)
    hits_so_far = np.cumsum(hit, axis=1)
    prec = np.where(hit, hits_so_far / np.maximum(kept_rank + 1.0, 1.0), 0.0).sum(1)
    ap[s:e] = np.where(valid, prec / np.maximum(num_rel, 1), np.nan)
  return first, ap


def _check_reid_inputs(distmat, q_pids, g_pids, q_camids, g_camids):
  distmat = np.asarray(distmat)
  arrays = [np.asarray(a) for a in (q_pids, g_pids, q_camids, g_camids)]
  if distmat.ndim != 2 or distmat.shape != (len(arrays[0]), len(arrays[1])) or \
      len(arrays[2]) != len(arrays[0]) or len(arrays[3]) != len(arrays[1]):
    raise ValueError(f'distmat {distmat.shape} does not match {len(arrays[0])} query and '
                     f'{len(arrays[1])} gallery ids / cameras')
  return (distmat, *arrays)


def reid_cmc_map(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50):
  """Market-1501 protocol (torchreid `eval_market1501`): returns (cmc, mAP).

  For each query, gallery items with the same id AND the same camera are dropped; queries with no
  remaining true match are skipped. cmc[r] = fraction of valid queries whose first true match is
  within the top r+1 (shape (min(max_rank, G),)); AP = mean over the true matches of the
  precision at each (non-interpolated); mAP over valid queries. Raises if no query is valid.
  Stable ranking (torchreid's np.argsort is not stable: the two differ only on exact ties).
  """
  distmat, q_pids, g_pids, q_camids, g_camids = _check_reid_inputs(
      distmat, q_pids, g_pids, q_camids, g_camids)
  max_rank = min(max_rank, distmat.shape[1])
  first, ap = _first_hits_and_ap(distmat, q_pids, g_pids, q_camids, g_camids)
  valid = first >= 0
  if not valid.any():
    raise ValueError('no query has a true match in the gallery (after dropping same-id, '
                     'same-camera items)')
  cmc = (first[valid, None] <= np.arange(max_rank)[None, :]).mean(0)
  return cmc, float(ap[valid].mean())


def reid_cmc_map_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                        num_repeats: int = 10, seed: int = 0):
  """CUHK03 single-gallery-shot (torchreid `eval_cuhk03`): returns (cmc, mAP).

  Per query (after dropping same-id same-camera items), each repeat keeps one uniformly random
  gallery item per identity; the CMC of the repeats is averaged. mAP is computed on the full kept
  gallery, as torchreid does. Randomness: `np.random.default_rng(seed)` (torchreid uses the global
  NumPy state, so its draws differ; the expectation is the same).
  """
  distmat, q_pids, g_pids, q_camids, g_camids = _check_reid_inputs(
      distmat, q_pids, g_pids, q_camids, g_camids)
  max_rank = min(max_rank, distmat.shape[1])
  _, ap = _first_hits_and_ap(distmat, q_pids, g_pids, q_camids, g_camids)
  rng = np.random.default_rng(seed)
  _, g_index = np.unique(g_pids, return_inverse=True)
  num_ids = g_index.max() + 1
  cmcs = []
  for i in range(len(q_pids)):
    order = np.argsort(distmat[i], kind='stable')
    keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
    order = order[keep]
    hit = g_pids[order] == q_pids[i]
    if not hit.any():
      continue
    ids = g_index[order]
    # One random item per identity and repeat: the item with the largest uniform key wins.
    keys = rng.random((num_repeats, len(order)))
    best = np.full((num_repeats, num_ids), -1.0)
    np.maximum.at(best, (np.arange(num_repeats)[:, None], ids[None, :]), keys)
    chosen = keys == best[:, ids]  # (R, n_kept), exactly one True per present identity
    # Rank of the chosen true match = number of chosen items before it.
    rank = np.cumsum(chosen, axis=1) - 1
    first = np.where(chosen & hit[None, :], rank, np.iinfo(np.int64).max).min(1)
    cmcs.append((first[:, None] <= np.arange(max_rank)[None, :]).mean(0))
  if not cmcs:
    raise ValueError('no query has a true match in the gallery')
  return np.mean(cmcs, axis=0), float(np.nanmean(ap))


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
  """k-reciprocal re-ranking (Zhong et al., CVPR 2017), as torchreid's `re_ranking`.

  Takes the (Q,G), (Q,Q), (G,G) distance matrices and returns re-ranked (Q,G) distances:
  - all distances are squared and each row divided by its maximum (torchreid squares its inputs,
    which are themselves squared Euclidean distances);
  - R(i, k1) = k-reciprocal neighbours of i (i in the top k1+1 of j and j in the top k1+1 of i),
    expanded by R(j, round(k1/2)) of each member j when more than 2/3 of it lies in R(i, k1);
  - V[i, j] = exp(-d(i, j)) normalised over that set (0 elsewhere); local query expansion: row i
    replaced by the mean of the rows of its k2 nearest neighbours (if k2 > 1);
  - Jaccard distance 1 - sum min(V_i, V_j) / sum max(V_i, V_j) = 1 - m / (2 - m);
  - final = (1 - lambda) * Jaccard + lambda * original.
  Memory O((Q+G)^2); computed in float32 as torchreid does.
  """
  q_g_dist, q_q_dist, g_g_dist = map(np.asarray, (q_g_dist, q_q_dist, g_g_dist))
  num_q = q_g_dist.shape[0]
  orig = np.concatenate([np.concatenate([q_q_dist, q_g_dist], 1),
                         np.concatenate([q_g_dist.T, g_g_dist], 1)], 0)
  orig = np.power(orig, 2).astype(np.float32)
  orig = np.transpose(orig / np.max(orig, axis=0))
  num_all = orig.shape[0]
  initial_rank = np.argsort(orig, axis=1, kind='stable').astype(np.int64)
  half = int(np.around(k1 / 2.0))

  def reciprocal(i, k):
    forward = initial_rank[i, :k + 1]
    backward = initial_rank[forward, :k + 1]
    return forward[np.any(backward == i, axis=1)]

  v = np.zeros_like(orig)
  for i in range(num_all):
    base = reciprocal(i, k1)
    expansion = [base]
    for cand in base:
      cand_set = reciprocal(cand, half)
      if len(np.intersect1d(cand_set, base)) > 2.0 / 3 * len(cand_set):
        expansion.append(cand_set)
    idx = np.unique(np.concatenate(expansion))
    weight = np.exp(-orig[i, idx])
    v[i, idx] = weight / np.sum(weight)
  if k2 != 1:
    v = np.stack([v[initial_rank[i, :k2]].mean(0) for i in range(num_all)]).astype(np.float32)
  jaccard = np.zeros((num_q, num_all), np.float32)
  for i in range(num_q):
    nz = np.nonzero(v[i])[0]
    m = np.minimum(v[i, nz][None, :], v[:, nz]).sum(1)
    jaccard[i] = 1 - m / (2.0 - m)
  final = jaccard * (1 - lambda_value) + orig[:num_q] * lambda_value
  return final[:, num_q:]


def reid_distances(query: np.ndarray, gallery: np.ndarray, metric: str = 'euclidean',
                   normalize: bool = True, rerank: bool = False) -> np.ndarray:
  """(Q, G) query-to-gallery distances as `reid_metrics` ranks them (ties: gallery order, a stable
  sort): `distance_matrix`, then k-reciprocal `re_ranking` with the query-query and
  gallery-gallery distances when `rerank` (so a query's re-ranked row depends on the other
  queries, as in evaluation). Also used by fgjax.search."""
  dist = distance_matrix(query, gallery, metric, normalize)
  if rerank:
    dist = re_ranking(dist, distance_matrix(query, query, metric, normalize),
                      distance_matrix(gallery, gallery, metric, normalize))
  return dist


def reid_metrics(query: np.ndarray, query_ids: np.ndarray, query_cams: np.ndarray,
                 gallery: np.ndarray, gallery_ids: np.ndarray, gallery_cams: np.ndarray,
                 ranks=(1, 5, 10), metric: str = 'euclidean', normalize: bool = True,
                 protocol: str = 'market1501', rerank: bool = False, seed: int = 0
                 ) -> dict[str, float]:
  """Re-id metrics from features: {'cmc_rank{k}', 'map', 'num_queries', ...} (metrics.json).

  Distances by `distance_matrix` (default: l2-normalised features, squared Euclidean, which ranks
  as cosine); optional k-reciprocal re-ranking; `protocol` 'market1501' (`reid_cmc_map`) or
  'cuhk03' (`reid_cmc_map_cuhk03`, single-gallery-shot, 10 repeats). Queries with no true match
  are skipped and counted.
  """
  query_ids, query_cams = np.asarray(query_ids), np.asarray(query_cams)
  gallery_ids, gallery_cams = np.asarray(gallery_ids), np.asarray(gallery_cams)
  dist = reid_distances(query, gallery, metric, normalize, rerank)
  max_rank = max(ranks)
  if protocol == 'market1501':
    cmc, mean_ap = reid_cmc_map(dist, query_ids, gallery_ids, query_cams, gallery_cams, max_rank)
  elif protocol == 'cuhk03':
    cmc, mean_ap = reid_cmc_map_cuhk03(dist, query_ids, gallery_ids, query_cams, gallery_cams,
                                       max_rank, seed=seed)
  else:
    raise ValueError(f"protocol must be 'market1501' or 'cuhk03', got {protocol!r}")
  has_match = np.asarray([np.any((gallery_ids == qi) & (gallery_cams != qc))
                          for qi, qc in zip(query_ids, query_cams)])
  out = {f'cmc_rank{k}': float(cmc[min(k, len(cmc)) - 1]) for k in ranks}
  out.update({'map': mean_ap, 'num_queries': int(has_match.sum()),
              'num_queries_without_match': int((~has_match).sum())})
  return out


# ----------------------------------------------------------------------------------------------
# Retrieval: Recall@K and NMI
# ----------------------------------------------------------------------------------------------

def recall_at_k(embeddings: np.ndarray, labels: np.ndarray, ks=(1, 2, 4, 8)) -> dict[str, float]:
  """Retrieval Recall@K within one set: each item queries all the others (itself excluded) by
  cosine similarity; R@K = fraction of items with a same-label item among their K nearest.
  Ties broken by index (stable). Chunked over queries."""
  f, labels = _normalise(embeddings), np.asarray(labels)
  kmax, n = max(ks), len(labels)
  found = np.zeros((n, len(ks)), bool)
  step = _chunk_rows(n)
  for s in range(0, n, step):
    e = min(s + step, n)
    sim = f[s:e] @ f.T
    sim[np.arange(e - s), np.arange(s, e)] = -np.inf
    top = np.argsort(-sim, axis=1, kind='stable')[:, :kmax]
    correct = labels[top] == labels[s:e, None]
    found[s:e] = np.stack([correct[:, :k].any(1) for k in ks], 1)
  return {f'recall_at_{k}': float(found[:, i].mean()) for i, k in enumerate(ks)}


def kmeans(x: np.ndarray, n_clusters: int, seed: int = 0, num_iters: int = 100,
           tol: float = 1e-7) -> np.ndarray:
  """Lloyd's k-means with k-means++ seeding, deterministic from `seed`: cluster index per row.

  Empty clusters are re-seeded with the point farthest from its centre."""
  x = np.asarray(x, np.float64)
  n = len(x)
  if not 1 <= n_clusters <= n:
    raise ValueError(f'n_clusters must be in [1, {n}], got {n_clusters}')
  rng = np.random.default_rng(seed)
  centres = [x[rng.integers(n)]]
  d2 = ((x - centres[0]) ** 2).sum(1)
  for _ in range(1, n_clusters):
    p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
    centres.append(x[rng.choice(n, p=p)])
    d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
  centres = np.stack(centres)
  assign = np.zeros(n, np.int64)
  for _ in range(num_iters):
    dist = (x * x).sum(1)[:, None] + (centres * centres).sum(1)[None] - 2 * x @ centres.T
    assign = np.argmin(dist, 1)
    new = centres.copy()
    for c in range(n_clusters):
      members = assign == c
      if members.any():
        new[c] = x[members].mean(0)
      else:
        far = np.argmax(dist[np.arange(n), assign])
        new[c] = x[far]
        assign[far] = c
    shift = ((new - centres) ** 2).sum()
    centres = new
    if shift <= tol:
      break
  dist = (x * x).sum(1)[:, None] + (centres * centres).sum(1)[None] - 2 * x @ centres.T
  return np.argmin(dist, 1)


def normalized_mutual_info(labels: np.ndarray, assignment: np.ndarray) -> float:
  """NMI with the arithmetic-mean normalisation: I(U;V) / ((H(U) + H(V)) / 2)."""
  _, u = np.unique(labels, return_inverse=True)
  _, v = np.unique(assignment, return_inverse=True)
  n = len(u)
  table = np.zeros((u.max() + 1, v.max() + 1))
  np.add.at(table, (u, v), 1)
  pij = table / n
  pi, pj = pij.sum(1), pij.sum(0)
  nz = pij > 0
  mi = float((pij[nz] * np.log(pij[nz] / np.outer(pi, pj)[nz])).sum())
  h = lambda p: float(-(p[p > 0] * np.log(p[p > 0])).sum())
  hu, hv = h(pi), h(pj)
  if hu == 0 and hv == 0:
    return 1.0
  return max(mi, 0.0) / ((hu + hv) / 2) if hu + hv > 0 else 0.0


def nmi(embeddings: np.ndarray, labels: np.ndarray, n_clusters: int | None = None,
        seed: int = 0) -> float:
  """NMI between `labels` and the k-means clustering of the l2-normalised embeddings
  (n_clusters = number of distinct labels by default)."""
  labels = np.asarray(labels)
  n_clusters = n_clusters or len(np.unique(labels))
  return normalized_mutual_info(labels, kmeans(_normalise(embeddings), n_clusters, seed))
