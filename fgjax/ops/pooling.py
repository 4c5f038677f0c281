"""Pooling ops with the exact window semantics of the frameworks whose weights we import (NHWC).

- `adaptive_avg_pool`: torch's `AdaptiveAvgPool2d` (torchvision VGG pools its last map to 7x7 with
  it). Output bin i along an axis of length L averages the rows [floor(i*L/n), ceil((i+1)*L/n)),
  so bins overlap when L is not a multiple of n and repeat rows when L < n (2x2 -> 7x7). Done as
  one einsum with static averaging matrices: exact, jittable, differentiable.
- `max_pool_padded`: max pooling with explicit (top, bottom, left, right) padding that never wins
  (-inf), i.e. MatConvNet's `vl_nnpool` (its CPU/GPU kernels clip the window to the image) and
  torch/caffe max pooling with padding.
- `max_pool_ceil`: caffe's ceil-mode max pooling (output ceil((L - k) / s) + 1, the last window
  clipped to the image and dropped if it would start past the end), via bottom/right -inf padding.
- `local_response_norm`: MatConvNet's cross-channel LRN (a sum-pool of squares over channels).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
  """torch AdaptiveAvgPool bins [start, end) of an axis of length `size` split into `out` bins."""
  if size < 1 or out < 1:
    raise ValueError(f'adaptive pooling needs sizes >= 1, got {size} -> {out}')
  return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_matrix(size: int, out: int) -> np.ndarray:
  """(out, size) float32 matrix whose row i averages bin i (see `adaptive_bins`)."""
  m = np.zeros((out, size), np.float32)
  for i, (start, end) in enumerate(adaptive_bins(size, out)):
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x: jax.Array, out_hw: int | Sequence[int]) -> jax.Array:
  """torch `AdaptiveAvgPool2d(out_hw)` on a (..., H, W, C) map; returns (..., oh, ow, C).

  The identity when (H, W) == out_hw (no op is emitted). Computed in x's dtype.
  """
  oh, ow = (out_hw, out_hw) if isinstance(out_hw, int) else tuple(out_hw)
  x = jnp.asarray(x)
  h, w = x.shape[-3], x.shape[-2]
  if (h, w) == (oh, ow):
    return x
  mh = jnp.asarray(adaptive_matrix(h, oh), x.dtype)
  mw = jnp.asarray(adaptive_matrix(w, ow), x.dtype)
  return jnp.einsum('oh,...hwc,pw->...opc', mh, x, mw, precision=jax.lax.Precision.HIGHEST)


def max_pool_padded(x: jax.Array, window: int | Sequence[int], stride: int | Sequence[int],
                    pad: Sequence[int] = (0, 0, 0, 0)) -> jax.Array:
  """Max pooling of an NHWC map with padding `pad` = (top, bottom, left, right) filled with -inf.

  Output size along H: floor((H + top + bottom - kh) / sh) + 1 (MatConvNet `vl_nnpool`).
  """
  kh, kw = (window, window) if isinstance(window, int) else tuple(window)
  sh, sw = (stride, stride) if isinstance(stride, int) else tuple(stride)
  top, bottom, left, right = (int(p) for p in pad)
  x = jnp.asarray(x)
  if min(top, bottom, left, right) < 0 or max(top, bottom) >= kh or max(left, right) >= kw:
    raise ValueError(f'max_pool_padded: pad {tuple(pad)} must be >= 0 and smaller than the '
                     f'window {(kh, kw)}')
  if x.shape[1] + top + bottom < kh or x.shape[2] + left + right < kw:
    raise ValueError(f'max_pool_padded: window {(kh, kw)} larger than the padded map '
                     f'{x.shape[1:3]} + pad {tuple(pad)}')
  return _max_pool_taps(x, (kh, kw), (sh, sw), ((top, bottom), (left, right)))


def _tap_slices(xp: jax.Array, window, stride, out_hw):
  """The kh*kw strided views xp[:, i + sh*r, j + sw*c] (r < oh, c < ow), row-major over (i, j)."""
  n, _, _, ch = xp.shape
  (kh, kw), (sh, sw), (oh, ow) = window, stride, out_hw
  return [(i, j, jax.lax.slice(xp, (0, i, j, 0), (n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1,
                                                  ch), (1, sh, sw, 1)))
          for i in range(kh) for j in range(kw)]


def _pool_geometry(x, window, stride, pads):
  (top, bottom), (left, right) = pads
  hp, wp = x.shape[1] + top + bottom, x.shape[2] + left + right
  return hp, wp, ((hp - window[0]) // stride[0] + 1, (wp - window[1]) // stride[1] + 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_taps(x, window, stride, pads):
  """Max pooling (-inf padding) as the max of kh*kw strided slices, with a fast gradient.

  Same values as `lax.reduce_window(max)`; the gradient goes to the FIRST maximal tap in
  row-major window order, the rule of the `select_and_scatter` that `reduce_window`'s gradient
  lowers to (and of torch's max pooling), computed with element-wise masks and interior padding
  instead. Why: XLA:CPU's `select_and_scatter` is slow; measured fwd+bwd on 2 cores, ResNet-50's
  stem pool (8, 112, 112, 64), 3x3/2 pad 1: 560 ms with `reduce_window` (forward alone 16 ms).
  """
  _, _, out_hw = _pool_geometry(x, window, stride, pads)
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-jnp.inf)
  taps = [t for _, _, t in _tap_slices(xp, window, stride, out_hw)]
  y = taps[0]
  for t in taps[1:]:
    y = jnp.maximum(y, t)
  return y


def _max_pool_taps_fwd(x, window, stride, pads):
  y = _max_pool_taps(x, window, stride, pads)
  return y, (x, y)


def _max_pool_taps_bwd(window, stride, pads, res, g):
  x, y = res
  hp, wp, (oh, ow) = _pool_geometry(x, window, stride, pads)
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-jnp.inf)
  zero = jnp.zeros((), g.dtype)
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(xp.shape, g.dtype)
  for i, j, tap in _tap_slices(xp, window, stride, (oh, ow)):
    pick = (tap == y) & ~taken
    taken = taken | pick
    span_h, span_w = (oh - 1) * stride[0] + 1, (ow - 1) * stride[1] + 1
    dxp = dxp + jax.lax.pad(jnp.where(pick, g, zero), zero,
                            ((0, 0, 0), (i, hp - i - span_h, stride[0] - 1),
                             (j, wp - j - span_w, stride[1] - 1), (0, 0, 0)))
  (top, _), (left, _) = pads
  return (dxp[:, top:top + x.shape[1], left:left + x.shape[2], :].astype(x.dtype),)


_max_pool_taps.defvjp(_max_pool_taps_fwd, _max_pool_taps_bwd)


def ceil_pool_size(size: int, window: int, stride: int) -> int:
  """caffe's ceil-mode pooled length (no padding): ceil((L - k) / s) + 1, minus one if the last
  window would start at or past the end of the input."""
  if size < window:
    raise ValueError(f'pooling window {window} larger than the input length {size}')
  out = -(-(size - window) // stride) + 1
  if (out - 1) * stride >= size:
    out -= 1
  return out


def max_pool_ceil(x: jax.Array, window: int | Sequence[int],
                  stride: int | Sequence[int]) -> jax.Array:
  """caffe / MatConvNet-import style ceil-mode max pooling of an NHWC map (no symmetric padding):
  pads the bottom/right with -inf just enough for `ceil_pool_size` windows."""
  kh, kw = (window, window) if isinstance(window, int) else tuple(window)
  sh, sw = (stride, stride) if isinstance(stride, int) else tuple(stride)
  x = jnp.asarray(x)
  h, w = x.shape[1], x.shape[2]
  oh, ow = ceil_pool_size(h, kh, sh), ceil_pool_size(w, kw, sw)
  bottom = max(0, (oh - 1) * sh + kh - h)
  right = max(0, (ow - 1) * sw + kw - w)
  return jax.lax.reduce_window(
      x, -jnp.inf, jax.lax.max, (1, kh, kw, 1), (1, sh, sw, 1),
      ((0, 0), (0, bottom), (0, right), (0, 0)))


def local_response_norm(x: jax.Array, size, kappa, alpha, beta) -> jax.Array:
  """MatConvNet `vl_nnnormalize(x, [size kappa alpha beta])` across the channels of NHWC `x`:
  y_k = x_k / (kappa + alpha * sum_{q=k-floor((N-1)/2)}^{k+ceil((N-1)/2)} x_q^2)^beta, the window
  clipped at the first/last channel. alpha is NOT divided by N (caffe's is: caffe alpha a with
  local_size N is MatConvNet alpha a / N). Computed in float32, returned in x's dtype."""
  x = jnp.asarray(x)
  n, c = int(size), x.shape[-1]
  before, xf = (n - 1) // 2, x.astype(jnp.float32)
  # Static band matrix: band[q, k] = 1 when channel q is in channel k's window. An einsum keeps
  # this differentiable (a generic reduce_window over channels is not, in JAX 0.10).
  q, k = np.arange(c)[:, None], np.arange(c)[None, :]
  band = ((q >= k - before) & (q <= k + (n - 1 - before))).astype(np.float32)
  sq = jnp.einsum('...q,qk->...k', xf * xf, band, precision=jax.lax.Precision.HIGHEST)
  return (xf * (kappa + alpha * sq) ** (-beta)).astype(x.dtype)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2, floor mode (torch `MaxPool2d(2, 2)`, Flax `max_pool(x, (2, 2),
  strides=(2, 2))`), on NHWC, without `reduce_window`: `max_pool_padded`'s taps with no padding.

  Why: on XLA:CPU the gradient of `reduce_window` max pooling (`select_and_scatter`) is slow;
  measured fwd+bwd on 2 cores, (4, 224, 224, 64): 144 ms with `nn.max_pool` vs 37 ms (minima of
  5 interleaved runs). The taps give bit-identical values and gradients to the reshape-based
  version this replaced, in the same time (checked with ties and odd sizes).
  Gradient: all of it to the FIRST maximal tap in row-major window order (torch's and
  `select_and_scatter`'s rule), never split among ties (what `jnp.max`'s own gradient would do).
  NaN inputs: the forward propagates NaN like `jnp.max`; the gradient then goes nowhere for that
  window (torch would pick the NaN tap). Trailing odd rows/columns get zero gradient.
  """
  return _max_pool_taps(jnp.asarray(x), (2, 2), (2, 2), ((0, 0), (0, 0)))
