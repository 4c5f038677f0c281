"""Hard NMS with NTS-Net's semantics and a fixed-size output (jittable; a `lax.fori_loop`).

Reference: yangze0930/NTS-Net `core/anchors.py` `hard_nms(cdds, topn, iou_thresh)`:
  1. candidates sorted by score; repeatedly take the highest-scoring remaining one;
  2. stop when `topn` boxes are taken or no candidate is left;
  3. IoU between the taken box and every remaining candidate on the box coordinates as given
     (NTS-Net passes integer edge coordinates in the zero-padded frame; IoU is translation
     invariant, so unpadded integer boxes give the same IoU), with NO +1 in lengths/areas:
     inter = max(0, min(y1) - max(y0)) * max(0, min(x1) - max(x0)),
     iou = inter / (area_a + area_b - inter), area = (y1 - y0) * (x1 - x0);
  4. only candidates with iou < iou_threshold (strictly) stay.

Differences that cannot matter for NTS-Net's inputs, stated for completeness:
  - IoU runs in float32 (NTS-Net: float64). For integer boxes with areas < 2^24 the intersection
    and union are exact, and inter/union differs from a threshold like 0.25 by at least
    1/(4*union) unless equal, far more than float32 rounding.
  - Ties in score: NTS-Net's unstable `np.argsort` leaves their order unspecified; here the lowest
    index wins (`jnp.argmax`). NaN scores are never taken.

Fewer than `topn` survivors: NTS-Net returns a shorter list; a fixed-size output cannot, so the
remaining slots repeat the first kept index (the highest-scoring box), which keeps every returned
index a valid box for downstream gathers. `hard_nms_with_valid` also returns the (topn,) mask of
the slots that are real picks. (With NTS-Net's 1614 anchors at IoU 0.25 far more than 6 boxes
always survive: boxes at distant grid positions do not overlap.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pairwise_iou(box: jax.Array, boxes: jax.Array) -> jax.Array:
  """IoU of one (4,) box with (N, 4) boxes, (y0, x0, y1, x1), no +1 (NTS-Net / Faster R-CNN py)."""
  box = jnp.asarray(box, jnp.float32)
  boxes = jnp.asarray(boxes, jnp.float32)
  start = jnp.maximum(boxes[:, :2], box[:2])
  end = jnp.minimum(boxes[:, 2:], box[2:])
  lengths = jnp.maximum(end - start, 0.0)
  inter = lengths[:, 0] * lengths[:, 1]
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  area0 = (box[2] - box[0]) * (box[3] - box[1])
  return inter / (area + area0 - inter)


def hard_nms_with_valid(boxes: jax.Array, scores: jax.Array, topn: int,
                        iou_threshold: float) -> tuple[jax.Array, jax.Array]:
  """(indices (topn,) int32, valid (topn,) bool); see the module docstring. `boxes` and `scores`
  may be any array-likes (NumPy included): they are converted with `jnp.asarray`."""
  boxes, scores = jnp.asarray(boxes), jnp.asarray(scores)
  n = boxes.shape[0]
  if boxes.shape != (n, 4) or scores.shape != (n,):
    raise ValueError(f'boxes must be (N, 4) and scores (N,), got {boxes.shape} and {scores.shape}')
  if topn < 1:
    raise ValueError(f'topn must be >= 1, got {topn}')
  scores = scores.astype(jnp.float32)
  alive0 = ~jnp.isnan(scores)
  idx = jnp.arange(n)

  def body(i, state):
    alive, keep, valid = state
    any_alive = jnp.any(alive)
    j = jnp.argmax(jnp.where(alive, scores, -jnp.inf)).astype(jnp.int32)
    j = jnp.where(alive[j], j, jnp.argmax(alive).astype(jnp.int32))  # all alive scores -inf
    keep = keep.at[i].set(jnp.where(any_alive, j, keep[0]))
    valid = valid.at[i].set(any_alive)
    iou = pairwise_iou(boxes[j], boxes)
    alive = alive & (idx != j) & (iou < iou_threshold)
    return alive, keep, valid

  keep = jnp.zeros((topn,), jnp.int32)
  valid = jnp.zeros((topn,), bool)
  _, keep, valid = jax.lax.fori_loop(0, topn, body, (alive0, keep, valid))
  # Slots after the last pick were written before keep[0] was final only if slot 0 was empty.
  keep = jnp.where(valid, keep, keep[0])
  return keep, valid


def hard_nms(boxes: jax.Array, scores: jax.Array, topn: int, iou_threshold: float) -> jax.Array:
  """NTS-Net `hard_nms`: (topn,) int32 indices into `boxes`, highest score first.

  boxes: (N, 4) (y0, x0, y1, x1); scores: (N,) (array-likes, NumPy included). Missing picks
  repeat index keep[0].
  """
  return hard_nms_with_valid(boxes, scores, topn, iou_threshold)[0]
