"""fgjax.ops.otsu against scikit-image's threshold_otsu (the reference implementation, nbins=256).

Tolerance: none. Thresholds are bin centres, so parity means the same float32 value to the bit
(and hence the same mask), under jit and vmap.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.filters import threshold_otsu

from fgjax.ops import otsu

_threshold = jax.jit(otsu.threshold)
_SHAPES = [(8, 8), (14, 14), (7, 9), (3, 5, 7), (1000,), (64, 64)]


def _random_inputs(kind, n, seed):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    shape = _SHAPES[i % len(_SHAPES)]
    if kind == 'normal':
      x = rng.standard_normal(shape) * rng.uniform(0.01, 10) + rng.uniform(-5, 5)
    elif kind == 'uniform':
      x = rng.random(shape) * rng.uniform(0.01, 100) + rng.uniform(-50, 50)
    else:  # bimodal: a bright minority over a dark background, like an attention map
      frac = rng.uniform(0.05, 0.6)
      x = np.where(rng.random(shape) < frac, rng.normal(3, 0.5, shape),
                   rng.normal(-1, rng.uniform(0.2, 1.0), shape))
    out.append(x.astype(np.float32))
  return out


@pytest.mark.parametrize('kind', ['normal', 'uniform', 'bimodal'])
def test_threshold_equals_skimage(kind):
  for x in _random_inputs(kind, 120, seed=len(kind)):
    ours, ref = np.float32(_threshold(x)), np.float32(threshold_otsu(x))
    assert ours == ref, (x.shape, ours, ref)
    np.testing.assert_array_equal(x > ours, x > ref)


def test_bimodal_threshold_separates_the_modes():
  rng = np.random.default_rng(0)
  low, high = rng.normal(0, 0.1, 300), rng.normal(5, 0.1, 100)
  x = np.concatenate([low, high]).astype(np.float32)
  t = float(_threshold(x))
  # Every split in the gap is the same partition; the first one (the lower mode's top bin) wins.
  assert low.max() - 5.5 / 256 <= t < high.min()
  assert (high > t).all()
  # skimage's threshold is a bin *centre*: low values in the upper half of that bin count as
  # foreground too (at most half a bin width above t).
  bin_width = (x.max() - x.min()) / 256
  assert np.all(low[low > t] <= t + bin_width / 2 + 1e-6)
  assert t == np.float32(threshold_otsu(x))


def test_histogram_equals_numpy():
  rng = np.random.default_rng(3)
  for x in _random_inputs('normal', 20, seed=5) + [rng.random(50).astype(np.float32)]:
    counts, centres = jax.jit(otsu.histogram)(x)
    ref_counts, edges = np.histogram(x, bins=256)
    np.testing.assert_array_equal(np.asarray(counts), ref_counts)
    np.testing.assert_array_equal(np.asarray(centres), (edges[:-1] + edges[1:]) / 2.0)


@pytest.mark.parametrize('value', [0.0, 3.5, -2.25, 1e-30])
def test_constant_input_returns_the_value_no_nan(value):
  x = np.full((6, 6), value, np.float32)
  t = _threshold(x)
  assert np.isfinite(t)
  assert np.float32(t) == np.float32(threshold_otsu(x)) == np.float32(value)
  m = jax.jit(otsu.mask)(x)  # documented: the mask of a constant map is empty
  assert m.dtype == jnp.float32 and float(m.sum()) == 0.0


def test_two_values():
  x = np.array([1.0, 1.0, 1.0, 4.0], np.float32)
  assert np.float32(_threshold(x)) == np.float32(threshold_otsu(x))
  np.testing.assert_array_equal(np.asarray(otsu.mask(x)), [0, 0, 0, 1])


def test_vmap_jit_per_image_and_no_gradient():
  xs = np.random.default_rng(9).normal(size=(12, 7, 7)).astype(np.float32)
  xs[3] = 2.0  # a constant image inside a batch
  ours = np.asarray(jax.jit(jax.vmap(otsu.threshold))(xs))
  np.testing.assert_array_equal(ours, np.array([threshold_otsu(x) for x in xs], np.float32))
  grad = jax.grad(lambda x: otsu.threshold(x) + jnp.sum(otsu.mask(x)))(jnp.asarray(xs[0]))
  assert float(jnp.abs(grad).sum()) == 0.0


def test_rejects_empty_and_bad_nbins():
  with pytest.raises(ValueError, match='at least one value'):
    otsu.threshold(jnp.zeros((0,)))
  with pytest.raises(ValueError, match='nbins'):
    otsu.threshold(jnp.ones((3,)), nbins=1)
