"""Max pooling without `reduce_window` (fgjax.ops.pooling.max_pool_2x2 / max_pool_padded): values
and gradients against a float64 NumPy oracle written here, ties included.

The oracle: every window's maximum over its in-image taps (-inf padding never wins), and the
gradient of sum(w * pool(x)) routes each w to the FIRST maximal tap of its window in row-major
order (torch's max pooling and XLA's select_and_scatter rule), summed where windows overlap.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.ops.pooling import max_pool_2x2, max_pool_padded


def _oracle(x, k, s, pads):
  top, bottom, left, right = pads
  n, h, w, c = x.shape
  oh, ow = (h + top + bottom - k) // s + 1, (w + left + right - k) // s + 1
  y = np.full((n, oh, ow, c), -np.inf)
  arg = np.zeros((n, oh, ow, c, 2), np.int64)
  for r in range(oh):
    for q in range(ow):
      for i in range(k):
        for j in range(k):
          yy, xx = r * s + i - top, q * s + j - left
          if 0 <= yy < h and 0 <= xx < w:
            v = x[:, yy, xx, :]
            better = v > y[:, r, q, :]  # strict: the first maximum stays
            y[:, r, q, :] = np.where(better, v, y[:, r, q, :])
            arg[:, r, q, :, 0] = np.where(better, yy, arg[:, r, q, :, 0])
            arg[:, r, q, :, 1] = np.where(better, xx, arg[:, r, q, :, 1])
  return y, arg


def _oracle_grad(x, wgt, arg):
  g = np.zeros(x.shape)
  n, oh, ow, c = wgt.shape
  for b in range(n):
    for r in range(oh):
      for q in range(ow):
        for ch in range(c):
          yy, xx = arg[b, r, q, ch]
          g[b, yy, xx, ch] += wgt[b, r, q, ch]
  return g


@pytest.mark.parametrize('k,s,pads,shape', [
    (3, 2, (1, 1, 1, 1), (2, 9, 11, 3)),  # ResNet-50 stem pool, odd sizes
    (3, 2, (0, 1, 0, 1), (1, 8, 7, 2)),  # VGG-M pool2
    (3, 2, (0, 0, 0, 0), (1, 7, 10, 2)),
    (2, 2, (0, 0, 0, 0), (2, 7, 9, 3)),  # as max_pool_padded
])
def test_max_pool_padded_values_and_first_max_gradient_with_ties(k, s, pads, shape):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 3, shape).astype(np.float64)  # many ties
  y_ref, arg = _oracle(x, k, s, pads)
  y = max_pool_padded(jnp.asarray(x, jnp.float32), k, s, pads)
  np.testing.assert_array_equal(np.asarray(y), y_ref)
  wgt = rng.normal(size=y_ref.shape)
  grad = jax.grad(lambda v: jnp.sum(max_pool_padded(v, k, s, pads) * wgt.astype(np.float32)))(
      jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(grad), _oracle_grad(x, wgt, arg), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('shape', [(2, 8, 6, 3), (1, 9, 7, 2)])  # even, and odd (floor mode)
def test_max_pool_2x2_values_and_first_max_gradient_with_ties(shape):
  rng = np.random.default_rng(1)
  x = rng.integers(0, 2, shape).astype(np.float64)
  y_ref, arg = _oracle(x, 2, 2, (0, 0, 0, 0))
  xj = jnp.asarray(x, jnp.float32)
  np.testing.assert_array_equal(np.asarray(max_pool_2x2(xj)), y_ref)
  wgt = rng.normal(size=y_ref.shape)
  grad = jax.grad(lambda v: jnp.sum(max_pool_2x2(v) * wgt.astype(np.float32)))(xj)
  np.testing.assert_allclose(np.asarray(grad), _oracle_grad(x, wgt, arg), rtol=1e-6, atol=1e-6)


def test_bfloat16_and_jit():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 6, 6, 2)), jnp.bfloat16)
  y = jax.jit(lambda v: max_pool_padded(v, 3, 2, (1, 1, 1, 1)))(x)
  assert y.dtype == jnp.bfloat16 and y.shape == (1, 3, 3, 2)
  g = jax.grad(lambda v: jnp.sum(max_pool_2x2(v).astype(jnp.float32)))(x)
  assert g.dtype == jnp.bfloat16 and float(jnp.sum(g.astype(jnp.float32))) == 3 * 3 * 2  # one per output
