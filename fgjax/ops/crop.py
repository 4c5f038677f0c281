"""Crop-and-resize by gather-based bilinear sampling (jittable, dynamic boxes, static output size).

`crop_and_resize(images, boxes, out_size, align_corners)` reproduces, for integer boxes, exactly
what NTS-Net (yangze0930/NTS-Net `core/model.py`, `attention_net.forward`) does:

    x_pad = F.pad(x, (P, P, P, P))                           # zero padding by P on every side
    crop = x_pad[:, :, Y0:Y1, X0:X1]                         # ends excluded
    F.interpolate(crop, size=out_size, mode='bilinear', align_corners=ac)   # antialias=False

but without materialising the padded image or the crop, and with the boxes as traced values.

Box convention (the one thing a caller must get right):
  `boxes[..., :] = (y0, x0, y1, x1)` are *pixel-edge* coordinates in the pixels of the UNPADDED
  input image: pixel row r covers [r, r + 1), so the integer box (y0, x0, y1, x1) is the pixel
  slice `image[y0:y1, x0:x1]` (ends excluded) and has height y1 - y0 and width x1 - x0. Boxes may
  extend past the image on any side; everything outside the image reads as 0 (the zero padding).
  An NTS-Net box in padded coordinates (Y0, X0, Y1, X1) is therefore `(Y0 - P, X0 - P, Y1 - P,
  X1 - P)` here, whatever P is (the padding only has to be large enough for NTS-Net's slice to stay
  inside its padded tensor). Non-integer boxes are allowed (see below).

Sampling (torch's `upsample_bilinear2d` rules, per axis, with `L = y1 - y0` the crop length and
`n` the output length; computed in float32 like torch's CPU kernel):
  - align_corners=True:  src = d * (L - 1) / (n - 1)   (src = 0 when n == 1)
  - align_corners=False: src = max((d + 0.5) * L / n - 0.5, 0)
  then `src` is clipped to [0, L - 1] (torch's `i1 = min(i0 + 1, L - 1)` clamp, which only
  matters when align_corners=False upsamples; clipping is identical to it) and the zero-extended
  image is linearly interpolated at row `y0 + src` between rows floor(.) and floor(.) + 1. For an
  integer y0 this is torch's `i0 = floor(src)`, `w = src - i0` on the crop. For a non-integer y0
  the same formula is the continuous bilinear interpolation of the zero-extended image at
  `y0 + src` (the crop's first/last output samples sit on y0 and y1 - 1 with align_corners=True).
  Boxes with L < 1 sample the single point y0. No antialiasing when downsampling (as torch's
  default and NTS-Net; `jax.image.resize` would antialias and has no align_corners=True mode).

Gradients flow to the image (and, through the interpolation weights, to fractional box
coordinates; NTS-style callers pass integer boxes under stop_gradient).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _two_prod(x, y):
  """Dekker's error-free product: x * y == p + e exactly (float32, no FMA needed)."""
  p = x * y
  c = jnp.float32(4097.0)
  t = c * x
  xh = t - (t - x)
  xl = x - xh
  t = c * y
  yh = t - (t - y)
  yl = y - yh
  e = ((xh * yh - p) + xh * yl + xl * yh) + xl * yl
  return p, e


def _div(a, b):
  """float32 a / b rounded like IEEE division (torch's scale).

  XLA:CPU lowers division by a constant/broadcast to a reciprocal multiply, off by an ulp in
  ~1/3 of the cases, which moves sample points by up to ~1e-5 px; one exact-residual correction
  step restores the correctly rounded quotient.
  """
  q = a / b
  p, e = _two_prod(q, b)
  return q + ((a - p) - e) / b


def _axis_samples(start, end, out: int, size: int, align_corners: bool):
  """Per-axis (i0, i1, w, valid0, valid1) for `out` samples of the span [start, end)."""
  start = jnp.asarray(start, jnp.float32)
  length = jnp.asarray(end, jnp.float32) - start
  dst = jnp.arange(out, dtype=jnp.float32)
  if align_corners:
    scale = _div(length - 1.0, jnp.float32(out - 1)) if out > 1 else jnp.zeros_like(length)
    src = scale * dst
  else:
    scale = _div(length, jnp.float32(out))
    src = jnp.maximum(scale * (dst + 0.5) - 0.5, 0.0)
  src = jnp.clip(src, 0.0, jnp.maximum(length - 1.0, 0.0))
  # Keep large absolute coordinates out of the float32 fraction: integer part of start apart.
  start_int = jnp.floor(start)
  pos = (start - start_int) + src
  base = jnp.floor(pos)
  w = pos - base
  i0 = start_int.astype(jnp.int32) + base.astype(jnp.int32)
  i1 = i0 + 1
  valid0 = (i0 >= 0) & (i0 < size)
  valid1 = (i1 >= 0) & (i1 < size)
  return jnp.clip(i0, 0, size - 1), jnp.clip(i1, 0, size - 1), w, valid0, valid1


def _crop_one(image, box, out_hw: tuple[int, int], align_corners: bool):
  """image (H, W, C) float, box (4,) -> (oh, ow, C)."""
  h, w, _ = image.shape
  oh, ow = out_hw
  dt = image.dtype
  y0, y1_, wy, vy0, vy1 = _axis_samples(box[0], box[2], oh, h, align_corners)
  x0, x1_, wx, vx0, vx1 = _axis_samples(box[1], box[3], ow, w, align_corners)
  # The four neighbours of every output sample, gathered directly at (oh, ow) (not whole image
  # rows first: a crop is usually much narrower than the image); out-of-image neighbours read as
  # zero (the zero padding). Same arithmetic, in the same order, as blending rows then columns.
  ry, rx = (y0, y1_), (x0, x1_)
  vy, vx = (vy0.astype(dt), vy1.astype(dt)), (vx0.astype(dt), vx1.astype(dt))
  corner = lambda a, b: image[ry[a][:, None], rx[b][None, :]] * (vy[a][:, None] * vx[b][None, :])[
      :, :, None]
  wy = wy.astype(dt)[:, None, None]
  wx = wx.astype(dt)[None, :, None]
  left = corner(0, 0) * (1 - wy) + corner(1, 0) * wy
  right = corner(0, 1) * (1 - wy) + corner(1, 1) * wy
  return left * (1 - wx) + right * wx


def crop_and_resize(images: jax.Array, boxes: jax.Array, out_size: int | Sequence[int],
                    align_corners: bool = True) -> jax.Array:
  """Bilinear crop-and-resize of boxes from NHWC images (see the module docstring).

  Args:
    images: (N, H, W, C); uint8/int inputs are converted to float32, floating inputs keep their
      dtype (the interpolation runs in it).
    boxes: (N, 4) -> one box per image, or (N, K, 4) -> K boxes per image; (y0, x0, y1, x1)
      pixel-edge coordinates in the unpadded image (may be traced, fractional, or reach outside
      the image, which reads as zeros).
    out_size: static int or (oh, ow).
    align_corners: torch's `align_corners` (NTS-Net uses True).

  Returns:
    (N, oh, ow, C) or (N, K, oh, ow, C).
  """
  out_hw = (out_size, out_size) if isinstance(out_size, int) else tuple(int(s) for s in out_size)
  images, boxes = jnp.asarray(images), jnp.asarray(boxes)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    images = images.astype(jnp.float32)
  if images.ndim != 4:
    raise ValueError(f'images must be (N, H, W, C), got shape {images.shape}')
  if boxes.shape[-1] != 4 or boxes.ndim not in (2, 3) or boxes.shape[0] != images.shape[0]:
    raise ValueError(f'boxes must be (N, 4) or (N, K, 4) with N={images.shape[0]}, '
                     f'got shape {boxes.shape}')
  one = lambda img, box: _crop_one(img, box, out_hw, align_corners)
  if boxes.ndim == 2:
    return jax.vmap(one)(images, boxes)
  return jax.vmap(lambda img, bs: jax.vmap(lambda b: one(img, b))(bs))(images, boxes)
