"""VGG-16 / VGG-19 ("D-Net", torchvision layout) and VGG-M ("M-Net", MatConvNet imagenet-vgg-m).

VGG16/VGG19 = `torchvision.models.vgg16/19`: 3x3 pad-1 convs with bias + ReLU, 2x2/2 max-pools
(floor); features `relu{b}_{i}`, `pool1..pool4`; relu5_3 / relu5_4 is 28x28x512 at 448 (no pool5).
Top: pool5 -> AdaptiveAvgPool2d(7x7) (exact torch bins, so 1x1 or 2x1 maps spread to 7x7) ->
flatten -> fc6 -> ReLU -> Dropout -> fc7 -> ReLU -> Dropout -> fc8. We flatten NHWC in (H, W, C)
order, torch in (C, H, W): `from_torchvision` permutes fc6's 25088 input rows once at import.

VGGM = MatConvNet `imagenet-vgg-m.mat` (Chatfield et al. 2014 CNN-M, imported from VGG's caffe by
utils/import-caffe.py): conv1 96x7x7/2, LRN, pool; conv2 256x5x5/2 pad 1, LRN, pool; conv3..5
512x3x3 pad 1 (`VGGM_CONVS`, each + ReLU); pool5; fc6 (the file's 6x6 conv, as a Dense), fc7, fc8.
- Pooling: caffe pooled in ceil mode; import-caffe.py turned that into bottom/right pads computed
  at 224: pool1 [0 0 0 0] (109 -> 54), pool2 [0 1 0 1] (26 -> 13), pool5 [0 0 0 0] (13 -> 6);
  MatConvNet pools floor((L + pads - 3) / 2) + 1 windows, clipped to the image (padding = -inf).
  We use the file's pads (`pool_pads`): relu5 is 13x13 at 224 and 27x27 at 448 (pool2 54 + 1 ->
  27; plain floor mode gives 26). Caffe's ceil mode agrees at 224 and 448, not at every size.
- LRN (`lrn` = MatConvNet PARAM [N kappa alpha beta]): y = x / (kappa + alpha * sum_{q in
  [k - floor((N-1)/2), k + ceil((N-1)/2)]} x_q^2)^beta (vl_nnnormalize, normalize_cpu.cpp). Caffe
  divides its alpha by N, MatConvNet does not: CNN-M's caffe `local_size 5 alpha 0.0005 beta 0.75
  k 2` is stored as [5 2 0.0005/5 0.75] = our default [5, 2, 1e-4, 0.75] (the first importer
  version forgot the /N); `from_matconvnet_vggm` checks the file's value against the model's.
- Colour: RGB in [0, 255] minus the average image, not BGR: import-caffe.py flips conv1 BGR -> RGB
  for every caffe variant except `vgg-caffe`, the one imagenet-vgg-m was imported with (VGG
  trained CNN-M on RGB in MATLAB), and reads its mean.mat unflipped. The file's 224x224x3
  averageImage is reduced to its mean colour (as B-CNN does to run at 448); `MATCONVNET_VGGM` is a
  nominal stand-in until a file is converted.

All: `__call__(images, train=False) -> {'features': {...}, 'logits'?}`, images uint8 / float
[0, 255] RGB NHWC; with `train=True` dropout (fc6/fc7) needs a 'dropout' rng.
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
from fgjax.ops.pooling import adaptive_avg_pool, local_response_norm, max_pool_2x2, max_pool_padded

MATCONVNET_VGGM = Preprocessing(
    mean=(123.68, 116.779, 103.939), std=(1.0, 1.0, 1.0), channels='RGB',
    source='MatConvNet imagenet-vgg-m (nominal RGB mean; a converted file brings its own)')
VGGM_LRN = (5.0, 2.0, 1e-4, 0.75)  # MatConvNet [N kappa alpha beta] of imagenet-vgg-m norm1/norm2
VGGM_POOL_PADS = ((0, 0, 0, 0), (0, 1, 0, 1), (0, 0, 0, 0))  # pool1, pool2, pool5 [t b l r]
VGGM_CONVS = ((96, 7, 2, 0), (256, 5, 2, 1), (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1))

# torchvision's VGG init: kaiming_normal_(fan_out, relu) convs, N(0, 0.01) linears, zero biases.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_fc_init = nn.initializers.normal(0.01)


class _VGGBase(nn.Module):
  """Common fields. include_top: add pool5 + fc6..fc8, return float32 `logits`; num_classes: fc8
  width; dtype: compute dtype (params float32); preprocessing: the weights' normalisation;
  dropout_rate: dropout after fc6 and fc7, active only with `train=True`."""
  include_top: bool = False
  num_classes: int = 1000
  dtype: Any = jnp.float32
  preprocessing: Preprocessing = TORCHVISION
  dropout_rate: float = 0.5

  def _normalized(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'expected RGB NHWC images, got shape {images.shape}')
    return self.preprocessing.normalize(images, self.dtype)

  def _classifier(self, x: jax.Array, train: bool) -> jax.Array:
    """flatten -> fc6 -> ReLU -> Dropout -> fc7 -> ReLU -> Dropout -> fc8 (float32 logits)."""
    x = x.reshape(x.shape[0], -1)  # (H, W, C) order
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=_fc_init)
    for name in ('fc6', 'fc7'):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(dense(4096, name=name)(x)))
    return dense(self.num_classes, name='fc8')(x).astype(jnp.float32)


class _VGGD(_VGGBase):
  """torchvision VGG without BN; `blocks` = convs per block. With include_top the input must be at
  least 32x32 (a non-empty pool5)."""
  blocks = ()  # class attributes, not fields
  widths = (64, 128, 256, 512, 512)

  @property
  def feature_strides(self) -> dict[str, int]:
    """Output stride of every returned map, known without tracing."""
    strides = {}
    for b, n in enumerate(self.blocks, start=1):
      strides.update({f'pool{b - 1}': 2 ** (b - 1)} if b > 1 else {})
      strides.update({f'relu{b}_{i}': 2 ** (b - 1) for i in range(1, n + 1)})
    return strides

  def feature_grid(self, height: int, width: int) -> dict[str, tuple[int, int]]:
    """Exact (H, W) of every returned map for a height x width input (2x2 pools floor)."""
    return {k: (height // s, width // s) for k, s in self.feature_strides.items()}

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, Any]:
    x, feats = self._normalized(images), {}
    for b, n in enumerate(self.blocks, start=1):
      if b > 1:
        x = feats[f'pool{b - 1}'] = max_pool_2x2(x)  # = nn.max_pool 2x2/2; fast gradient
      for i in range(1, n + 1):
        x = feats[f'relu{b}_{i}'] = nn.relu(nn.Conv(
            self.widths[b - 1], (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
            param_dtype=jnp.float32, kernel_init=_conv_init, name=f'conv{b}_{i}')(x))
    out = {'features': feats}
    if self.include_top:
      if min(x.shape[1:3]) < 2:
        raise ValueError(f'{type(self).__name__}(include_top=True) needs inputs of at least '
                         f'32x32 (pool5 of a {x.shape[1:3]} map is empty); got {images.shape}')
      x = adaptive_avg_pool(max_pool_2x2(x), (7, 7))
      out['logits'] = self._classifier(x, train)  # fc6 rows were permuted to (H, W, C) at import
    return out


class VGG16(_VGGD):
  """VGG-16 (configuration D); features relu1_1 .. relu5_3, pool1 .. pool4."""
  blocks = (2, 2, 3, 3, 3)


class VGG19(_VGGD):
  """VGG-19 (configuration E); features relu1_1 .. relu5_4, pool1 .. pool4."""
  blocks = (2, 2, 4, 4, 4)


class VGGM(_VGGBase):
  """MatConvNet imagenet-vgg-m; features relu1, pool1, relu2, pool2, relu3, relu4, relu5. Besides
  the common fields (preprocessing defaults to `MATCONVNET_VGGM`): `lrn`, the LRN PARAM (N, kappa,
  alpha, beta) of norm1/norm2; `pool_pads`, the (top, bottom, left, right) -inf pads of pool1,
  pool2, pool5. With `include_top=True` pool5 must be 6x6 (224x224 inputs): fc6 is a 6x6 conv."""
  preprocessing: Preprocessing = MATCONVNET_VGGM
  lrn: tuple[float, float, float, float] = VGGM_LRN
  pool_pads: tuple[tuple[int, int, int, int], ...] = VGGM_POOL_PADS

  def __post_init__(self):  # tuples, so that the module stays hashable when configs pass lists
    object.__setattr__(self, 'lrn', tuple(float(v) for v in self.lrn))
    object.__setattr__(self, 'pool_pads', tuple(tuple(int(p) for p in q) for q in self.pool_pads))
    super().__post_init__()

  @property
  def feature_strides(self) -> dict[str, int]:
    """Output stride of every returned map, known without tracing."""
    return {'relu1': 2, 'pool1': 4, 'relu2': 8, 'pool2': 16, 'relu3': 16, 'relu4': 16,
            'relu5': 16}

  def feature_grid(self, height: int, width: int) -> dict[str, tuple[int, int]]:
    """Exact (H, W) of every returned map for a height x width input (448 -> 27x27 relu5)."""
    grids = {}
    for a, n in ((0, height), (2, width)):  # index of the top (H) / left (W) pad in pool_pads
      for k, (_, size, stride, pad) in enumerate(VGGM_CONVS, start=1):
        n = (n + 2 * pad - size) // stride + 1
        grids.setdefault(f'relu{k}', []).append(n)
        if k <= 2:
          n = (n + sum(self.pool_pads[k - 1][a:a + 2]) - 3) // 2 + 1
          grids.setdefault(f'pool{k}', []).append(n)
    return {k: tuple(v) for k, v in grids.items()}

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, Any]:
    x, feats = self._normalized(images), {}
    for k, (width, size, stride, pad) in enumerate(VGGM_CONVS, start=1):
      x = feats[f'relu{k}'] = nn.relu(nn.Conv(
          width, (size, size), stride, padding=((pad, pad), (pad, pad)), dtype=self.dtype,
          param_dtype=jnp.float32, kernel_init=_conv_init, name=f'conv{k}')(x))
      if k <= 2:
        x = feats[f'pool{k}'] = max_pool_padded(local_response_norm(x, *self.lrn), 3, 2,
                                                self.pool_pads[k - 1])
    out = {'features': feats}
    if self.include_top:
      x = max_pool_padded(x, 3, 2, self.pool_pads[2])
      if x.shape[1:3] != (6, 6):
        raise ValueError(f'VGGM(include_top=True) needs a 6x6 pool5 (224x224 input), got '
                         f'{x.shape[1:3]} from images of shape {images.shape}')
      out['logits'] = self._classifier(x, train)
    return out


# ------------------------------------------------------------------------------------ conversion
@functools.lru_cache(maxsize=8)
def _abstract_variables(cls: type, include_top: bool, num_classes: int) -> dict:
  """ShapeDtypeStructs of `cls(...).init` (traced only, never computed)."""
  model, size = cls(include_top=include_top, num_classes=num_classes), 224 if cls is VGGM else 32
  return jax.eval_shape(lambda x: model.init(jax.random.key(0, impl='rbg'), x),
                        jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8))


def _convert(src: SourceTensors, shapes: Mapping[str, tuple], rules: list, cls: type,
             include_top: bool, num_classes: int, extra: list[str] = ()) -> dict:
  """Applies `rules` [(flax path, source name, transform)]; raises one ConversionError for
  missing/unused source tensors, `extra` lines and mismatches with `cls`'s variables."""
  flat, origin, errors = {}, {}, []
  for path, name, transform in rules:
    origin[path] = name
    value = src.take(name, transform)
    if value is not None:
      flat[path] = value
  try:
    src.finish()
  except ConversionError as e:
    errors.append(str(e))
  if extra:
    errors.append(f'{src.source} does not match the model:\n' + '\n'.join(extra))
  variables = nest(flat)
  try:
    check_tree(variables, _abstract_variables(cls, include_top, num_classes), src.source)
  except ConversionError as e:
    lines = []
    for line in str(e).splitlines():  # name the source tensor (and its shape) on each line
      m = re.search(r'(?:missing|unexpected|wrong shape): (\S+?)(?::|\s|$)', line)
      name = origin.get(m.group(1)) if m else None
      lines.append(line + (f'  [source {name} {shapes.get(name, "absent")}]' if name else ''))
    errors.append('\n'.join(lines))
  if errors:
    raise ConversionError('\n'.join(errors))
  return variables


def _rank(ndim, transform):  # other ranks pass untransformed: check_tree reports their shapes
  return lambda w: transform(w) if w.ndim == ndim else w


def _torch_fc6(w: np.ndarray) -> np.ndarray:
  """classifier.0.weight (out, C*7*7) -> Dense kernel, inputs from (C, H, W) to (H, W, C) order."""
  out, c = w.shape[0], w.shape[1] // 49
  if w.shape[1] % 49 == 0:
    w = w.reshape(out, c, 7, 7).transpose(0, 2, 3, 1).reshape(out, 49 * c)
  return linear_to_dense(w)  # other widths pass unpermuted: check_tree reports them


def from_torchvision(arch: str, state_dict: Mapping[str, Any], include_top: bool = True) -> dict:
  """`{'params': ...}` of VGG16/VGG19 from a torchvision `vgg16/vgg19().state_dict()`.

  `features.N` (N counts conv, ReLU and pool modules) -> `conv{b}_{i}`, OIHW -> HWIO;
  `classifier.0/3/6` -> fc6/7/8, (out, in) -> (in, out), fc6's inputs permuted from (C, H, W)
  to (H, W, C); num_classes from `classifier.6.weight`. Exact: every tensor used once
  (`classifier.*` ignored if not include_top), every variable filled, else one ConversionError."""
  classes = {'vgg16': VGG16, 'vgg19': VGG19}
  if arch not in classes:
    raise ValueError(f'from_torchvision: unknown arch {arch!r}; valid: vgg16, vgg19')
  cls = classes[arch]
  src = SourceTensors(state_dict, f'torchvision {arch} state_dict',
                      ignore=lambda n: not include_top and n.startswith('classifier.'))
  shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
  rules, index = [], 0
  for b, n in enumerate(cls.blocks, start=1):
    for i in range(1, n + 1):
      rules += [(f'params/conv{b}_{i}/kernel', f'features.{index}.weight',
                 _rank(4, conv_oihw_to_hwio)),
                (f'params/conv{b}_{i}/bias', f'features.{index}.bias', np.asarray)]
      index += 2  # Conv2d, ReLU
    index += 1  # MaxPool2d
  num_classes = 1000
  if include_top:
    for k, name in enumerate(('fc6', 'fc7', 'fc8')):
      to_dense = _torch_fc6 if k == 0 else linear_to_dense
      rules += [(f'params/{name}/kernel', f'classifier.{3 * k}.weight', _rank(2, to_dense)),
                (f'params/{name}/bias', f'classifier.{3 * k}.bias', np.asarray)]
    num_classes = shapes.get('classifier.6.weight', (1000,))[0]
  return _convert(src, shapes, rules, cls, include_top, num_classes)


def _get(obj, key):
  """Field `key` of a scipy mat_struct (or dict), None if absent."""
  return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _mat_weights(layer) -> list:
  """[filters, biases] of a simplenn layer (`weights` cell, or the older filters/biases fields)."""
  ws = _get(layer, 'weights')
  ws = [_get(layer, 'filters'), _get(layer, 'biases')] if ws is None else (
      list(ws.ravel()) if isinstance(ws, np.ndarray) and ws.dtype == object else  # a cell
      [ws] if isinstance(ws, np.ndarray) else list(ws))  # a 1-element cell squeezed to its array
  return [w for w in ws if w is not None and np.size(w)]


def _same(got, want) -> bool:
  if isinstance(want, str):
    return str(got) == want
  try:  # MatConvNet scalars stand for repeated values
    got = np.broadcast_to(np.ravel(np.asarray(got, np.float64)), (len(want),))
    return bool(np.allclose(got, want, rtol=1e-6, atol=0))
  except (TypeError, ValueError):
    return False


def _geometry_problems(layers: Mapping[str, Any], model: VGGM, include_top: bool) -> list[str]:
  """A line for every conv stride/pad, pool window/stride/pad/method and LRN param of the file
  that differs from `model`."""
  want = {f'conv{k}': {'stride': (s, s), 'pad': (p,) * 4}
          for k, (_, _, s, p) in enumerate(VGGM_CONVS, start=1)}
  want.update({f'norm{k}': {'param': model.lrn} for k in (1, 2)})
  for name, pad in zip(('pool1', 'pool2', 'pool5')[:3 if include_top else 2], model.pool_pads):
    want[name] = {'pool': (3, 3), 'stride': (2, 2), 'pad': pad, 'method': 'max'}
  problems = [f'  layer {name}: missing in the file' for name in want if name not in layers]
  for name, field, value in ((n, f, v) for n in want if n in layers for f, v in want[n].items()):
    got = _get(layers[name], field)
    if not _same(got, value):
      got = np.ravel(got).tolist() if isinstance(got, np.ndarray) else got
      problems.append(f'  layer {name}: {field} {got} in the file vs {value} in the model (pass '
                      'model=VGGM(lrn=..., pool_pads=...) for another variant)')
  return problems


def from_matconvnet_vggm(net: Mapping[str, Any], include_top: bool = True,
                         model: VGGM | None = None) -> tuple[dict, Preprocessing]:
  """(`{'params': ...}`, the file's Preprocessing) of VGGM from a MatConvNet simplenn model, i.e.
  `scipy.io.loadmat('imagenet-vgg-m.mat', squeeze_me=True, struct_as_record=False)`.

  conv1..5 filters (h, w, in, out) are HWIO already; fc6..8 filters are flattened to (h*w*in, out)
  (ignored when `include_top=False`). Strides, pads, pool windows and LRN params must equal
  `model`'s (default `VGGM()` = imagenet-vgg-m). Mean colour of `meta.normalization.averageImage`
  (older files: `normalization`), RGB, std 1. One ConversionError names every mismatch."""
  model = model if model is not None else VGGM()
  tensors, layers = {}, {}
  for layer in np.ravel(np.asarray(net['layers'], dtype=object)):
    layers[name := str(_get(layer, 'name'))] = layer
    for k, w in enumerate(_mat_weights(layer)):
      tensors[f'{name}.' + (('filters', 'biases')[k] if k < 2 else f'weights{k + 1}')] = w
  fc = ('fc6', 'fc7', 'fc8')
  src = SourceTensors(tensors, 'MatConvNet vgg-m',
                      ignore=lambda n: not include_top and n.split('.')[0] in fc)
  shapes = {k: tuple(np.shape(v)) for k, v in tensors.items()}
  rules = []
  for name in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5') + (fc if include_top else ()):
    flatten = (lambda w: w.reshape(-1, w.shape[-1])) if name in fc else np.asarray
    rules += [(f'params/{name}/kernel', f'{name}.filters', flatten),
              (f'params/{name}/bias', f'{name}.biases', np.ravel)]
  num_classes = shapes.get('fc8.filters', (1000,))[-1] if include_top else 1000
  variables = _convert(src, shapes, rules, VGGM, include_top, num_classes,
                       _geometry_problems(layers, model, include_top))
  return variables, _matconvnet_preprocessing(net)


def _matconvnet_preprocessing(net: Mapping[str, Any]) -> Preprocessing:
  norm = _get(net['meta'], 'normalization') if 'meta' in net else net.get('normalization')
  a = np.asarray([] if norm is None or _get(norm, 'averageImage') is None else
                 _get(norm, 'averageImage'), np.float64)
  if not (a.size == 3 or (a.ndim == 3 and a.shape[-1] == 3)):
    raise ConversionError('MatConvNet vgg-m: no RGB averageImage in meta.normalization (or '
                          f'normalization); got shape {a.shape}')
  return Preprocessing(mean=tuple(a.reshape(-1, 3).mean(axis=0)), std=(1.0, 1.0, 1.0),
                       channels='RGB', source=f'MatConvNet vgg-m averageImage {a.shape} mean')
