"""Bilinear CNN (B-CNN) and its spatial-pyramid variant, as Flax Linen modules.

Sources:
- Lin, RoyChowdhury & Maji, ICCV 2015, "Bilinear CNN Models for Fine-grained Visual Recognition".
- Wu & Wang 2017, "Where to Focus: Deep Attention-based Spatially Recurrent Bilinear Networks for
  Fine-Grained Visual Recognition", baselines (4) B-CNN [D,M] and (5) B-CNN+SPP: two streams
  (D-Net conv5_4+relu, 28x28; M-Net conv5+relu, 27x27), the D-Net map cropped by "dropping a row
  and a column", outer product at every location, sum-pool, normalisation, linear classifier;
  SPP: "a 2-level pyramid: 2x2 and 1x1 subdivisions".
- The head's numerics follow cvl-umass/bilinear-cnn and HaoMood/bilinear-cnn (pool / (H*W),
  signed sqrt with eps 1e-5 in both, `F.normalize` eps 1e-12); parity in tests/ops.

The math lives in `fgjax.ops.bilinear`; this module wires backbones, optional projections and the
classifier, with parameter names configs can target: `backbone_a`, `backbone_b`, `proj_a`,
`proj_b`, `classifier`.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from fgjax.models import backbones as backbones_lib, fields
from fgjax.ops import bilinear as bops

SPP_LEVELS = (1, 2)


class TwoStreamFields(nn.Module, kw_only=True):
  """The stream fields of the two-stream models (BCNN, BilinearLSTM), declared once.

  Attributes:
    backbone_a: stream A ("D" in [D,M]): a registered backbone name (`fgjax.models.backbones`), or
      a module instance (tests), bound under the name `backbone_a`.
    layer_a: key of backbone_a's feature dict used by stream A.
    backbone_a_kwargs: constructor arguments of backbone_a (e.g. widths).
    backbone_a_pretrained: weight directory from `python -m fgjax.pretrained convert` for stream A
      (its input preprocessing comes with it; the trainer loads the weights, `Method.pretrained`).
    backbone_b, layer_b, backbone_b_kwargs, backbone_b_pretrained: stream B; backbone_b '' (or
      None) = one shared backbone, layer_b '' (or None) = layer_a.
    allow_random_init: ImageNet backbones without weights are a config error unless True.
    proj_dim_a, proj_dim_b: optional 1x1 conv + ReLU (`proj_a`, `proj_b`) before pooling; 0 (or
      None) = none. Motive: memory. The bilinear vector has Ca*Cb entries (512*512 = 262k for VGG),
      so the classifier holds Ca*Cb*num_classes weights (52M, 210 MB float32 for 200 classes, plus
      as much again per optimizer slot); projecting to e.g. 128 channels divides that by 16.
  """
  backbone_a: Any = 'small_cnn'
  layer_a: str = 'conv4'
  backbone_a_kwargs: Any = flax.core.FrozenDict()
  backbone_a_pretrained: str = ''
  backbone_b: Any = ''
  layer_b: str | None = ''
  backbone_b_kwargs: Any = flax.core.FrozenDict()
  backbone_b_pretrained: str = ''
  allow_random_init: bool = False
  proj_dim_a: int | None = 0
  proj_dim_b: int | None = 0


def is_symmetric(module) -> bool:
  """One shared backbone, one layer and no second projection: the [D,D] case (b is a)."""
  return (not module.backbone_b and module.layer_b in (None, '', module.layer_a)
          and not module.proj_dim_b)


def _stream(module, which: str) -> nn.Module:
  """Backbone `which` ('a' | 'b') of a two-stream module, bound as `backbone_<which>`."""
  return backbones_lib.of(module, f'_{which}')


def _layer(feats: dict, layer: str, which: str) -> jax.Array:
  if layer not in feats:
    raise ValueError(f'{which}: layer {layer!r} not in the backbone outputs {sorted(feats)}')
  return feats[layer]


def _project(module, x: jax.Array, dim: int | None, name: str) -> jax.Array:
  if not dim:
    return x
  return nn.relu(nn.Conv(dim, (1, 1), dtype=module.dtype, name=name)(x))


def two_stream_maps(module, images: jax.Array, train: bool):
  """The two feature maps of a two-stream model, called from its compact `__call__`.

  `module` has the `TwoStreamFields` and a dtype (BCNN, BilinearLSTM); submodules `backbone_a`,
  `backbone_b`, `proj_a`, `proj_b` are bound to it here.
  Returns (a, b): b is None in the symmetric case (`is_symmetric`, where `a` is projected once);
  otherwise both maps, cropped to their common grid (dropping trailing rows/columns), projected.
  """
  feats_a = _stream(module, 'a')(images, train=train)['features']
  a = _layer(feats_a, module.layer_a, 'backbone_a')
  if is_symmetric(module):
    return _project(module, a, module.proj_dim_a, 'proj_a'), None
  layer_b = module.layer_b or module.layer_a
  shared = not module.backbone_b
  feats_b = feats_a if shared else _stream(module, 'b')(images, train=train)['features']
  b = _layer(feats_b, layer_b, 'backbone_a' if shared else 'backbone_b')
  if a.shape[1:3] != b.shape[1:3]:
    a, b = bops.crop_to_common(a, b)
  b = _project(module, b, module.proj_dim_b, 'proj_b')
  return _project(module, a, module.proj_dim_a, 'proj_a'), b


class BCNN(TwoStreamFields, kw_only=True):
  """B-CNN: backbone map(s) -> [projection] -> bilinear pool -> signed sqrt -> l2 -> linear.

  Streams (`TwoStreamFields`): with no `backbone_b` one shared backbone feeds both sides; if
  moreover `layer_b` is empty or equal to `layer_a` and there is no `proj_dim_b`, the head is the
  symmetric [D,D] B-CNN (the same map used twice, `proj_a` applied once). Otherwise the two maps
  (from two backbones, or two layers / projections of one) are cropped to their common grid (e.g.
  28x28 vs 27x27 -> 27x27, dropping trailing rows/columns) and pooled asymmetrically, giving
  Ca*Cb features with stream a on the rows (`z[n, Cb*i + j]`).

  Attributes (besides the stream fields):
    num_classes: classifier outputs.
    spp: pyramid pooling with levels (1, 2) (1x1 + 2x2, concatenated level 1 first), 5*Ca*Cb
      features (method bcnn_spp). The concatenation is normalised as one vector (elementwise signed
      sqrt, one l2 over all five cells); Wu & Wang 2017 do not say otherwise and
      published no code for it.
    sqrt_variant: 'sign' (sign(x)*sqrt(|x|+eps)), 'cvl_umass' or 'haomood'; see `ops.signed_sqrt`.
    sqrt_eps: eps inside the square root; both public PyTorch codes use 1e-5.
    l2_eps: floor of the l2 norm (torch `F.normalize` default, 1e-12).
    dropout_rate: dropout on the normalised feature before the classifier (needs a 'dropout' rng
      when training with rate > 0).
    label_smoothing: of the cross-entropy (read by the loss, `fgjax.losses.classification`).
    dtype: compute dtype of the backbones and projections. Pooling (float32 accumulation), sqrt,
      l2 and the classifier always run in float32.
    precision: einsum precision of the pooling; 'highest' on GPU/TPU for float32 parity.

  Returns from `__call__(images, train=False)`: `{'logits': (N, num_classes) float32,
  'features': (N, D) float32 normalised bilinear vector (before dropout)}`.
  """
  num_classes: int
  spp: bool = False
  sqrt_variant: str = 'sign'
  sqrt_eps: float = 1e-5
  l2_eps: float = 1e-12
  dropout_rate: float = 0.0
  label_smoothing: float = 0.0
  dtype: Any = jnp.float32
  precision: Any = None

  def __post_init__(self):
    fields.check_choice(self, 'sqrt_variant', bops.SQRT_VARIANTS)
    super().__post_init__()

  @property
  def symmetric(self) -> bool:
    """True for the one-stream [D,D] head (the same map on both sides)."""
    return is_symmetric(self)

  @property
  def feature_dim_factor(self) -> int:
    """Number of Ca x Cb blocks in `features`: 5 with SPP, else 1."""
    return sum(l * l for l in SPP_LEVELS) if self.spp else 1

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    a, b = two_stream_maps(self, images, train)
    features = bops.bilinear_features(
        a, b, spp_levels=SPP_LEVELS if self.spp else None, sqrt_variant=self.sqrt_variant,
        sqrt_eps=self.sqrt_eps, l2_eps=self.l2_eps, precision=self.precision)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, dtype=jnp.float32, name='classifier')(x)
    return {'logits': logits.astype(jnp.float32), 'features': features}
