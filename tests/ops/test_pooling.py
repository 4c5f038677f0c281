"""fgjax.ops.pooling against float64 NumPy loop oracles written from the frameworks' definitions.

- adaptive_avg_pool: torch AdaptiveAvgPool2d (aten/src/ATen/native/AdaptiveAveragePooling.cpp):
  bin i of an axis of length L into n bins is [floor(i*L/n), ceil((i+1)*L/n)).
- max_pool_padded: MatConvNet pooling_cpu.cpp: window starting at y*s - pad_top, clipped to the
  image (padding never wins).
- max_pool_ceil: caffe PoolingLayer: out = ceil((L - k) / s) + 1, decremented if the last window
  would start at or past L; windows clipped to the image.
- local_response_norm: MatConvNet vl_nnnormalize / normalize_cpu.cpp: channel window
  [k - floor((N-1)/2), k + ceil((N-1)/2)] clipped to the channels, alpha not divided by N.
Tolerances: max pooling is exact (selection); averaging in float32 of at most 14 values vs float64:
rtol 1e-6 (observed ~1e-7).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.ops import pooling


def oracle_adaptive(x, oh, ow):
  n, h, w, c = x.shape
  y = np.zeros((n, oh, ow, c))
  for i in range(oh):
    h0, h1 = math.floor(i * h / oh), math.ceil((i + 1) * h / oh)
    for j in range(ow):
      w0, w1 = math.floor(j * w / ow), math.ceil((j + 1) * w / ow)
      y[:, i, j] = x[:, h0:h1, w0:w1].astype(np.float64).mean(axis=(1, 2))
  return y


def oracle_max(x, k, s, pad, out_hw):
  """MatConvNet / caffe window loop: start = o*s - pad_before, window clipped to the image."""
  n, h, w, c = x.shape
  (kh, kw), (sh, sw), (top, left), (oh, ow) = k, s, pad, out_hw
  y = np.full((n, oh, ow, c), -np.inf)
  for i in range(oh):
    y0 = i * sh - top
    for j in range(ow):
      x0 = j * sw - left
      win = x[:, max(y0, 0):min(y0 + kh, h), max(x0, 0):min(x0 + kw, w)]
      y[:, i, j] = win.max(axis=(1, 2))
  return y


@pytest.mark.parametrize('hw,out', [((2, 2), (7, 7)), ((1, 1), (7, 7)), ((14, 14), (7, 7)),
                                    ((5, 3), (2, 4)), ((10, 7), (3, 3)), ((4, 3), (7, 7)),
                                    ((7, 7), (7, 7))])
def test_adaptive_avg_pool_matches_torch_bins(hw, out):
  x = np.random.default_rng(0).normal(size=(2, *hw, 3)).astype(np.float32)
  got = jax.jit(pooling.adaptive_avg_pool, static_argnums=1)(x, out)
  assert got.shape == (2, *out, 3)
  np.testing.assert_allclose(np.asarray(got), oracle_adaptive(x, *out), rtol=1e-6, atol=1e-7)


def test_adaptive_bins_examples():
  # torchvision VGG at 32x32 / 64x48 input: pool5 is 1x1 / 2x1, pooled to 7x7.
  assert pooling.adaptive_bins(1, 7) == [(0, 1)] * 7
  assert pooling.adaptive_bins(2, 7) == [(0, 1), (0, 1), (0, 1), (0, 2), (1, 2), (1, 2), (1, 2)]
  assert pooling.adaptive_bins(14, 7) == [(2 * i, 2 * i + 2) for i in range(7)]


def test_adaptive_avg_pool_gradient_and_dtype():
  x = jnp.ones((1, 2, 3, 4), jnp.bfloat16)
  assert pooling.adaptive_avg_pool(x, 7).dtype == jnp.bfloat16
  g = jax.grad(lambda v: pooling.adaptive_avg_pool(v, (7, 7)).sum())(jnp.ones((1, 2, 2, 1)))
  # Each input row feeds 3 bins alone (weight 1) and the middle bin (0, 2) by half: 3.5 per axis.
  np.testing.assert_allclose(np.asarray(g)[0, :, :, 0], np.full((2, 2), 3.5 * 3.5))


@pytest.mark.parametrize('size,k,s,pad', [
    ((54, 54), 3, 2, (0, 1, 0, 1)), ((13, 13), 3, 2, (0, 0, 0, 0)), ((26, 9), 3, 2, (0, 1, 0, 1)),
    ((7, 8), 3, 2, (1, 1, 1, 1)), ((5, 6), (2, 3), (2, 1), (1, 0, 2, 0))])
def test_max_pool_padded_matches_matconvnet(size, k, s, pad):
  x = np.random.default_rng(1).normal(size=(2, *size, 3)).astype(np.float32) - 5.0  # all < 0
  kk = (k, k) if isinstance(k, int) else k
  ss = (s, s) if isinstance(s, int) else s
  oh = (size[0] + pad[0] + pad[1] - kk[0]) // ss[0] + 1
  ow = (size[1] + pad[2] + pad[3] - kk[1]) // ss[1] + 1
  got = pooling.max_pool_padded(jnp.asarray(x), k, s, pad)
  assert got.shape == (2, oh, ow, 3)
  np.testing.assert_array_equal(np.asarray(got), oracle_max(x, kk, ss, (pad[0], pad[2]), (oh, ow)))


@pytest.mark.parametrize('size,k,s', [((54, 55), 3, 2), ((109, 13), 3, 2), ((5, 5), 1, 3),
                                      ((6, 7), 2, 2), ((8, 3), 3, 3)])
def test_max_pool_ceil_matches_caffe(size, k, s):
  x = np.random.default_rng(2).normal(size=(1, *size, 2)).astype(np.float32) - 5.0
  oh, ow = (pooling.ceil_pool_size(v, k, s) for v in size)
  for v, o in zip(size, (oh, ow)):  # caffe's formula, spelled out
    expect = math.ceil((v - k) / s) + 1
    assert o == (expect - 1 if (expect - 1) * s >= v else expect)
  got = pooling.max_pool_ceil(jnp.asarray(x), k, s)
  assert got.shape == (1, oh, ow, 2)
  np.testing.assert_array_equal(np.asarray(got), oracle_max(x, (k, k), (s, s), (0, 0), (oh, ow)))


def test_vggm_pool_sizes():
  # MatConvNet imagenet-vgg-m pool2 (pad [0 1 0 1]) and caffe ceil mode agree at 224 and 448 inputs.
  assert pooling.ceil_pool_size(54, 3, 2) == 27 and (54 + 1 - 3) // 2 + 1 == 27
  assert pooling.ceil_pool_size(26, 3, 2) == 13 and (26 + 1 - 3) // 2 + 1 == 13
  assert (54 - 3) // 2 + 1 == 26  # floor mode would give 26 at 448


@pytest.mark.parametrize('n', [5, 4, 1])
def test_local_response_norm_matches_matconvnet(n):
  x = np.random.default_rng(3).normal(0, 30, (2, 3, 4, 7)).astype(np.float32)
  m1 = (n - 1) // 2  # normalize_cpu.cpp: m1 = (N-1)/2 channels before, m2 = N - m1 - 1 after
  want = np.empty(x.shape)
  for k in range(x.shape[-1]):
    acc = sum(x[..., q].astype(np.float64) ** 2
              for q in range(k - m1, k + n - m1) if 0 <= q < x.shape[-1])
    want[..., k] = x[..., k] * (2.0 + 1e-4 * acc) ** -0.75
  got = pooling.local_response_norm(jnp.asarray(x), n, 2.0, 1e-4, 0.75)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
  assert np.abs(want - x).max() > 0.1 * np.abs(x).max()  # a regime where the normalisation matters
  assert pooling.local_response_norm(jnp.asarray(x, jnp.bfloat16), n, 2.0, 1e-4, 0.75).dtype == (
      jnp.bfloat16)


def test_max_pool_padded_rejects_bad_pad():
  with pytest.raises(ValueError, match='pad'):
    pooling.max_pool_padded(jnp.zeros((1, 4, 4, 1)), 2, 2, (2, 0, 0, 0))


def test_lrn_and_max_pools_are_differentiable():
  """VGG-M trains through LRN and its padded pools: gradients exist and match finite differences."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(1, 5, 5, 7)), jnp.float32)

  def loss(x):
    y = pooling.local_response_norm(x, 5, 2.0, 1e-4, 0.75)
    y = pooling.max_pool_padded(y, 3, 2, (0, 1, 0, 1))
    return jnp.sum(pooling.max_pool_ceil(y, 2, 1) ** 2)

  g = jax.jit(jax.grad(loss))(x)  # under jit, as in training (the eager path hid the bug)
  assert np.all(np.isfinite(g)) and np.any(g != 0)
  d = np.zeros(x.shape, np.float32)
  d[0, 2, 2, 3] = 1e-2
  fd = (loss(x + d) - loss(x - d)) / 2e-2
  np.testing.assert_allclose(float(g[0, 2, 2, 3]), float(fd), rtol=2e-2, atol=1e-3)
