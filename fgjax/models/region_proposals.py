"""Region proposals of focus_discriminate (Feng, Fu & Zhao 2019, "Learning to Focus and
Discriminate"): candidate boxes, their scores from the attention map M, hard NMS, the top m.

The paper (section 3.2): "each pixel in M corresponds to a region in the input image I, and the
pixel value measures the discriminativeness of the corresponding region. We sort the regions
according to their discriminativeness and adopt non-maximum suppression (NMS)"; section 4.2 gives
the localised regions a resolution of 160x160 at a 448x448 input. Three readings
(`REGION_SCORINGS`, the model field `region_scoring`):

- 'anchor_mean': NTS-Net's anchors (Yang et al. 2018, "Learning to Navigate for Fine-grained
  Classification"), each scored by the mean of M over the box (`anchor_scores`). A box mean is at
  most the box's maximum, and reaches it as the box shrinks onto the peak of M: the mean ranks the
  smallest anchor at the peak first, and ties every anchor inside a plateau of M. It picks the
  smallest anchors (about 60 px at 448) whatever the extent of the attended part.
- 'anchor_excess': the same anchors scored by the attention mass above the image's mean,
  sum over the box of (M - mean(M)) (`anchor_scores(..., statistic='excess')`). Growing a box by a
  pixel changes its score by M(p) - mean(M): it gains while it takes in more-than-average attention
  and loses as soon as it takes in less. The best anchor is the one that best matches the
  above-average set of M, so its size follows the extent of the attention rather than the anchor
  set: on a uniform M every anchor scores 0 (no size preference at all, where an area^alpha
  weighting would prefer the largest anchor), on a plateau over an object the anchor covering the
  plateau wins (a smaller one misses positive mass, a larger one adds negative mass).
- 'fixed_centre': the paper's literal reading: each cell of M is the centre of one square region
  of side `region_side` x min(H, W) (160/448 by default: 160 px at 448), scored by M at the cell.

Everything has static shapes (the candidate boxes are NumPy constants of the input size and of
M's grid; scores and NMS are traced), so the selection runs inside the jitted train step. The
scores are under stop_gradient (M is), as in NTS-Net: selection is discrete.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fgjax.ops.nms import hard_nms

REGION_SCORINGS = ('anchor_mean', 'anchor_excess', 'fixed_centre')
ANCHOR_SCORES = ('mean_full', 'mean_inside')
STATISTICS = ('mean', 'excess')


def normalised_upsampled(attention: jax.Array, input_hw: tuple[int, int]) -> jax.Array:
  """(B, h, w) attention -> (B, H, W): min-max normalised to [0, 1] per image, then bilinearly
  upsampled (half-pixel centres, no antialiasing) to the input size."""
  b = attention.shape[0]
  m = attention.astype(jnp.float32)
  lo = m.min(axis=(1, 2), keepdims=True)
  hi = m.max(axis=(1, 2), keepdims=True)
  m = (m - lo) / jnp.maximum(hi - lo, 1e-12)
  return jax.image.resize(m, (b, *input_hw), 'bilinear', antialias=False)


def anchor_scores(attention: jax.Array, boxes: np.ndarray, input_hw: tuple[int, int],
                  mode: str = 'mean_full', statistic: str = 'mean') -> jax.Array:
  """(B, h, w) attention -> (B, N) scores of the integer unpadded boxes (N, 4) (y0, x0, y1, x1).

  U = `normalised_upsampled(attention)`; S = sum of U over the part of the box inside the image
  (a summed-area table); A = the box's full area (mode 'mean_full': the part outside the image
  counts as zero attention) or its area inside the image ('mean_inside').
  statistic 'mean': S / A. 'excess': S - mean(U) * A, the attention mass above the image mean
  (module docstring).
  """
  if mode not in ANCHOR_SCORES:
    raise ValueError(f"anchor_score must be 'mean_full' or 'mean_inside', got {mode!r}")
  if statistic not in STATISTICS:
    raise ValueError(f"statistic must be 'mean' or 'excess', got {statistic!r}")
  b = attention.shape[0]
  hh, ww = input_hw
  up = normalised_upsampled(attention, input_hw)
  sat = jnp.pad(jnp.cumsum(jnp.cumsum(up, axis=1), axis=2), ((0, 0), (1, 0), (1, 0)))
  y0 = np.clip(boxes[:, 0], 0, hh)
  x0 = np.clip(boxes[:, 1], 0, ww)
  y1 = np.clip(boxes[:, 2], 0, hh)
  x1 = np.clip(boxes[:, 3], 0, ww)
  flat = sat.reshape(b, -1)
  at = lambda y, x: flat[:, y * (ww + 1) + x]
  total = at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)
  if mode == 'mean_full':
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  else:
    area = (y1 - y0) * (x1 - x0)
  if statistic == 'excess':
    mean = up.mean(axis=(1, 2))[:, None]
    return total - mean * jnp.asarray(area, jnp.float32)
  return total / jnp.asarray(np.maximum(area, 1), jnp.float32)


def region_side_px(input_hw: tuple[int, int], region_side: float) -> int:
  """Side in pixels of the 'fixed_centre' regions: round(region_side * min(H, W)), at least 1."""
  return max(1, int(np.floor(region_side * min(input_hw) + 0.5)))


def fixed_centre_boxes(grid_hw: tuple[int, int], input_hw: tuple[int, int],
                       side: int) -> np.ndarray:
  """(h * w, 4) int64 square boxes of `side` px, one per cell of an h x w map in row-major order,
  centred on the cell's centre in the input ((i + 1/2) H / h, (j + 1/2) W / w), rounded to whole
  pixels (y0 = round(centre - side / 2), y1 = y0 + side). Boxes may extend past the image (the
  crops read the padding there)."""
  (gh, gw), (hh, ww) = grid_hw, input_hw
  cy = (np.arange(gh) + 0.5) * hh / gh
  cx = (np.arange(gw) + 0.5) * ww / gw
  y0 = np.floor(cy - side / 2 + 0.5).astype(np.int64)
  x0 = np.floor(cx - side / 2 + 0.5).astype(np.int64)
  y0, x0 = np.meshgrid(y0, x0, indexing='ij')
  boxes = np.stack([y0, x0, y0 + side, x0 + side], -1)
  return boxes.reshape(-1, 4)


def candidate_scores(attention: jax.Array, boxes: np.ndarray, input_hw: tuple[int, int],
                     scoring: str, anchor_score: str = 'mean_full') -> jax.Array:
  """(B, N) scores of the N candidates of `scoring` (anchors, or one box per cell of M for
  'fixed_centre', where the score is M at the cell)."""
  if scoring == 'fixed_centre':
    return attention.astype(jnp.float32).reshape(attention.shape[0], -1)
  statistic = {'anchor_mean': 'mean', 'anchor_excess': 'excess'}[scoring]
  return anchor_scores(attention, boxes, input_hw, anchor_score, statistic)


def select(scores: jax.Array, boxes: np.ndarray, num_regions: int,
           iou: float) -> tuple[jax.Array, jax.Array]:
  """Hard NMS (NTS-Net semantics) per image: (indices (B, m) in NMS order, boxes (B, m, 4) float
  (y0, x0, y1, x1))."""
  candidates = jnp.asarray(boxes, jnp.float32)
  keep = jax.vmap(lambda s: hard_nms(candidates, s, num_regions, iou))(scores)
  return keep, candidates[keep]
