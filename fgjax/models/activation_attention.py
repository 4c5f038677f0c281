"""Attention from classifier activations (Shen & Liu, seed 003, sections 4.1-4.4).

One scale (`ScaleNet`, params under `scale{s}/`):
  f(X)      backbone feature map (N, h, w, C) before the last pooling (section 4.1);
  A_i       n local linear classifiers over L + 1 classes (L classes + background, the LAST
            channel), implemented as ONE 1x1 conv `local` with n * (L + 1) outputs; output channel
            i * (L + 1) + k is classifier i's activation for class k (section 5.2);
  A         = max_i A_i (eq. 1), (N, h, w, L + 1), float32;
  M         = max over the L non-background channels of A (section 4.3, Figure 2);
  M_b       = M > otsu(M), per image, computed in-graph with a fixed 256-bin histogram
            (fgjax.ops.otsu, skimage's threshold_otsu), no gradient;
  object    = Dense(L) on the spatial max of M_b * f(X) (section 4.4.2, eq. 5 input);
  local prediction  = softmax of the spatial mean of A without the background channel
            (section 4.4.3: "spatially average pooling ... A excluding the last background
            category ... naturally serves as local level prediction");
  object prediction = softmax of the object logits; the scale's prediction is their mean.
The losses (eq. 2-6) are in fgjax.methods.activation_attention.

Multi-scale (section 4.4, "recursively localizing, cropping and amplifying"): the bounding box of
M_b (feature cells mapped to input pixels: cell i covers [i H / h, (i + 1) H / h)) is cropped and
zoomed back to the input size H x W by bilinear resampling (fgjax.ops.crop.crop_and_resize,
pixel-edge boxes) and fed to the next scale, which has its own parameters. Everything is traced:
boxes are data, the output size is static, the whole pyramid is one jit. The final prediction is
the mean of the scales' predictions (probabilities); `logits` = log of that mean (so softmax of
`logits` gives it back and argmax is the paper's final prediction).

Readings of ambiguities (config options, see fgjax.methods.activation_attention):
- `attention_source`: M from the aggregated activations A ('activations', the paper's wording
  "max-pooling A") or from the per-location softmax of A ('probabilities', "as long as their
  probability activations are high").
- `local_prediction`: 'pool_then_softmax' (default, above) or 'softmax_then_pool' (per-location
  softmax over L + 1, background dropped, averaged, renormalised over the L classes).
- `crop_source`: 'original' (default) crops every scale from the original input, with the boxes
  composed into its frame (one resampling, no blur accumulation); 'previous' crops scale s + 1 from
  scale s's zoomed input, as a literal "recursive" reading.
- An empty M_b (a constant attention map: Otsu returns the constant, nothing is above it) gives the
  whole image as box. `min_box_fraction` > 0 enlarges a box (about its centre, kept inside the
  image) to at least that fraction of the input height and width; 0 (default) is the paper.
- `align_corners` of the bilinear zoom (the paper does not say; default False, half-pixel centres).
Precision: the backbone runs in the compute dtype; the local conv, object Dense, attention, Otsu and
boxes run in float32 (thresholds of low-precision activations flip mask cells).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgjax.ops import crop as crop_ops
from fgjax.ops import otsu

ATTENTION_SOURCES = ('activations', 'probabilities')
LOCAL_PREDICTIONS = ('pool_then_softmax', 'softmax_then_pool')
CROP_SOURCES = ('original', 'previous')
HEADS = ('both', 'local', 'object')


def attention_map(activations: jax.Array, source: str = 'activations') -> jax.Array:
  """M (N, h, w): max over the non-background channels (all but the last) of A or softmax(A)."""
  a = activations.astype(jnp.float32)
  if source == 'probabilities':
    a = jax.nn.softmax(a, axis=-1)
  return jnp.max(a[..., :-1], axis=-1)


def otsu_mask(attention: jax.Array, nbins: int = 256) -> jax.Array:
  """M_b (N, h, w) float32 in {0, 1}: per image, attention > Otsu threshold; no gradient."""
  return jax.vmap(lambda m: otsu.mask(m, nbins))(attention)


def local_prediction(activations: jax.Array, mode: str = 'pool_then_softmax') -> jax.Array:
  """(N, L) class probabilities of the local classifiers, background removed (section 4.4.3)."""
  a = activations.astype(jnp.float32)
  if mode == 'pool_then_softmax':
    return jax.nn.softmax(jnp.mean(a[..., :-1], axis=(1, 2)), axis=-1)
  p = jnp.mean(jax.nn.softmax(a, axis=-1)[..., :-1], axis=(1, 2))
  return p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-30)


def box_from_mask(mask: jax.Array, height: int, width: int,
                  min_box_fraction: float = 0.0) -> jax.Array:
  """(N, 4) pixel-edge boxes (y0, x0, y1, x1) in an input of height x width around M_b (N, h, w).

  Feature cell (i, j) covers input pixels [i H / h, (i + 1) H / h) x [j W / w, (j + 1) W / w).
  An empty mask gives the whole image; `min_box_fraction` enlarges small boxes (see module doc).
  """
  _, h, w = mask.shape
  rows, cols = jnp.any(mask > 0, axis=2), jnp.any(mask > 0, axis=1)

  def span(any_, n, size):
    first = jnp.argmax(any_, axis=-1)
    last = n - jnp.argmax(any_[:, ::-1], axis=-1)
    empty = ~jnp.any(any_, axis=-1)
    lo = jnp.where(empty, 0, first).astype(jnp.float32) * (size / n)
    hi = jnp.where(empty, n, last).astype(jnp.float32) * (size / n)
    if min_box_fraction > 0:
      need = min_box_fraction * size
      grow = jnp.maximum(need - (hi - lo), 0.0) / 2
      lo, hi = lo - grow, hi + grow
      shift = jnp.maximum(-lo, 0.0) - jnp.maximum(hi - size, 0.0)
      lo, hi = jnp.clip(lo + shift, 0.0, size), jnp.clip(hi + shift, 0.0, size)
    return lo, hi

  y0, y1 = span(rows, h, height)
  x0, x1 = span(cols, w, width)
  return jnp.stack([y0, x0, y1, x1], axis=-1)


def compose_boxes(outer: jax.Array, inner: jax.Array, height: int, width: int) -> jax.Array:
  """`inner` boxes, given in the pixels of `outer` zoomed to height x width, in outer's frame."""
  sy = (outer[:, 2] - outer[:, 0]) / height
  sx = (outer[:, 3] - outer[:, 1]) / width
  return jnp.stack([outer[:, 0] + inner[:, 0] * sy, outer[:, 1] + inner[:, 1] * sx,
                    outer[:, 0] + inner[:, 2] * sy, outer[:, 1] + inner[:, 3] * sx], axis=-1)


class ScaleNet(nn.Module):
  """One scale: backbone, n local 1x1 classifiers (max-aggregated), Otsu mask, object classifier."""
  num_classes: int
  backbone: nn.Module
  layer: str
  num_local: int = 16
  attention_source: str = 'activations'
  local_prediction: str = 'pool_then_softmax'
  otsu_bins: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    feats = self.backbone(images, train=train)['features']
    if self.layer not in feats:
      raise ValueError(f'backbone has no feature map {self.layer!r}; it has {sorted(feats)}')
    # The heads run in float32 whatever the backbone's compute dtype: M_b and the boxes are
    # thresholds of their outputs, and low-precision activations would flip mask cells (cheap:
    # a 1x1 conv and a Dense on the last feature map).
    f = feats[self.layer].astype(jnp.float32)
    n, h, w, _ = f.shape
    k = self.num_classes + 1
    a = nn.Conv(self.num_local * k, (1, 1), dtype=jnp.float32, param_dtype=jnp.float32,
                name='local')(f)
    a_i = a.astype(jnp.float32).reshape(n, h, w, self.num_local, k)
    activations = jnp.max(a_i, axis=3)  # eq. 1
    attention = attention_map(activations, self.attention_source)
    mask = otsu_mask(jax.lax.stop_gradient(attention), self.otsu_bins)
    pooled = jnp.max(mask[..., None] * f, axis=(1, 2))  # max-pool of M_b f(X)
    object_logits = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                             name='object')(pooled)
    return {'activations': activations, 'attention': attention, 'mask': mask,
            'object_logits': object_logits, 'object_features': pooled,
            'local_probs': local_prediction(activations, self.local_prediction),
            'object_probs': jax.nn.softmax(object_logits, axis=-1)}


class ActivationAttention(nn.Module):
  """`num_scales` ScaleNets (`scale1`, `scale2`, ...) chained by attention crop-and-zoom.

  `__call__(images, train)` returns (S = num_scales, grid h x w, L classes):
    logits (N, L): log of the mean over scales of the scale predictions;
    activations (N, S, h, w, L + 1), attention / mask (N, S, h, w), object_logits (N, S, L),
    local_probs / object_probs / scale_probs (N, S, L);
    boxes (N, S, 4): the attention box of every scale's M_b as (y0, x0, y1, x1) normalised to
      [0, 1] in the frame of the ORIGINAL input (the frame of the dataset's `bbox`);
    features (N, S * C): the object features of all scales.
  `heads` chooses which predictions make a scale's prediction: 'both' (the paper), or only the
  'local' / 'object' one (for models trained with one loss, Table 5).
  """
  num_classes: int
  backbone: nn.Module
  layer: str
  num_scales: int = 3
  num_local: int = 16
  attention_source: str = 'activations'
  local_prediction: str = 'pool_then_softmax'
  heads: str = 'both'
  otsu_bins: int = 256
  crop_source: str = 'original'
  align_corners: bool = False
  min_box_fraction: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if images.ndim != 4:
      raise ValueError(f'expected NHWC images, got shape {images.shape}')
    n, height, width, _ = images.shape
    frame = jnp.tile(jnp.array([[0.0, 0.0, height, width]], jnp.float32), (n, 1))
    x, outs, boxes = images, [], []
    for s in range(self.num_scales):
      if s > 0:
        if self.crop_source == 'original':
          x = crop_ops.crop_and_resize(images, frame, (height, width), self.align_corners)
        else:
          x = crop_ops.crop_and_resize(x, local_box, (height, width), self.align_corners)
        x = jax.lax.stop_gradient(x)
      out = ScaleNet(self.num_classes, self.backbone.clone(parent=None), self.layer,
                     self.num_local, self.attention_source, self.local_prediction,
                     self.otsu_bins, self.dtype, name=f'scale{s + 1}')(x, train=train)
      local_box = jax.lax.stop_gradient(
          box_from_mask(out['mask'], height, width, self.min_box_fraction))
      frame = compose_boxes(frame, local_box, height, width)
      boxes.append(frame / jnp.array([height, width, height, width], jnp.float32))
      outs.append(out)
    stacked = {key: jnp.stack([o[key] for o in outs], axis=1) for key in outs[0]}
    if self.heads == 'both':
      scale_probs = (stacked['local_probs'] + stacked['object_probs']) / 2
    else:
      scale_probs = stacked[f'{self.heads}_probs']
    probs = jnp.mean(scale_probs, axis=1)
    features = stacked.pop('object_features')
    return {**stacked, 'scale_probs': scale_probs, 'boxes': jnp.stack(boxes, axis=1),
            'logits': jnp.log(jnp.maximum(probs, 1e-30)),
            'features': features.reshape(n, -1)}
