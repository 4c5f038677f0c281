"""Attention from classifier activations (Shen & Liu 2018, "Generating Attention from Classifier
Activations for Fine-grained Recognition", sections 4.1-4.4).

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

Sequential training (section 4.4.2: "trained sequentially ... each scale optimised
independently"): `__call__(..., train_scale=s)` computes what the stage training scale s needs:
scales 1..s - 1 in inference mode (BatchNorm on its running averages, no statistics updated, outputs
under stop_gradient; they only give scale s its crop), scale s in training mode, and no later scale
(`fgjax.methods.activation_attention.stage_inputs` passes it). Without it every scale runs in the
mode `train` says (joint training, evaluation).

Readings of the paper's ambiguities are options, documented on `ActivationAttention`'s fields
(`attention_source`, `local_prediction`, `crop_source`, `align_corners`, `min_box_fraction`,
`frozen_scales`). An empty M_b (a constant attention map: Otsu returns the constant, nothing is
above it) gives the whole image as box.
Precision: the backbone runs in the compute dtype; the local conv, object Dense, attention, Otsu and
boxes run in float32 (thresholds of low-precision activations flip mask cells).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgjax.models import backbones as backbones_lib, fields
from fgjax.ops import crop as crop_ops
from fgjax.ops import otsu

ATTENTION_SOURCES = ('activations', 'probabilities')
LOCAL_PREDICTIONS = ('pool_then_softmax', 'softmax_then_pool')
CROP_SOURCES = ('original', 'previous')
FROZEN_SCALES = ('inference', 'training')  # the `frozen_scales` field
LOSSES = ('both', 'local', 'object')  # the `losses` field (Table 5 ablation)


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
  An empty mask gives the whole image; `min_box_fraction` enlarges small boxes (as the field
  `ActivationAttention.min_box_fraction` describes).
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


class ScaleNet(nn.Module, kw_only=True):
  """One scale: backbone, n local 1x1 classifiers (max-aggregated), Otsu mask, object classifier.

  Its fields are `ActivationAttention`'s of the same names, which documents them and passes them
  all (no defaults here); parameters `backbone`, `local` and `object`.
  """
  num_classes: int
  backbone: Any
  layer: str
  backbone_kwargs: Any
  backbone_pretrained: str
  num_local: int
  attention_source: str
  local_prediction: str
  otsu_bins: int
  dtype: Any

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    feats = backbones_lib.of(self)(images, train=train)['features']
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


class ActivationAttention(backbones_lib.BackboneFields, kw_only=True):
  """`num_scales` ScaleNets (`scale1`, `scale2`, ...) chained by attention crop-and-zoom.

  Its fields are the method's settings (`config.model` of method activation_attention).

  Attributes:
    num_classes: L, the number of classes (the local classifiers have L + 1 outputs).
    backbone: the FCN of every scale: a registered backbone name (`fgjax.models.backbones`), or a
      module instance (tests). Every scale has its own copy, params under `scale{s}/backbone`.
    layer: key of the backbone's feature dict, the map f(X) before the last pooling (section 4.1;
      'layer4' for resnet50, 'conv4' for small_cnn).
    backbone_kwargs: constructor arguments of the backbone (e.g. `{'bn_frozen': True}`, widths).
    backbone_pretrained: weight directory from `python -m fgjax.pretrained convert`, loaded into
      every scale's backbone (its input preprocessing comes with it; the trainer loads the
      weights, `Method.pretrained`).
    allow_random_init: an ImageNet backbone without weights is a config error unless True (read
      by the config checks, not by `__call__`).
    num_scales: S, the number of scales; 1 is the single-scale model.
    num_local: n, the number of local classifiers (section 5.2: 16; Figure 8 ablation: 1, 2, 4,
      8, 16).
    losses: which losses train the model, 'both' (the paper, eq. 6), 'local' or 'object' (the
      Table 5 ablation; read by the loss and the eval metrics). It also chooses which predictions
      make a scale's prediction: a head without a loss is untrained, so only the trained head
      predicts (with 'object', M_b comes from untrained local classifiers: the literal ablation).
    attention_source: M from the aggregated activations A ('activations', the paper's wording
      "max-pooling A") or from the per-location softmax of A ('probabilities', "as long as their
      probability activations are high").
    local_prediction: 'pool_then_softmax' (spatial mean of A without background, then softmax)
      or 'softmax_then_pool' (per-location softmax over L + 1, background dropped, averaged,
      renormalised over the L classes).
    otsu_bins: bins of the Otsu histogram (256, scikit-image's default).
    crop_source: 'original' crops every scale from the original input, with the boxes composed
      into its frame (one resampling, no blur accumulation); 'previous' crops scale s + 1 from
      scale s's zoomed input, a literal "recursive" reading.
    align_corners: convention of the bilinear zoom (the paper does not say; False = half-pixel
      centres).
    min_box_fraction: in [0, 1]; > 0 enlarges an attention box (about its centre, kept inside the
      image) to at least that fraction of the input height and width; 0 is the paper.
    sequential_stages: a non-empty `config.stages` must train one scale per stage, stage s
      freezing every scale but s (`fgjax.methods.activation_attention.scale_stages`, the paper's
      sequential training, section 4.4.2); with no stages all scales train jointly (not the paper;
      quick tests use it). Read by the config checks, not by `__call__`.
    first_trained_scale: in [1, num_scales]; > 1: the scales before it come trained from
      `config.init_from.path` (e.g. a num_scales=1 run, with `init_from.skip` naming the later
      scales) and `config.stages = scale_stages(num_scales, e, first=...)` trains the rest, so a
      single-scale run can be continued into a multi-scale one. Read by the config checks, not by
      `__call__`.
    frozen_scales: how a sequential stage (training scale s) runs the other scales: 'inference'
      (scales before s in inference mode: BatchNorm on its running averages, no statistics
      updated, no gradient; scales after s not computed) or 'training' (every scale in training
      mode in every stage, the frozen ones' updates zeroed by the stage's `frozen` pattern: their
      BatchNorm normalises with batch statistics and keeps updating its running averages, at
      about S times the work of stage 1; fgjax before 2026-12). Read by
      `fgjax.methods.activation_attention.stage_inputs`, which passes `train_scale` to `__call__`.
    dtype: compute dtype of the backbones; the heads, attention, Otsu and boxes run in float32.

  `__call__(images, train, train_scale=None)`: `train_scale` = s in [1, num_scales] computes
  scales 1..s only, scale s in the mode `train` says and the earlier ones in inference mode under
  stop_gradient (the outputs below then have S = s); None computes every scale in the mode `train`
  says.

  It returns (S = num_scales, grid h x w, L classes):
    logits (N, L): log of the mean over scales of the scale predictions;
    activations (N, S, h, w, L + 1), attention / mask (N, S, h, w), object_logits (N, S, L),
    local_probs / object_probs / scale_probs (N, S, L);
    boxes (N, S, 4): the attention box of every scale's M_b as (y0, x0, y1, x1) normalised to
      [0, 1] in the frame of the ORIGINAL input (the frame of the dataset's `bbox`);
    features (N, S * C): the object features of all scales.
  """
  num_classes: int
  num_scales: int = 3
  num_local: int = 16
  losses: str = 'both'
  attention_source: str = 'activations'
  local_prediction: str = 'pool_then_softmax'
  otsu_bins: int = 256
  crop_source: str = 'original'
  align_corners: bool = False
  min_box_fraction: float = 0.0
  sequential_stages: bool = True
  first_trained_scale: int = 1
  frozen_scales: str = 'inference'
  dtype: Any = jnp.float32

  def __post_init__(self):
    fields.check_choices(self, {'losses': LOSSES, 'attention_source': ATTENTION_SOURCES,
                                'local_prediction': LOCAL_PREDICTIONS,
                                'crop_source': CROP_SOURCES, 'frozen_scales': FROZEN_SCALES})
    for field, lo in (('num_scales', 1), ('num_local', 1), ('otsu_bins', 2)):
      if getattr(self, field) < lo:
        raise ValueError(f'config.model.{field} must be >= {lo}, got {getattr(self, field)}')
    if not 0.0 <= self.min_box_fraction <= 1.0:
      raise ValueError(f'config.model.min_box_fraction must be in [0, 1], got '
                       f'{self.min_box_fraction}')
    if not 1 <= self.first_trained_scale <= self.num_scales:
      raise ValueError(f'config.model.first_trained_scale must be in [1, num_scales='
                       f'{self.num_scales}], got {self.first_trained_scale}')
    super().__post_init__()

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               train_scale: int | None = None) -> dict[str, jax.Array]:
    if images.ndim != 4:
      raise ValueError(f'expected NHWC images, got shape {images.shape}')
    if train_scale is not None and not 1 <= train_scale <= self.num_scales:
      raise ValueError(f'train_scale must be None or in [1, num_scales={self.num_scales}], got '
                       f'{train_scale}')
    n, height, width, _ = images.shape
    frame = jnp.tile(jnp.array([[0.0, 0.0, height, width]], jnp.float32), (n, 1))
    x, outs, boxes = images, [], []
    for s in range(self.num_scales if train_scale is None else train_scale):
      frozen = train_scale is not None and s + 1 < train_scale
      if s > 0:
        if self.crop_source == 'original':
          x = crop_ops.crop_and_resize(images, frame, (height, width), self.align_corners)
        else:
          x = crop_ops.crop_and_resize(x, local_box, (height, width), self.align_corners)
        x = jax.lax.stop_gradient(x)
      # An injected backbone instance is bound to this module as `backbone` (never called here);
      # every scale gets its own unbound copy, bound as that scale's `backbone`.
      backbone = (self.backbone.clone(parent=None) if isinstance(self.backbone, nn.Module)
                  else self.backbone)
      out = ScaleNet(
          num_classes=self.num_classes, backbone=backbone, layer=self.layer,
          backbone_kwargs=self.backbone_kwargs, backbone_pretrained=self.backbone_pretrained,
          num_local=self.num_local, attention_source=self.attention_source,
          local_prediction=self.local_prediction, otsu_bins=self.otsu_bins, dtype=self.dtype,
          name=f'scale{s + 1}')(x, train=train and not frozen)
      if frozen:  # it only gives the trained scale its crop: no backward pass through it
        out = jax.lax.stop_gradient(out)
      local_box = jax.lax.stop_gradient(
          box_from_mask(out['mask'], height, width, self.min_box_fraction))
      frame = compose_boxes(frame, local_box, height, width)
      boxes.append(frame / jnp.array([height, width, height, width], jnp.float32))
      outs.append(out)
    stacked = {key: jnp.stack([o[key] for o in outs], axis=1) for key in outs[0]}
    if self.losses == 'both':
      scale_probs = (stacked['local_probs'] + stacked['object_probs']) / 2
    else:
      scale_probs = stacked[f'{self.losses}_probs']
    probs = jnp.mean(scale_probs, axis=1)
    features = stacked.pop('object_features')
    return {**stacked, 'scale_probs': scale_probs, 'boxes': jnp.stack(boxes, axis=1),
            'logits': jnp.log(jnp.maximum(probs, 1e-30)),
            'features': features.reshape(n, -1)}
