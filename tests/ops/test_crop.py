"""crop_and_resize: NTS-Net crop of the zero-padded image + torch bilinear resize.

References: tests/fixtures/crop_resize_align_corners.npz (NTS-Net's own code in PyTorch 2.13; atol
1e-4 per its README) and a float64 NumPy oracle written here that literally pads, slices and
resizes with torch's documented coordinate rules.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.ops.crop import crop_and_resize

FIXTURE = pathlib.Path(__file__).parents[1] / 'fixtures' / 'crop_resize_align_corners.npz'


def _torch_axis(n_in, n_out, align_corners):
  """torch upsample_bilinear2d source indices/weights along one axis, float64."""
  d = np.arange(n_out, dtype=np.float64)
  if align_corners:
    src = d * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
  else:
    src = np.maximum((d + 0.5) * n_in / n_out - 0.5, 0.0)
  i0 = np.floor(src).astype(int)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w = src - i0
  return i0, i1, w


def oracle(image_hwc, box_padded, pad, out, align_corners):
  """NTS-Net: F.pad by `pad`, slice [y0:y1, x0:x1], bilinear resize to out x out (float64)."""
  x = np.pad(image_hwc.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)))
  y0, x0, y1, x1 = (int(v) for v in box_padded)
  crop = x[y0:y1, x0:x1]
  ri0, ri1, rw = _torch_axis(crop.shape[0], out, align_corners)
  ci0, ci1, cw = _torch_axis(crop.shape[1], out, align_corners)
  rows = crop[ri0] * (1 - rw)[:, None, None] + crop[ri1] * rw[:, None, None]
  return rows[:, ci0] * (1 - cw)[None, :, None] + rows[:, ci1] * cw[None, :, None]


@pytest.fixture(scope='module')
def ref():
  return np.load(FIXTURE)


@pytest.mark.parametrize('align_corners', [True, False])
def test_matches_nts_fixture(ref, align_corners):
  pad = int(ref['config/pad_side'])
  out = int(ref['config/out_size'])
  image = jnp.asarray(ref['x_nchw'].transpose(0, 2, 3, 1))  # (1, 448, 448, 1)
  boxes = jnp.asarray(ref['boxes_padded_y0x0y1x1'] - pad, jnp.float32)[None]  # (1, 6, 4)
  got = np.asarray(jax.jit(crop_and_resize, static_argnums=(2, 3))(image, boxes, out,
                                                                     align_corners))
  key = f'crops_align_corners_{str(align_corners).lower()}_nchw'
  want = ref[key].transpose(0, 2, 3, 1)
  assert got.shape == (1, 6, out, out, 1)
  np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-4)
  # The oracle agrees with the fixture too (checks the oracle itself).
  for k, box in enumerate(ref['boxes_padded_y0x0y1x1']):
    np.testing.assert_allclose(oracle(np.asarray(image[0]), box, pad, out, align_corners),
                               want[k], rtol=0, atol=1e-4)


@pytest.mark.parametrize('align_corners', [True, False])
def test_matches_oracle_random_boxes_rgb(align_corners):
  """Random integer boxes (inside, overlapping padding, up/down-sampled), 3 channels, batch 2."""
  rng = np.random.default_rng(0)
  h, w, pad, out = 40, 52, 20, 17
  images = rng.normal(size=(2, h, w, 3)).astype(np.float32)
  boxes_p = []
  for _ in range(2 * 5):
    y0 = rng.integers(0, h + 2 * pad - 2)
    x0 = rng.integers(0, w + 2 * pad - 2)
    y1 = rng.integers(y0 + 1, min(y0 + 60, h + 2 * pad) + 1)
    x1 = rng.integers(x0 + 1, min(x0 + 60, w + 2 * pad) + 1)
    boxes_p.append((y0, x0, y1, x1))
  boxes_p = np.array(boxes_p).reshape(2, 5, 4)
  got = np.asarray(jax.jit(crop_and_resize, static_argnums=(2, 3))(
      jnp.asarray(images), jnp.asarray(boxes_p - pad, jnp.float32), out, align_corners))
  for n in range(2):
    for k in range(5):
      np.testing.assert_allclose(got[n, k], oracle(images[n], boxes_p[n, k], pad, out,
                                                   align_corners), rtol=0, atol=2e-5)


def test_one_box_per_image_uint8_and_rect_output():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, size=(3, 20, 24, 3), dtype=np.uint8)
  boxes_p = np.array([[3, 4, 30, 21], [10, 10, 11, 40], [0, 0, 60, 64]])
  got = np.asarray(crop_and_resize(jnp.asarray(images), jnp.asarray(boxes_p - 20), (9, 13), True))
  assert got.shape == (3, 9, 13, 3) and got.dtype == np.float32
  for n in range(3):
    x = np.pad(images[n].astype(np.float64), ((20, 20), (20, 20), (0, 0)))
    y0, x0, y1, x1 = boxes_p[n]
    crop = x[y0:y1, x0:x1]
    ri0, ri1, rw = _torch_axis(crop.shape[0], 9, True)
    ci0, ci1, cw = _torch_axis(crop.shape[1], 13, True)
    rows = crop[ri0] * (1 - rw)[:, None, None] + crop[ri1] * rw[:, None, None]
    want = rows[:, ci0] * (1 - cw)[None, :, None] + rows[:, ci1] * cw[None, :, None]
    np.testing.assert_allclose(got[n], want, rtol=0, atol=1e-3)


def test_fractional_boxes_sample_a_linear_ramp_exactly():
  """Bilinear interpolation reproduces an affine image exactly at any in-image point."""
  h, w = 30, 40
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  image = (0.5 * yy + 0.25 * xx + 1.0)[None, :, :, None].astype(np.float32)
  box = np.array([[2.3, 5.7, 20.1, 31.4]], np.float32)
  out = 7
  got = np.asarray(crop_and_resize(jnp.asarray(image), jnp.asarray(box), out, True))[0, ..., 0]
  ys = 2.3 + np.arange(out) * (20.1 - 2.3 - 1) / (out - 1)
  xs = 5.7 + np.arange(out) * (31.4 - 5.7 - 1) / (out - 1)
  want = 0.5 * ys[:, None] + 0.25 * xs[None, :] + 1.0
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_gradient_flows_to_image_only_inside_box():
  image = jnp.ones((1, 10, 10, 1))
  box = jnp.array([[2.0, 3.0, 6.0, 8.0]])
  g = jax.grad(lambda im: crop_and_resize(im, box, 4, True).sum())(image)[0, ..., 0]
  g = np.asarray(g)
  assert g[2:6, 3:8].min() > 0
  mask = np.ones_like(g, bool)
  mask[2:6, 3:8] = False
  assert np.all(g[mask] == 0)
