"""A small ResNet-like backbone for CPU training: the embedded benchmark's stand-in for ResNet-50.

The real A3M, activation_attention and focus_discriminate recipes run on ResNet-50 (He et al. 2016,
"Deep Residual Learning for Image Recognition"); `SmallResNet` keeps what makes it a ResNet (a
strided stem, stages of residual blocks with batch normalisation, projection shortcuts where the
shape changes) at the size of the small VGG-like `SmallCNN`, behind the same interface (DESIGN.md,
"Interfaces between the parts"): uint8 (or float [0, 255]) NHWC input normalised inside the
backbone, a `dtype` (compute) field with float32 params, `feature_strides` readable without
tracing, `__call__(images, train) -> {'features': {name: NHWC map}}`.

Preprocessing (its own, since it has no ImageNet weights): `(x - 127.5) / 64` on RGB values in
[0, 255], the class attributes `mean` and `std` (the values of `SmallCNN`, so a run pretrained by
fgjax writes the same `OWN_PREPROCESSING`).

Blocks are the basic blocks of ResNet-18/34: two 3x3 conv + BN (ReLU between), added to the input
or, where the stride or the width changes, to a 1x1 conv + BN projection of it, then ReLU. Convs
pad symmetrically (1 on each side for 3x3, none for 1x1, as torchvision does), so a stride-2
block's 3x3 conv and its 1x1 shortcut sample the same pixels (Flax 'SAME' pads stride-2 convs
asymmetrically and would shift one against the other); every map's grid is ceil(H / stride).

Speed: the defaults (`widths=(32, 64, 96, 128)`, `strides=(2, 2, 2, 1)`: stride 16, an 8x8 last
grid at 128x128, like the D stream's conv4) cost about as much per train step as the D stream: a
batch-32 128x128 classifier step (backbone, pooling, linear, SGD) on 2 CPU cores took 273 ms
against the D stream's 206 ms (1.3x; 1.2x in CPU time); `strides=(1, 2, 2, 2)`, stage 1 at the
stem's 64x64 grid, took 710 ms. Its 500k parameters are 5x the D stream's 97k: the stages are
wider, not deeper.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgjax.models.backbones.preprocessing import Preprocessing
from fgjax.models.backbones.small import normalise_input

STEM_STRIDE = 2
BN_MOMENTUM = 0.9  # Flax's decay of the running averages (torch's 0.1), as SmallCNN
BN_EPS = 1e-5

# He et al. 2015 ("Delving Deep into Rectifiers") normal init on fan_out, as torchvision's ResNets.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _conv(features: int, kernel: int, stride: int, bias: bool, dtype: Any, name: str) -> nn.Conv:
  p = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((p, p), (p, p)),
                 use_bias=bias, dtype=dtype, param_dtype=jnp.float32, kernel_init=_conv_init,
                 name=name)


def _norm(use_bn: bool, train: bool, dtype: Any, name: str):
  if not use_bn:
    return lambda x: x
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


class BasicBlock(nn.Module):
  """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the stride sits in conv1 and in the
  shortcut, which is a 1x1 conv + BN projection when `project` (identity otherwise)."""
  width: int
  stride: int = 1
  project: bool = False
  use_bn: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(_conv, bias=not self.use_bn, dtype=self.dtype)
    norm = functools.partial(_norm, self.use_bn, train, self.dtype)
    y = nn.relu(norm('bn1')(conv(self.width, 3, self.stride, name='conv1')(x)))
    y = norm('bn2')(conv(self.width, 3, 1, name='conv2')(y))
    if self.project:
      x = norm('proj_bn')(conv(self.width, 1, self.stride, name='proj_conv')(x))
    return nn.relu(y + x)


class SmallResNet(nn.Module):
  """Stem (3x3 conv, stride 2, BN, ReLU; `widths[0]` channels) -> stages of `BasicBlock`s.

  Stage k (1-based) has `blocks[k]` blocks of `widths[k]` channels; its first block has stride
  `strides[k]` (and a projection shortcut when the stride is not 1 or the width changes). Returned
  maps: `features['stem']` and `features[f'stage{k}']`, each the output of its stage. With the
  defaults a 128x128 input gives 64, 32, 16, 8 and 8 pixel grids:
  `feature_strides == {'stem': 2, 'stage1': 4, 'stage2': 8, 'stage3': 16, 'stage4': 16}`.
  `feature_grid(h, w)` gives the exact grid of every map for any input size (ceil at each stride).

  Attributes:
    widths: channels per stage (the stem has `widths[0]`).
    blocks: basic blocks per stage; same length as `widths`.
    strides: stride of each stage's first block (>= 1); same length as `widths`.
    use_bn: BatchNorm after every conv (`use_running_average=not train`, momentum 0.9, eps 1e-5,
      statistics in the `batch_stats` collection); without it, convs get a bias.
    dtype: compute dtype (convs, BN, activations); params stay float32.
    preprocessing: the input normalisation of weights loaded from a weight directory; None: `mean`
      / `std`.
  """
  widths: Sequence[int] = (32, 64, 96, 128)
  blocks: Sequence[int] = (1, 1, 1, 1)
  strides: Sequence[int] = (2, 2, 2, 1)
  use_bn: bool = True
  dtype: Any = jnp.float32
  preprocessing: Preprocessing | None = None  # None: its own (x - 127.5) / 64

  mean = 127.5
  std = 64.0

  def __post_init__(self):
    # Tuples, so that the module stays hashable when configs hand in lists.
    for field in ('widths', 'blocks', 'strides'):
      object.__setattr__(self, field, tuple(getattr(self, field)))
    super().__post_init__()

  def _check(self) -> None:
    n = len(self.widths)
    if not n or min(self.widths) < 1:
      raise ValueError(f'SmallResNet widths {self.widths} must give at least one stage, each '
                       'with >= 1 channel')
    if len(self.blocks) != n or min(self.blocks) < 1:
      raise ValueError(f'SmallResNet blocks {self.blocks} must give one count >= 1 per stage of '
                       f'widths {self.widths}')
    if len(self.strides) != n or min(self.strides) < 1:
      raise ValueError(f'SmallResNet strides {self.strides} must give one stride >= 1 per stage '
                       f'of widths {self.widths}')

  @property
  def feature_strides(self) -> dict[str, int]:
    """Output stride of every returned map, known without tracing."""
    self._check()
    s = STEM_STRIDE
    strides = {'stem': s}
    for k, stride in enumerate(self.strides):
      s *= stride
      strides[f'stage{k + 1}'] = s
    return strides

  def feature_grid(self, height: int, width: int) -> dict[str, tuple[int, int]]:
    """Exact (H, W) of every returned map for an input of height x width, without tracing."""
    self._check()
    def ceil(n, s):
      return -(-n // s)
    h, w = ceil(height, STEM_STRIDE), ceil(width, STEM_STRIDE)
    grids = {'stem': (h, w)}
    for k, stride in enumerate(self.strides):
      h, w = ceil(h, stride), ceil(w, stride)
      grids[f'stage{k + 1}'] = (h, w)
    return grids

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, dict[str, jax.Array]]:
    self._check()
    x = normalise_input(images, self.preprocessing, self.mean, self.std, self.dtype)
    x = _conv(self.widths[0], 3, STEM_STRIDE, not self.use_bn, self.dtype, 'stem_conv')(x)
    x = nn.relu(_norm(self.use_bn, train, self.dtype, 'stem_bn')(x))
    feats = {'stem': x}
    for k, (width, count, stride) in enumerate(zip(self.widths, self.blocks, self.strides)):
      for j in range(count):
        s = stride if j == 0 else 1
        project = j == 0 and (s != 1 or x.shape[-1] != width)
        x = BasicBlock(width, stride=s, project=project, use_bn=self.use_bn, dtype=self.dtype,
                       name=f'stage{k + 1}_block{j + 1}')(x, train)
      feats[f'stage{k + 1}'] = x
    return {'features': feats}
