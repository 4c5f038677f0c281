"""hard_nms: NTS-Net semantics. Exact parity with every case of tests/fixtures/nts_anchors_nms.npz
(outputs of NTS-Net's own `hard_nms`) and with a float64 NumPy port written here."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.ops.nms import hard_nms, hard_nms_with_valid

FIXTURE = pathlib.Path(__file__).parents[1] / 'fixtures' / 'nts_anchors_nms.npz'


def numpy_hard_nms(boxes, scores, topn, thr):
  """Independent float64 port of NTS-Net's loop (variable-length result)."""
  order = list(np.argsort(-scores, kind='stable'))
  boxes = boxes.astype(np.float64)
  keep = []
  while order and len(keep) < topn:
    j = order.pop(0)
    keep.append(j)
    rest = np.array(order, int)
    if not len(rest):
      break
    b = boxes[rest]
    lh = np.minimum(b[:, 2], boxes[j, 2]) - np.maximum(b[:, 0], boxes[j, 0])
    lw = np.minimum(b[:, 3], boxes[j, 3]) - np.maximum(b[:, 1], boxes[j, 1])
    inter = np.where((lh < 0) | (lw < 0), 0, lh * lw)
    union = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
             + (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]) - inter)
    order = [o for o, iou in zip(order, inter / union) if iou < thr]
  return np.array(keep)


@pytest.fixture(scope='module')
def ref():
  return np.load(FIXTURE)


@pytest.mark.parametrize('case', range(5))
def test_matches_nts_fixture(ref, case):
  boxes = ref['padded_edge_anchors']
  scores = ref[f'nms{case}_scores']
  topn, thr = int(ref[f'nms{case}_topn']), float(ref[f'nms{case}_iou'])
  want = ref[f'nms{case}_keep']
  got = jax.jit(hard_nms, static_argnums=(2, 3))(jnp.asarray(boxes, jnp.float32),
                                                 jnp.asarray(scores), topn, thr)
  assert got.dtype == jnp.int32 and got.shape == (topn,)
  np.testing.assert_array_equal(np.asarray(got), want)
  np.testing.assert_array_equal(numpy_hard_nms(boxes, scores, topn, thr), want)
  # Translation invariance: unpadded integer boxes select the same anchors.
  got_unpadded = hard_nms(jnp.asarray(boxes - 224, jnp.float32), jnp.asarray(scores), topn, thr)
  np.testing.assert_array_equal(np.asarray(got_unpadded), want)


def test_random_boxes_match_numpy_port_and_vmap():
  rng = np.random.default_rng(0)
  bsz, n = 4, 300
  y0 = rng.integers(0, 80, (bsz, n))
  x0 = rng.integers(0, 80, (bsz, n))
  boxes = np.stack([y0, x0, y0 + rng.integers(1, 40, (bsz, n)),
                    x0 + rng.integers(1, 40, (bsz, n))], -1)
  scores = rng.normal(size=(bsz, n)).astype(np.float32)
  for thr in (0.1, 0.25, 0.7):
    got = jax.jit(jax.vmap(lambda b, s: hard_nms(b, s, 12, thr)))(
        jnp.asarray(boxes, jnp.float32), jnp.asarray(scores))
    for i in range(bsz):
      np.testing.assert_array_equal(np.asarray(got[i]),
                                    numpy_hard_nms(boxes[i], scores[i], 12, thr))


def test_fewer_survivors_than_topn_repeat_the_first_pick():
  # Three nested boxes (all IoU >= 0.25 with the best) and one disjoint box: 2 survivors.
  boxes = jnp.array([[0, 0, 10, 10], [0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 30, 30]], jnp.float32)
  scores = jnp.array([0.5, 0.9, 0.1, 0.3])
  keep, valid = hard_nms_with_valid(boxes, scores, 5, 0.25)
  np.testing.assert_array_equal(np.asarray(keep), [1, 3, 1, 1, 1])
  np.testing.assert_array_equal(np.asarray(valid), [True, True, False, False, False])
  np.testing.assert_array_equal(numpy_hard_nms(np.asarray(boxes), np.asarray(scores), 5, 0.25),
                                [1, 3])


def test_threshold_is_strict():
  # IoU of the two boxes is exactly 0.25 (inter 10*2 = 20, union 50 + 50 - 20 = 80): the second
  # box is suppressed at threshold 0.25 and kept just above it.
  boxes = jnp.array([[0, 0, 10, 5], [0, 3, 10, 8]], jnp.float32)
  scores = jnp.array([1.0, 0.5])
  np.testing.assert_array_equal(np.asarray(hard_nms(boxes, scores, 2, 0.25)), [0, 0])
  np.testing.assert_array_equal(np.asarray(hard_nms(boxes, scores, 2, 0.2501)), [0, 1])
