"""ResNet-50 in the torchvision (v1.5) layout, and the exact mapping of a torchvision state_dict.

Architecture = `torchvision.models.resnet50`: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (padding 1,
padded with -inf), then 3, 4, 6, 3 bottleneck blocks (1x1 -> 3x3 -> 1x1, expansion 4) whose first
block in layer2..4 has its stride 2 in the 3x3 conv (v1.5; v1 puts it in the first 1x1). Conv
padding is explicit and symmetric like torch (k // 2 on each side), never Flax 'SAME', which pads
stride-2 convs asymmetrically (0 before, 1 after on even sizes) and would break parity.
No conv biases. BatchNorm eps 1e-5, momentum 0.9 in Flax terms (= torch momentum 0.1).

Parameter names mirror torchvision's so the mapping reads one-to-one: `conv1`, `bn1`,
`layer{i}_{j}/{conv1,bn1,conv2,bn2,conv3,bn3,downsample_conv,downsample_bn}` and `fc`
(torch `layer{i}.{j}.downsample.0/1` -> `downsample_conv/downsample_bn`).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fgjax.models.backbones.convert import (ConversionError, SourceTensors, check_tree,
                                            conv_oihw_to_hwio, linear_to_dense, nest)
from fgjax.models.backbones.preprocessing import TORCHVISION, Preprocessing
from fgjax.ops.pooling import max_pool_padded

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (bottleneck width, blocks, stride)
EXPANSION = 4
BN_EPS = 1e-5

# torchvision's init: kaiming_normal_(mode='fan_out', nonlinearity='relu') for convs; nn.Linear's
# default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the fc kernel.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_fc_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str,
          dot_1x1: bool = False) -> nn.Module:
  if kernel == 1 and dot_1x1:
    return Conv1x1(features, stride=stride, dtype=dtype, name=name)
  p = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((p, p), (p, p)),
                 use_bias=False, dtype=dtype, param_dtype=jnp.float32, kernel_init=_conv_init,
                 name=name)


class Conv1x1(nn.Module):
  """A bias-free 1x1 convolution computed as a matrix product over the channel axis.

  Same parameter as the `nn.Conv` it replaces (`kernel`, shape (1, 1, in, out), float32, the same
  initialiser and RNG path, so checkpoints and torchvision weights load unchanged) and the same
  output (stride s with no padding = every s-th row and column, then the product). Why: XLA:CPU
  lowers a 1x1 convolution's backward-filter (and, less so, its forward and backward-input) far
  slower than the equivalent dot; measured on 2 cores, B=8 (docs/benchmarks.md): 56x56 64->256
  fwd/dx/dw 14.7/27.7/84.1 ms as a conv vs 9.0/12.0/37.2 ms as a dot; the stride-2 256->512
  downsample's dw 142.8 vs 22.5 ms.
  """
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', _conv_init, (1, 1, x.shape[-1], self.features), jnp.float32)
    if self.stride > 1:
      x = x[:, ::self.stride, ::self.stride, :]
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return jax.lax.dot_general(x, kernel[0, 0], (((x.ndim - 1,), (0,)), ((), ())))


class Bottleneck(nn.Module):
  """torchvision `Bottleneck` (v1.5): the stride sits in the 3x3 conv."""
  width: int
  stride: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32
  use_running_average: bool = True
  bn_momentum: float = 0.9
  dot_1x1: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bn = functools.partial(nn.BatchNorm, use_running_average=self.use_running_average,
                           momentum=self.bn_momentum, epsilon=BN_EPS, dtype=self.dtype,
                           param_dtype=jnp.float32)
    out_features = self.width * EXPANSION
    y = nn.relu(bn(name='bn1')(_conv(self.width, 1, 1, self.dtype, 'conv1', self.dot_1x1)(x)))
    y = nn.relu(bn(name='bn2')(_conv(self.width, 3, self.stride, self.dtype, 'conv2')(y)))
    y = bn(name='bn3')(_conv(out_features, 1, 1, self.dtype, 'conv3', self.dot_1x1)(y))
    if self.downsample:
      x = bn(name='downsample_bn')(
          _conv(out_features, 1, self.stride, self.dtype, 'downsample_conv', self.dot_1x1)(x))
    return nn.relu(y + x)


class ResNet50(nn.Module):
  """torchvision ResNet-50 (v1.5) returning `{'features': {stem, layer1..layer4}}` NHWC maps.

  `images`: uint8 or float in [0, 255], RGB NHWC, normalised by `preprocessing` (torchvision's
  ImageNet mean/std by default). `features['stem']` is the map after the 3x3/2 max-pool (stride
  4, 64 channels); `layer1..layer4` have 256, 512, 1024, 2048 channels at strides 4, 8, 16, 32
  (a 448x448 input gives a 14x14x2048 layer4). With `include_top=True` the output also has
  `logits` (float32, (N, num_classes)): global average pool + Dense `fc`.

  Attributes:
    include_top: add the global-average-pool + `fc` classifier and return `logits`.
    num_classes: classifier width (1000 for ImageNet weights).
    dtype: compute dtype (convs, BN, activations, returned maps); params stay float32, logits
      are returned in float32.
    preprocessing: mean/std/channel order of the weights.
    bn_frozen: True makes every BatchNorm use its running statistics (inference mode) even when
      `train=True` and never update them, so `batch_stats` stay as loaded. Meant for fine-tuning
      with small batches (e.g. 8-16 images of 448x448), whose batch statistics are too noisy to
      normalise with or to average into the ImageNet statistics. The BN scale/bias remain params.
    bn_momentum: Flax BatchNorm momentum (decay of the running averages): 0.9 = torch's 0.1.
    dot_1x1: compute the bottlenecks' 1x1 convolutions (conv1, conv3, downsample_conv) as matrix
      products (`Conv1x1`; same parameters and outputs). False keeps `nn.Conv` (the A/B switch of
      benchmarks/; about 2x slower 1x1 convolutions on XLA:CPU).
  """
  include_top: bool = False
  num_classes: int = 1000
  dtype: Any = jnp.float32
  preprocessing: Preprocessing = TORCHVISION
  bn_frozen: bool = False
  bn_momentum: float = 0.9
  dot_1x1: bool = True

  @property
  def feature_strides(self) -> dict[str, int]:
    """Output stride of every returned map, known without tracing."""
    return {'stem': 4, 'layer1': 4, 'layer2': 8, 'layer3': 16, 'layer4': 32}

  def feature_grid(self, height: int, width: int) -> dict[str, tuple[int, int]]:
    """Exact (H, W) of every returned map for a height x width input (each stride 2 is a ceil)."""
    def half(n):
      return -(-n // 2)
    h, w = half(half(height)), half(half(width))  # conv1, max-pool
    grids = {'stem': (h, w), 'layer1': (h, w)}
    for i in (2, 3, 4):
      h, w = half(h), half(w)
      grids[f'layer{i}'] = (h, w)
    return grids

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, Any]:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'expected RGB NHWC images, got shape {images.shape}')
    use_running_average = self.bn_frozen or not train
    x = self.preprocessing.normalize(images, self.dtype)
    x = _conv(64, 7, 2, self.dtype, 'conv1')(x)
    x = nn.BatchNorm(use_running_average=use_running_average, momentum=self.bn_momentum,
                     epsilon=BN_EPS, dtype=self.dtype, param_dtype=jnp.float32, name='bn1')(x)
    x = nn.relu(x)
    x = max_pool_padded(x, 3, 2, (1, 1, 1, 1))  # pads with -inf; fast gradient (ops.pooling)
    feats = {'stem': x}
    for i, (width, blocks, stride) in enumerate(STAGES, start=1):
      for j in range(blocks):
        x = Bottleneck(width, stride=stride if j == 0 else 1, downsample=j == 0, dtype=self.dtype,
                       use_running_average=use_running_average, bn_momentum=self.bn_momentum,
                       dot_1x1=self.dot_1x1, name=f'layer{i}_{j}')(x)
      feats[f'layer{i}'] = x
    out = {'features': feats}
    if self.include_top:
      pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
      logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                        kernel_init=_fc_init, name='fc')(pooled.astype(self.dtype))
      out['logits'] = logits.astype(jnp.float32)
    return out


@functools.lru_cache(maxsize=4)
def _abstract_variables(include_top: bool) -> dict:
  """ShapeDtypeStructs of `ResNet50(include_top).init` (params don't depend on the input size)."""
  model = ResNet50(include_top=include_top)
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.uint8)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0, impl='rbg'), x), images)


def _keep_ndim(transform, ndim):
  # Arrays of another rank pass through untransformed, so check_tree reports them as wrong shapes.
  return lambda w: transform(w) if w.ndim == ndim else w


_CONV = _keep_ndim(conv_oihw_to_hwio, 4)
_LINEAR = _keep_ndim(linear_to_dense, 2)


def from_torchvision(state_dict: Mapping[str, np.ndarray], include_top: bool = True) -> dict:
  """Variables `{'params', 'batch_stats'}` of `ResNet50(include_top=include_top)` from a
  torchvision `resnet50().state_dict()` (values: numpy arrays or CPU tensors).

  Exact: every tensor is used once (only `*.num_batches_tracked`, and `fc.*` when
  `include_top=False`, are ignored) and every model variable is filled with its shape; otherwise
  one ConversionError lists the missing, unused and wrongly shaped tensors (torch names included).
  Convs OIHW -> HWIO; fc (out, in) -> (in, out); BN weight/bias -> params scale/bias,
  running_mean/var -> batch_stats mean/var. Values are float32 numpy arrays.
  """
  source = 'torchvision resnet50 state_dict'

  def ignore(name):
    return name.endswith('num_batches_tracked') or (not include_top and name.startswith('fc.'))

  src = SourceTensors(state_dict, source, ignore=ignore)
  flat: dict[str, np.ndarray] = {}
  origin: dict[str, str] = {}  # flax path -> torch name, for error messages

  def put(path, name, transform=lambda x: x):
    value = src.take(name, transform)
    origin[path] = name
    if value is not None:
      flat[path] = value

  def conv(torch_name, flax_name):
    put(f'params/{flax_name}/kernel', f'{torch_name}.weight', _CONV)

  def bn(torch_name, flax_name):
    put(f'params/{flax_name}/scale', f'{torch_name}.weight')
    put(f'params/{flax_name}/bias', f'{torch_name}.bias')
    put(f'batch_stats/{flax_name}/mean', f'{torch_name}.running_mean')
    put(f'batch_stats/{flax_name}/var', f'{torch_name}.running_var')

  conv('conv1', 'conv1')
  bn('bn1', 'bn1')
  for i, (_, blocks, _) in enumerate(STAGES, start=1):
    for j in range(blocks):
      t, f = f'layer{i}.{j}', f'layer{i}_{j}'
      for k in (1, 2, 3):
        conv(f'{t}.conv{k}', f'{f}/conv{k}')
        bn(f'{t}.bn{k}', f'{f}/bn{k}')
      if j == 0:
        conv(f'{t}.downsample.0', f'{f}/downsample_conv')
        bn(f'{t}.downsample.1', f'{f}/downsample_bn')
  if include_top:
    put('params/fc/kernel', 'fc.weight', _LINEAR)
    put('params/fc/bias', 'fc.bias')

  errors = []
  try:
    src.finish()
  except ConversionError as e:
    errors.append(str(e))
  variables = nest(flat)
  try:
    check_tree(variables, _abstract_variables(include_top), source)
  except ConversionError as e:
    errors.append(_annotate(str(e), origin, state_dict))
  if errors:
    raise ConversionError('\n'.join(errors))
  return variables


def _annotate(message: str, origin: Mapping[str, str], state_dict: Mapping[str, Any]) -> str:
  """Adds the torch tensor name and shape to each line of a check_tree message."""
  lines = []
  for line in message.splitlines():
    m = re.search(r'(?:missing|unexpected|wrong shape): (\S+?)(?::|\s|$)', line)
    if m and m.group(1) in origin:
      name = origin[m.group(1)]
      shape = f' {tuple(np.shape(state_dict[name]))}' if name in state_dict else ''
      line += f'  [torch {name}{shape}]'
    lines.append(line)
  return '\n'.join(lines)
