"""Bilinear pooling ops for B-CNN heads: pure, jittable functions on NHWC maps.

Sources:
- Lin, RoyChowdhury & Maji, "Bilinear CNN Models for Fine-grained Visual Recognition", ICCV 2015:
  outer product of two streams at every location, sum-pooled, signed square root, l2.
- Wu & Wang 2017, "Where to Focus: Deep Attention-based Spatially Recurrent Bilinear Networks for
  Fine-Grained Visual Recognition", baselines (4) and (5): B-CNN [D,M] on 448x448 inputs, "The
  D-Net produces output 28x28 while M-Net has 27x27. Thus, a down-sampling is conducted by dropping
  a row and a column from D-Net outputs" (`crop_to_common`), and B-CNN+SPP with "a 2-level
  pyramid [He et al., 2014]: 2x2 and 1x1 subdivisions" (`spp_bilinear_pool`).
- Public heads, reproduced to float32 tolerance in tests/fixtures/bcnn_heads.npz:
  cvl-umass/bilinear-cnn `BCNN.py` (TensorProduct / (H*W), `sqrt(relu(z)+1e-5) - sqrt(relu(-z)+1e-5)`,
  `F.normalize`) and HaoMood/bilinear-cnn `src/bilinear_cnn_all.py` (`sqrt(z + 1e-5)`, no sign).

Conventions: maps are NHWC; a pooled matrix (N, Ca, Cb) flattens row-major, `z[n, Cb*i + j]`,
which is the torch `view(N, -1)` layout of both public codes.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

SQRT_VARIANTS = ('sign', 'cvl_umass', 'haomood')


def crop_to_common(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Crops two NHWC maps to their common grid min(Ha, Hb) x min(Wa, Wb).

  Trailing rows and columns are dropped (top-left corners stay aligned), as in Wu & Wang 2017:
  D-Net's 28x28 becomes M-Net's 27x27 "by dropping a row and a column". (cvl-umass instead
  resizes with bilinear interpolation; that is not what Wu & Wang 2017 do.) Shapes are static,
  so this is free under jit; maps that already agree are returned unchanged.
  """
  a, b = jnp.asarray(a), jnp.asarray(b)
  h = min(a.shape[1], b.shape[1])
  w = min(a.shape[2], b.shape[2])
  return a[:, :h, :w, :], b[:, :h, :w, :]


def _check_pair(a: jax.Array, b: jax.Array) -> None:
  if a.ndim != 4 or b.ndim != 4:
    raise ValueError(f'expected NHWC maps, got shapes {a.shape} and {b.shape}')
  if a.shape[:3] != b.shape[:3]:
    raise ValueError(
        f'maps must share N, H, W (use crop_to_common first): {a.shape} vs {b.shape}')


def _pool_sum(a: jax.Array, b: jax.Array, precision) -> jax.Array:
  """sum_{h,w} a[n,h,w,i] b[n,h,w,j] as one contraction, accumulated in float32 (or float64)."""
  acc = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
  return jnp.einsum('nhwi,nhwj->nij', a, b, precision=precision, preferred_element_type=acc)


def bilinear_pool(a: jax.Array, b: jax.Array | None = None, *, precision=None) -> jax.Array:
  """Bilinear (outer-product) pooling averaged over locations.

  `z[n, i, j] = sum_{h,w} a[n,h,w,i] * b[n,h,w,j] / (H*W)`, i.e. cvl-umass `TensorProduct`
  (`bmm(X1, X2^T) / (H*W)`). `b=None` is the symmetric one-stream case [D,D] (`b = a`).
  The sum over locations is a single einsum (a batched matmul contracting H*W), so per-location
  outer products are never materialised. It accumulates in float32 even for bfloat16/float16
  inputs (`preferred_element_type`); float64 inputs stay float64.

  Args:
    a: (N, H, W, Ca) map.
    b: (N, H, W, Cb) map on the same grid (crop with `crop_to_common` first), or None.
    precision: passed to the einsum; on GPU/TPU use `'highest'` for float32 parity with references.
  Returns:
    (N, Ca, Cb) float32 (or float64).
  """
  a = jnp.asarray(a)
  b = a if b is None else jnp.asarray(b)
  _check_pair(a, b)
  z = _pool_sum(a, b, precision)
  return z / (a.shape[1] * a.shape[2])


def spp_cells(height: int, width: int, levels: Sequence[int] = (1, 2)) -> list[tuple[int, int, int, int]]:
  """Static pyramid cells `(r0, r1, c0, c1)` (ends excluded), level by level, row-major.

  Level `l` cuts the grid at rows `floor(k*H/l)` and columns `floor(k*W/l)`, k = 0..l: the cells
  partition the grid without overlap; when l does not divide the size the later cells get the
  extra row/column (H=27, l=2: rows [0,13) and [13,27)). This is a choice: He et al. 2014 use
  windows ceil(H/l) with stride floor(H/l), which overlap on odd grids; torch's adaptive pooling
  uses [floor(kH/l), ceil((k+1)H/l)), which also overlaps. Every cell is non-empty iff H, W >= l.
  """
  cells = []
  for lvl in levels:
    if lvl < 1 or height < lvl or width < lvl:
      raise ValueError(f'pyramid level {lvl} needs a grid of at least {lvl}x{lvl}, got {height}x{width}')
    rows = [(k * height) // lvl for k in range(lvl + 1)]
    cols = [(k * width) // lvl for k in range(lvl + 1)]
    for r in range(lvl):
      for c in range(lvl):
        cells.append((rows[r], rows[r + 1], cols[c], cols[c + 1]))
  return cells


def spp_bilinear_pool(a: jax.Array, b: jax.Array | None = None, levels: Sequence[int] = (1, 2), *,
                      precision=None) -> jax.Array:
  """Spatial-pyramid bilinear pooling (B-CNN+SPP baseline of Wu & Wang 2017).

  For every cell of every pyramid level (see `spp_cells` for how odd grids split) the bilinear
  matrix is pooled over the cell's locations and divided by that cell's number of locations.
  Cells are static slices (one einsum each, a Python loop over the handful of cells only, never
  over the batch); total cost is len(levels) times one `bilinear_pool`.

  Args:
    a, b: as in `bilinear_pool` (`b=None`: symmetric).
    levels: pyramid levels; (1, 2) is the paper's 1x1 + 2x2 pyramid.
  Returns:
    (N, sum(l*l for l in levels), Ca, Cb) float32: level 1 first, then the level-2 cells
    row-major (top-left, top-right, bottom-left, bottom-right), and so on.
  """
  a = jnp.asarray(a)
  b = a if b is None else jnp.asarray(b)
  _check_pair(a, b)
  sym = b is a
  pooled = []
  for r0, r1, c0, c1 in spp_cells(a.shape[1], a.shape[2], levels):
    ac = a[:, r0:r1, c0:c1, :]
    bc = ac if sym else b[:, r0:r1, c0:c1, :]
    pooled.append(_pool_sum(ac, bc, precision) / ((r1 - r0) * (c1 - c0)))
  return jnp.stack(pooled, axis=1)


def _sqrt0(y: jax.Array) -> jax.Array:
  """sqrt(y) whose gradient at y == 0 is 0 instead of inf (double-where); NaN for y < 0 is kept."""
  zero = y == 0
  return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, y))).astype(y.dtype)


def signed_sqrt(x: jax.Array, variant: str = 'sign', eps: float = 1e-5) -> jax.Array:
  """Element-wise (signed) square root, in one of the public implementations' variants.

  - `'sign'`: `sign(x) * sqrt(|x| + eps)` (Lin et al. 2015 with an eps). Note it jumps from
    -sqrt(eps) to +sqrt(eps) across 0 (and sign(0) = 0) when eps > 0.
  - `'cvl_umass'`: `sqrt(relu(x) + eps) - sqrt(relu(-x) + eps)` (cvl-umass `BCNN.py` l.170, eps
    1e-5): continuous and odd, 0 maps to 0.
  - `'haomood'`: `sqrt(x + eps)` (HaoMood `bilinear_cnn_all.py`, eps 1e-5), no sign handling: NaN
    for x < -eps, as in the original; only meant for nonnegative features (e.g. post-ReLU [D,D]).

  Gradients are finite at x = 0 for every variant, also with eps = 0 (the sqrt's gradient is taken
  as 0 at 0).
  """
  x = jnp.asarray(x)
  if variant == 'sign':
    return jnp.sign(x) * _sqrt0(jnp.abs(x) + eps)
  if variant == 'cvl_umass':
    return _sqrt0(jax.nn.relu(x) + eps) - _sqrt0(jax.nn.relu(-x) + eps)
  if variant == 'haomood':
    return _sqrt0(x + eps)
  raise ValueError(f'unknown signed_sqrt variant {variant!r}; valid variants: {", ".join(SQRT_VARIANTS)}')


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """`x / max(||x||_2, eps)` along `axis`, like `torch.nn.functional.normalize`.

  The gradient is finite for an all-zero x (the norm's gradient is taken as 0 there).
  """
  x = jnp.asarray(x)
  norm = _sqrt0(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


def flatten_bilinear(z: jax.Array) -> jax.Array:
  """(N, ...) -> (N, prod(...)) row-major: `z[n, Cb*i + j]` for (N, Ca, Cb), pyramid cells in order."""
  z = jnp.asarray(z)
  return z.reshape(z.shape[0], -1)


def bilinear_features(a: jax.Array, b: jax.Array | None = None, *, spp_levels: Sequence[int] | None = None,
                      sqrt_variant: str = 'sign', sqrt_eps: float = 1e-5, l2_eps: float = 1e-12,
                      precision=None) -> jax.Array:
  """The whole B-CNN head before the classifier, in float32: crop, pool, flatten, sqrt, l2.

  With `spp_levels`, the pyramid cells are concatenated (level 1 first) and the concatenation is
  normalised as one vector (element-wise signed sqrt, one l2 over all cells), the usual treatment
  of an SPP descriptor; Wu & Wang 2017 do not say otherwise.

  Returns (N, Ca*Cb) or (N, P*Ca*Cb), float32.
  """
  a = jnp.asarray(a)
  b = None if b is None else jnp.asarray(b)
  if b is not None and a.shape[1:3] != b.shape[1:3]:
    a, b = crop_to_common(a, b)
  if spp_levels:
    z = spp_bilinear_pool(a, b, spp_levels, precision=precision)
  else:
    z = bilinear_pool(a, b, precision=precision)
  z = flatten_bilinear(z)
  return l2_normalize(signed_sqrt(z, sqrt_variant, sqrt_eps), axis=-1, eps=l2_eps)
