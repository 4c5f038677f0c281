"""Re-id (CMC/mAP, CUHK03 single-gallery-shot, k-reciprocal re-ranking) and retrieval (Recall@K,
k-means NMI) metrics against independent oracles: slow obvious loops, brute-force enumeration,
scikit-learn's NMI."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from fgjax import metrics


def _random_problem(rng, num_q=30, num_g=80, num_ids=10, num_cams=3, ties=False):
  q_pids = rng.integers(0, num_ids, num_q)
  g_pids = rng.integers(0, num_ids, num_g)
  q_cams = rng.integers(0, num_cams, num_q)
  g_cams = rng.integers(0, num_cams, num_g)
  dist = rng.random((num_q, num_g))
  if ties:
    dist = np.round(dist * 5) / 5  # many exact ties: ranking must follow gallery order
  return dist, q_pids, g_pids, q_cams, g_cams


def _market_oracle(dist, q_pids, g_pids, q_cams, g_cams, max_rank):
  """Loop per query: sorted gallery list, drop same-id-same-cam, first hit and AP by counting."""
  cmc_sum, aps = np.zeros(max_rank), []
  for i in range(len(q_pids)):
    ranked = sorted(range(len(g_pids)), key=lambda j: (dist[i, j], j))
    ranked = [j for j in ranked if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
    rel = [g_pids[j] == q_pids[i] for j in ranked]
    if not any(rel):
      continue
    first = rel.index(True)
    for r in range(max_rank):
      if first <= r:
        cmc_sum[r] += 1
    precisions, hits = [], 0
    for pos, is_rel in enumerate(rel):
      if is_rel:
        hits += 1
        precisions.append(hits / (pos + 1))
    aps.append(sum(precisions) / len(precisions))
  return cmc_sum / len(aps), sum(aps) / len(aps)


@pytest.mark.parametrize('seed,ties', [(0, False), (1, False), (2, True)])
def test_reid_cmc_map_matches_loop_oracle(seed, ties):
  rng = np.random.default_rng(seed)
  problem = _random_problem(rng, ties=ties)
  cmc, mean_ap = metrics.reid_cmc_map(*problem, max_rank=20)
  want_cmc, want_ap = _market_oracle(*problem, max_rank=20)
  assert cmc.shape == (20,)
  np.testing.assert_allclose(cmc, want_cmc, rtol=0, atol=1e-12)
  np.testing.assert_allclose(mean_ap, want_ap, rtol=1e-12)
  assert 0 < mean_ap < 1 and cmc[0] < cmc[-1]  # non-trivial


def test_reid_cmc_map_chunked_equals_unchunked(monkeypatch):
  rng = np.random.default_rng(3)
  problem = _random_problem(rng, num_q=25, num_g=40)
  full = metrics.reid_cmc_map(*problem, max_rank=10)
  monkeypatch.setattr(metrics, '_chunk_rows', lambda num_cols, budget=0: 3)  # 3 queries a chunk
  chunked = metrics.reid_cmc_map(*problem, max_rank=10)
  np.testing.assert_array_equal(full[0], chunked[0])
  assert full[1] == chunked[1]


def test_reid_queries_without_match_are_skipped_and_max_rank_clipped():
  dist = np.asarray([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
  # Query 0 (id 5, camera 0): its match (camera 1) ranks first. Query 1 (id 7, camera 1): its only
  # same-id item has its camera, so it is skipped (not counted as a miss).
  cmc, mean_ap = metrics.reid_cmc_map(dist, np.asarray([5, 7]), np.asarray([5, 9, 7]),
                                      np.asarray([0, 1]), np.asarray([1, 1, 1]), max_rank=50)
  np.testing.assert_array_equal(cmc, [1.0, 1.0, 1.0])  # clipped to G = 3
  assert mean_ap == 1.0
  # With the match also seen by camera 0, no query is valid: an error, not a silent 0.
  with pytest.raises(ValueError, match='no query'):
    metrics.reid_cmc_map(dist[:1], np.asarray([5]), np.asarray([5, 9, 7]), np.asarray([0]),
                         np.asarray([0, 1, 1]))


def _cuhk03_exact_oracle(dist, q_pids, g_pids, q_cams, g_cams, max_rank):
  """Expected single-gallery-shot CMC by enumerating every choice of one item per identity."""
  per_query = []
  for i in range(len(q_pids)):
    kept = [j for j in range(len(g_pids)) if not (g_pids[j] == q_pids[i] and
                                                  g_cams[j] == q_cams[i])]
    if not any(g_pids[j] == q_pids[i] for j in kept):
      continue
    by_id = {}
    for j in kept:
      by_id.setdefault(g_pids[j], []).append(j)
    cmc, count = np.zeros(max_rank), 0
    for choice in itertools.product(*by_id.values()):
      ranked = sorted(choice, key=lambda j: (dist[i, j], j))
      first = [g_pids[j] == q_pids[i] for j in ranked].index(True)
      cmc += np.arange(max_rank) >= first
      count += 1
    per_query.append(cmc / count)
  return np.mean(per_query, 0)


def test_cuhk03_single_gallery_shot_converges_to_exact_expectation():
  rng = np.random.default_rng(4)
  dist, q_pids, g_pids, q_cams, g_cams = _random_problem(rng, num_q=6, num_g=10, num_ids=4,
                                                         num_cams=2)
  want = _cuhk03_exact_oracle(dist, q_pids, g_pids, q_cams, g_cams, 4)
  cmc, mean_ap = metrics.reid_cmc_map_cuhk03(dist, q_pids, g_pids, q_cams, g_cams, max_rank=4,
                                             num_repeats=20000, seed=0)
  # Monte-Carlo error of a mean of 6 x 20000 Bernoulli draws: sd < 0.0015; 0.01 is > 6 sd.
  np.testing.assert_allclose(cmc, want, atol=0.01)
  assert want[0] < 0.99  # the sampling matters in this problem
  # mAP is the full-gallery one, as in torchreid.
  assert mean_ap == pytest.approx(metrics.reid_cmc_map(dist, q_pids, g_pids, q_cams, g_cams)[1])
  # Default: 10 repeats, deterministic from the seed.
  a = metrics.reid_cmc_map_cuhk03(dist, q_pids, g_pids, q_cams, g_cams, max_rank=4, seed=1)
  b = metrics.reid_cmc_map_cuhk03(dist, q_pids, g_pids, q_cams, g_cams, max_rank=4, seed=1)
  np.testing.assert_array_equal(a[0], b[0])


def test_cuhk03_equals_market_when_every_identity_has_one_gallery_item():
  rng = np.random.default_rng(5)
  g_pids = np.arange(12)
  q_pids = rng.integers(0, 12, 20)
  dist = rng.random((20, 12))
  q_cams, g_cams = np.zeros(20, int), np.ones(12, int)
  a = metrics.reid_cmc_map_cuhk03(dist, q_pids, g_pids, q_cams, g_cams, max_rank=12)
  b = metrics.reid_cmc_map(dist, q_pids, g_pids, q_cams, g_cams, max_rank=12)
  np.testing.assert_allclose(a[0], b[0], atol=1e-12)


def _rerank_oracle(qg, qq, gg, k1, k2, lam):
  """Zhong et al. 2017 written from the definitions with Python sets and loops (float64)."""
  d = np.block([[qq, qg], [qg.T, gg]]).astype(np.float64) ** 2
  n = len(d)
  d = np.stack([d[i] / d[i].max() for i in range(n)])  # torchreid: each row by its maximum
  order = [sorted(range(n), key=lambda j: (d[i, j], j)) for i in range(n)]
  near = lambda i, k: set(order[i][:k + 1])  # N(i, k): the k+1 nearest, i itself included

  def recip(i, k):
    return {j for j in near(i, k) if i in near(j, k)}

  v = np.zeros((n, n))
  for i in range(n):
    r = recip(i, k1)
    expanded = set(r)
    for j in r:
      rj = recip(j, int(round(k1 / 2)))
      if len(rj & r) > 2 / 3 * len(rj):
        expanded |= rj
    total = sum(np.exp(-d[i, j]) for j in expanded)
    for j in expanded:
      v[i, j] = np.exp(-d[i, j]) / total
  if k2 > 1:
    v = np.stack([np.mean([v[j] for j in order[i][:k2]], 0) for i in range(n)])
  nq = qg.shape[0]
  out = np.zeros(qg.shape)
  for i in range(nq):
    for g in range(qg.shape[1]):
      j = nq + g
      jac = 1 - np.minimum(v[i], v[j]).sum() / np.maximum(v[i], v[j]).sum()
      out[i, g] = (1 - lam) * jac + lam * d[i, j]
  return out


@pytest.mark.parametrize('k1,k2', [(4, 3), (6, 1)])
def test_re_ranking_matches_set_oracle(k1, k2):
  rng = np.random.default_rng(6)
  centres = rng.normal(size=(5, 8))
  q = centres[rng.integers(0, 5, 7)] + 0.7 * rng.normal(size=(7, 8))
  g = centres[rng.integers(0, 5, 15)] + 0.7 * rng.normal(size=(15, 8))
  qg = metrics.distance_matrix(q, g)
  qq, gg = metrics.distance_matrix(q, q), metrics.distance_matrix(g, g)
  got = metrics.re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=0.3)
  want = _rerank_oracle(qg, qq, gg, k1, k2, 0.3)
  np.testing.assert_allclose(got, want, atol=2e-5)  # the implementation is float32 (torchreid)
  assert not np.allclose(np.argsort(got, 1), np.argsort(qg, 1))  # re-ranking changed orders


def test_distance_matrix_against_loops():
  rng = np.random.default_rng(7)
  q, g = rng.normal(size=(4, 5)), rng.normal(size=(6, 5))
  eu = metrics.distance_matrix(q, g, 'euclidean')
  co = metrics.distance_matrix(q, g, 'cosine')
  for i in range(4):
    for j in range(6):
      assert eu[i, j] == pytest.approx(((q[i] - g[j]) ** 2).sum(), rel=1e-10)
      cos = q[i] @ g[j] / np.linalg.norm(q[i]) / np.linalg.norm(g[j])
      assert co[i, j] == pytest.approx(1 - cos, abs=1e-12)


def test_reid_metrics_dict_and_rerank_option():
  rng = np.random.default_rng(8)
  ids = np.repeat(np.arange(6), 3)
  cams = np.tile(np.arange(3), 6)
  centres = rng.normal(size=(6, 8))
  feats = centres[ids] + 0.6 * rng.normal(size=(18, 8))
  q, g = cams == 0, cams != 0
  plain = metrics.reid_metrics(feats[q], ids[q], cams[q], feats[g], ids[g], cams[g])
  cmc, mean_ap = metrics.reid_cmc_map(metrics.distance_matrix(feats[q], feats[g], normalize=True),
                                      ids[q], ids[g], cams[q], cams[g])
  assert plain['cmc_rank1'] == cmc[0] and plain['cmc_rank5'] == cmc[4]
  assert plain['map'] == mean_ap and plain['num_queries'] == 6
  reranked = metrics.reid_metrics(feats[q], ids[q], cams[q], feats[g], ids[g], cams[g],
                                  rerank=True)
  assert set(reranked) == set(plain) and 0 <= reranked['map'] <= 1


def test_recall_at_k_matches_brute_force():
  rng = np.random.default_rng(9)
  x = rng.normal(size=(40, 6))
  labels = rng.integers(0, 5, 40)
  got = metrics.recall_at_k(x, labels, ks=(1, 2, 4, 8))
  for k in (1, 2, 4, 8):
    hits = 0
    for i in range(40):
      sims = [(-(x[i] @ x[j]) / np.linalg.norm(x[i]) / np.linalg.norm(x[j]), j)
              for j in range(40) if j != i]
      hits += any(labels[j] == labels[i] for _, j in sorted(sims)[:k])
    assert got[f'recall_at_{k}'] == hits / 40


def test_nmi_equals_sklearn_on_the_same_assignment():
  rng = np.random.default_rng(10)
  x = rng.normal(size=(120, 5))
  labels = rng.integers(0, 6, 120)
  assignment = metrics.kmeans(metrics._normalise(x), 6, seed=3)
  want = normalized_mutual_info_score(labels, assignment)
  assert metrics.nmi(x, labels, 6, seed=3) == pytest.approx(want, abs=1e-12)
  for a, b in ((labels, rng.integers(0, 4, 120)), (labels, labels), (labels, np.zeros(120))):
    assert metrics.normalized_mutual_info(a, b) == pytest.approx(
        normalized_mutual_info_score(a, b), abs=1e-12)


def test_kmeans_is_deterministic_and_finds_separated_clusters():
  rng = np.random.default_rng(11)
  centres = 10 * rng.normal(size=(4, 3))
  labels = np.repeat(np.arange(4), 25)
  x = centres[labels] + 0.1 * rng.normal(size=(100, 3))
  a = metrics.kmeans(x, 4, seed=0)
  np.testing.assert_array_equal(a, metrics.kmeans(x, 4, seed=0))
  assert normalized_mutual_info_score(labels, a) == pytest.approx(1.0)
  assert metrics.nmi(x, labels, seed=5) == pytest.approx(1.0)
