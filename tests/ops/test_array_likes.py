"""Every public op of fgjax.ops takes NumPy arrays (and other array-likes) outside of jit and
returns what it returns for the same values as jax arrays."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.ops import anchors, bilinear, crop, gaussian, nms, otsu, pooling, wavefront

MODULES = (anchors, bilinear, crop, gaussian, nms, otsu, pooling, wavefront)
# Public functions whose arguments are sizes / settings only (no arrays).
NO_ARRAYS = {'anchors.nts_default_anchors', 'bilinear.spp_cells', 'gaussian.gaussian_kernel1d',
             'pooling.adaptive_bins', 'pooling.adaptive_matrix', 'pooling.ceil_pool_size',
             'wavefront.wavefront_schedule', 'wavefront.attention_mask'}

RNG = np.random.default_rng(0)
A = RNG.normal(size=(2, 5, 6, 3)).astype(np.float32)
B = RNG.normal(size=(2, 4, 6, 2)).astype(np.float32)
BOXES = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 5, 5],
                  [2, 0, 12, 9]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7, 0.95, 0.6], np.float32)
CROP_BOXES = np.array([[0, 0, 3, 3], [1.5, 1, 4, 5.5]], np.float32)
HIDDEN = 3
W_UP = RNG.normal(size=(HIDDEN, HIDDEN)).astype(np.float32) * 0.5
W_LEFT = RNG.normal(size=(HIDDEN, HIDDEN)).astype(np.float32) * 0.5
PER_CELL = RNG.normal(size=(3 * 4, HIDDEN)).astype(np.float32)  # a 3 x 4 grid


def _cell(data, up, left, span):
  """A toy 2-D recurrence cell: h = tanh(x + up @ W_up + left @ W_left), c = c_up + c_left + h."""
  del span
  (_, c_up, r_up), (_, c_left, r_left) = up, left
  h = jnp.tanh(data[None] + r_up + r_left)
  return h, c_up + c_left + h, h.sum(-1)


# name -> (function of the array arguments, the NumPy arguments)
CASES = {
    'anchors.padded_integer_boxes': (lambda e: anchors.padded_integer_boxes(e, 224),
                                     (anchors.nts_default_anchors(448)[1],)),
    'bilinear.crop_to_common': (bilinear.crop_to_common, (A, B)),
    'bilinear.bilinear_pool': (bilinear.bilinear_pool, (A[:, :4], B)),
    'bilinear.spp_bilinear_pool': (bilinear.spp_bilinear_pool, (A,)),
    'bilinear.signed_sqrt': (lambda x: bilinear.signed_sqrt(x, 'cvl_umass'), (A,)),
    'bilinear.l2_normalize': (bilinear.l2_normalize, (A,)),
    'bilinear.flatten_bilinear': (bilinear.flatten_bilinear, (A,)),
    'bilinear.bilinear_features': (bilinear.bilinear_features, (A, B)),
    'crop.crop_and_resize': (lambda i, b: crop.crop_and_resize(i, b, (3, 4)), (A, CROP_BOXES)),
    'gaussian.gaussian_blur': (lambda x: gaussian.gaussian_blur(x, 1.5), (A[..., 0],)),
    'nms.pairwise_iou': (nms.pairwise_iou, (BOXES[0], BOXES)),
    'nms.hard_nms': (lambda b, s: nms.hard_nms(b, s, 4, 0.25), (BOXES, SCORES)),
    'nms.hard_nms_with_valid': (lambda b, s: nms.hard_nms_with_valid(b, s, 4, 0.25),
                                (BOXES, SCORES)),
    'otsu.histogram': (lambda x: otsu.histogram(x, 16), (A,)),
    'otsu.threshold': (otsu.threshold, (A,)),
    'otsu.mask': (otsu.mask, (A,)),
    'pooling.adaptive_avg_pool': (lambda x: pooling.adaptive_avg_pool(x, (2, 4)), (A,)),
    'pooling.max_pool_padded': (lambda x: pooling.max_pool_padded(x, 2, 2, (1, 0, 1, 1)), (A,)),
    'pooling.max_pool_ceil': (lambda x: pooling.max_pool_ceil(x, 2, 2), (A,)),
    'pooling.local_response_norm': (
        lambda x: pooling.local_response_norm(x, 3, 1.0, 1e-2, 0.75), (A,)),
    'pooling.max_pool_2x2': (pooling.max_pool_2x2, (A,)),
    'wavefront.take': (lambda x: wavefront.take(x, np.array([3, 0, 1]), 2), (A,)),
    'wavefront.wavefront_scan': (lambda p, u, l: wavefront.wavefront_scan(_cell, p, 3, 4, 2, u, l),
                                 (PER_CELL, W_UP, W_LEFT)),
    'wavefront.per_cell_scan': (lambda p, u, l: wavefront.per_cell_scan(_cell, p, 3, 4, 2, u, l),
                                (PER_CELL, W_UP, W_LEFT)),
}


def test_every_public_op_is_covered():
  public = {f'{m.__name__.split(".")[-1]}.{name}'
            for m in MODULES for name, f in inspect.getmembers(m, inspect.isfunction)
            if not name.startswith('_') and f.__module__ == m.__name__}
  assert public - NO_ARRAYS - set(CASES) == set()
  assert set(CASES) <= public


def _assert_same(got, want):
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(got_leaves, want_leaves):
    assert np.asarray(g).dtype == np.asarray(w).dtype
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize('name', sorted(CASES))
def test_numpy_inputs_give_the_jax_result(name):
  fn, args = CASES[name]
  assert all(isinstance(a, np.ndarray) for a in args)
  _assert_same(fn(*args), fn(*(jnp.asarray(a) for a in args)))


def test_hard_nms_takes_lists_and_float64():
  want = nms.hard_nms(jnp.asarray(BOXES), jnp.asarray(SCORES), 4, 0.25)
  np.testing.assert_array_equal(nms.hard_nms(BOXES.tolist(), SCORES.tolist(), 4, 0.25), want)
  np.testing.assert_array_equal(
      nms.hard_nms(BOXES.astype(np.float64), SCORES.astype(np.float64), 4, 0.25), want)
  # Box 3 (0.95) first; it removes box 0 (IoU 25/100, not < 0.25). Box 1 (0.8) next; it removes
  # box 4 (IoU 72/118). Box 2 (0.7, disjoint) last; the fourth slot repeats the first pick.
  keep, valid = nms.hard_nms_with_valid(BOXES, SCORES, 4, 0.25)
  np.testing.assert_array_equal(keep, [3, 1, 2, 3])
  np.testing.assert_array_equal(valid, [True, True, True, False])
