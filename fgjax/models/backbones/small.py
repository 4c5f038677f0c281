"""A tiny VGG-style CNN backbone for CPU training and tests.

Stands in for the VGG-D / VGG-M / ResNet-50 streams (Wu & Wang 2017, Table 1) behind the
same interface (DESIGN.md, "Interfaces between the parts"): `__call__(images, train) -> {"features": {name: NHWC map}}`, uint8 input normalised
inside the backbone, `dtype` field (compute), float32 params, `feature_strides`.

Preprocessing (this backbone's own, since it has no pretrained weights): `(x - 127.5) / 64` on
RGB values in [0, 255], so inputs land in about [-2, 2]. Exposed as the class attributes
`mean` and `std`.

Speed: the first conv has stride 2 by default (`downsample=(2, 2, 2, 1)`). A stride-1 first stage
at full resolution (`downsample=(1, 2, 2, 2)`, the same 8x8 last grid for 64x64 inputs) made a
batch-32 64x64 train step ~4x slower on 2 CPU cores (about 180 ms instead of 45 ms).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgjax.models.backbones.preprocessing import Preprocessing



def normalise_input(images: jax.Array, preprocessing: Preprocessing | None, mean: float, std: float,
                    dtype: Any) -> jax.Array:
  """NHWC images with values in [0, 255] -> a small backbone's input in `dtype`: the normalisation
  of loaded weights (`preprocessing`, weights trained elsewhere bring their own) or the backbone's
  own `(x - mean) / std`. Shared by SmallCNN and SmallResNet."""
  if images.ndim != 4:
    raise ValueError(f'expected NHWC images, got shape {images.shape}')
  if preprocessing is not None:
    return preprocessing.normalize(images, dtype)
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


class SmallCNN(nn.Module):
  """Stages of conv3x3 -> BatchNorm -> ReLU; stage k (1-based) is returned as `features[f'conv{k}']`.

  Each stage first downsamples by `downsample[k]`: stage 1 through the stride of its conv
  (padding SAME: grid ceil(H/d)), later stages through a VALID d x d max-pool (grid floor(H/d));
  1 means none. The defaults, `downsample=(2, 2, 2, 1)`, turn a 64x64 input into 32, 16, 8 and 8
  pixel grids: `feature_strides == {'conv1': 2, 'conv2': 4, 'conv3': 8, 'conv4': 8}`.
  `feature_grid(h, w)` gives the exact grid of every map for any input size.

  Attributes:
    widths: channels per stage.
    dtype: compute dtype (convs, BN, activations); params stay float32.
    use_bn: BatchNorm after every conv (`use_running_average=not train`, momentum 0.9, eps 1e-5,
      statistics in the `batch_stats` collection); without it, convs get a bias.
    downsample: per-stage downsampling factor, as above; same length as `widths`.
    preprocessing: the input normalisation of weights loaded from a weight directory (a run
      pretrained by fgjax writes `OWN_PREPROCESSING`, the same values); None: `mean` / `std`.
  """
  widths: Sequence[int] = (32, 64, 64, 64)
  dtype: Any = jnp.float32
  use_bn: bool = True
  downsample: Sequence[int] = (2, 2, 2, 1)
  preprocessing: Preprocessing | None = None  # None: its own (x - 127.5) / 64

  mean = 127.5
  std = 64.0

  def __post_init__(self):
    # Tuples, so that the module stays hashable when configs hand in lists.
    object.__setattr__(self, 'widths', tuple(self.widths))
    object.__setattr__(self, 'downsample', tuple(self.downsample))
    super().__post_init__()

  def _check(self) -> None:
    if len(self.downsample) != len(self.widths) or min(self.downsample, default=1) < 1:
      raise ValueError(f'downsample {tuple(self.downsample)} must give one factor >= 1 per stage of '
                       f'widths {tuple(self.widths)}')

  @property
  def feature_strides(self) -> dict[str, int]:
    """Output stride of every returned map, known without tracing."""
    self._check()
    strides, s = {}, 1
    for k, d in enumerate(self.downsample):
      s *= d
      strides[f'conv{k + 1}'] = s
    return strides

  def feature_grid(self, height: int, width: int) -> dict[str, tuple[int, int]]:
    """Exact (H, W) of every returned map for an input of height x width, without tracing."""
    self._check()
    grids, h, w = {}, height, width
    for k, d in enumerate(self.downsample):
      h, w = (-(-h // d), -(-w // d)) if k == 0 else (h // d, w // d)
      grids[f'conv{k + 1}'] = (h, w)
    return grids

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, dict[str, jax.Array]]:
    self._check()
    x = normalise_input(images, self.preprocessing, self.mean, self.std, self.dtype)
    feats = {}
    for k, width in enumerate(self.widths):
      d = self.downsample[k]
      if k > 0 and d > 1:
        x = nn.max_pool(x, window_shape=(d, d), strides=(d, d))
      x = nn.Conv(width, (3, 3), strides=d if k == 0 else 1, padding='SAME',
                  use_bias=not self.use_bn, dtype=self.dtype, name=f'conv{k + 1}')(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name=f'bn{k + 1}')(x)
      x = nn.relu(x)
      feats[f'conv{k + 1}'] = x
    return {'features': feats}


OWN_PREPROCESSING = Preprocessing(mean=(SmallCNN.mean,) * 3, std=(SmallCNN.std,) * 3,
                                  channels='RGB', source='small_cnn (fgjax)')
