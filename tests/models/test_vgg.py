"""VGG-16 / VGG-19 (torchvision) and VGG-M (MatConvNet imagenet-vgg-m): parity, conversion, shapes.

Parity fixtures: tests/fixtures/torchvision_vgg16.npz / _vgg19.npz, written by
tests/parity/make_vgg_fixtures.py (torch 2.13 / torchvision 0.28, CPU, float32): every tensor of
`vgg16/vgg19(weights=None)` replaced by the seeded rule of tests/parity/seeded_weights.py, input
(2, 64, 48, 3) (relu5 4x3, pool5 2x1 -> adaptive 7x7). The weights and inputs are regenerated here
from the stored names/shapes/seed, so no torch is needed. Relative error = max|a - b| / max|b|,
required <= 1e-4; observed (float32, 2-core CPU): vgg16 logits 2.1e-6, relu5_3 1.0e-6; vgg19
logits 1.8e-6, relu5_4 1.0e-6. (Swapping H and W in fc6's permutation gives 0.34: caught.)

VGG-M: a MatConvNet-layout .mat (the real imagenet-vgg-m layer names, types, shapes, strides, pads,
LRN param and a 224x224x3 averageImage; He-scaled random weights) is written with
scipy.io.savemat, read back with `loadmat(squeeze_me=True, struct_as_record=False)`, converted and
run at 224 with the ImageNet head; pool1, relu5 and the logits are compared with a float64 NumPy
oracle written from MatConvNet's definitions (vl_nnconv correlation, vl_nnnormalize,
pooling_cpu.cpp windows clipped to the image, fc6 as a 6x6 valid conv). Observed relative errors
(bound 1e-4): pool1 9.7e-7, relu5 9.4e-7, logits 2.7e-6. Whole file: ~15 s on 2 CPU cores.
"""
import copy
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
from numpy.lib.stride_tricks import sliding_window_view

from fgjax.models.backbones import vgg
from fgjax.models.backbones.convert import ConversionError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'parity'))
import seeded_weights as sw  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'fixtures')
KEY = jax.random.key(0, impl='rbg')
TOL = 1e-4


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def _close(a, b, what):
  err = _rel(a, b)
  assert err <= TOL, f'{what}: relative error {err:.3g} > {TOL}'
  b = np.asarray(b, np.float64)
  np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=TOL, atol=TOL * np.abs(b).max())
  return err


# ------------------------------------------------------------------------- torchvision VGG-16/19
@pytest.mark.parametrize('arch,cls,last', [('vgg16', vgg.VGG16, 'relu5_3'),
                                           ('vgg19', vgg.VGG19, 'relu5_4')])
def test_parity_with_torchvision(arch, cls, last):
  with np.load(os.path.join(FIXTURES, f'torchvision_{arch}.npz'), allow_pickle=False) as f:
    fx = {k: f[k] for k in f.files}
  assert int(fx['rule_version']) == sw.RULE_VERSION
  seed = int(fx['seed'])
  state = sw.seeded_state_dict(fx['names'], sw.unpad_shapes(fx['shapes']), seed)
  variables = vgg.from_torchvision(arch, state)
  del state
  images = sw.seeded_images(seed, tuple(int(s) for s in fx['input_shape']))
  out = jax.jit(cls(include_top=True).apply)(variables, images)
  assert out['logits'].dtype == jnp.float32 and out['logits'].shape == fx['logits'].shape
  _close(out['features'][last], fx['relu5'], f'{arch} {last}')
  _close(out['logits'], fx['logits'], f'{arch} logits')


def _zeros_state(cls, include_top=True):
  """Zero (broadcast, no memory) tensors with torchvision's names and shapes."""
  state, index, cin = {}, 0, 3
  for b, n in enumerate(cls.blocks):
    for _ in range(n):
      cout = cls.widths[b]
      state[f'features.{index}.weight'] = np.broadcast_to(np.float32(0), (cout, cin, 3, 3))
      state[f'features.{index}.bias'] = np.broadcast_to(np.float32(0), (cout,))
      index, cin = index + 2, cout
    index += 1
  if include_top:
    for k, (i, o) in enumerate(((25088, 4096), (4096, 4096), (4096, 1000))):
      state[f'classifier.{3 * k}.weight'] = np.broadcast_to(np.float32(0), (o, i))
      state[f'classifier.{3 * k}.bias'] = np.broadcast_to(np.float32(0), (o,))
  return state


def test_torchvision_conversion_errors_name_every_tensor():
  state = _zeros_state(vgg.VGG19, include_top=False)
  variables = vgg.from_torchvision('vgg19', state, include_top=False)  # exact: no error
  assert sorted(variables['params']) == sorted(
      f'conv{b}_{i}' for b, n in enumerate(vgg.VGG19.blocks, 1) for i in range(1, n + 1))
  del state['features.0.bias']
  state['features.2.weight'] = np.zeros((64, 32, 3, 3), np.float32)
  state['features.99.weight'] = np.zeros((3,), np.float32)
  with pytest.raises(ConversionError) as e:
    vgg.from_torchvision('vgg19', state, include_top=False)
  msg = str(e.value)
  assert 'missing in torchvision vgg19 state_dict: features.0.bias' in msg
  assert 'features.99.weight' in msg
  assert 'wrong shape: params/conv1_2/kernel' in msg and 'features.2.weight (64, 32, 3, 3)' in msg
  with pytest.raises(ValueError, match='vgg11'):
    vgg.from_torchvision('vgg11', state)


def test_torchvision_num_classes_from_state_dict():
  state = _zeros_state(vgg.VGG16)
  state['classifier.6.weight'] = np.broadcast_to(np.float32(0), (200, 4096))
  state['classifier.6.bias'] = np.zeros((200,), np.float32)
  variables = vgg.from_torchvision('vgg16', state)
  assert variables['params']['fc8']['kernel'].shape == (4096, 200)
  assert variables['params']['fc6']['kernel'].shape == (25088, 4096)


def test_vgg_d_shapes_strides_and_dtype():
  x448 = jax.ShapeDtypeStruct((1, 448, 448, 3), jnp.uint8)
  for cls, last in ((vgg.VGG16, 'relu5_3'), (vgg.VGG19, 'relu5_4')):
    model = cls(dtype=jnp.bfloat16)
    out, variables = jax.eval_shape(lambda x, m=model: m.init_with_output(KEY, x), x448)
    assert out['features'][last].shape == (1, 28, 28, 512)  # Wu & Wang 2017's D-Net map at 448
    assert out['features'][last].dtype == jnp.bfloat16
    assert 'pool5' not in out['features'] and 'logits' not in out
    assert {k: v.shape[1:3] for k, v in out['features'].items()} == model.feature_grid(448, 448)
    assert model.feature_strides[last] == 16 and model.feature_strides['pool4'] == 16
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
  top = vgg.VGG16(include_top=True, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.uint8)
  logits = jax.eval_shape(lambda x: top.init_with_output(KEY, x)[0]['logits'], x)
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
  with pytest.raises(ValueError, match='at least 32x32'):
    jax.eval_shape(lambda x: top.init(KEY, x), jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.uint8))


def test_dropout_needs_rng_only_in_training():
  model = vgg.VGG16(include_top=True)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.uint8)
  variables = jax.eval_shape(lambda x: model.init(KEY, x), x)
  jax.eval_shape(lambda v, x: model.apply(v, x, train=True, rngs={'dropout': KEY}), variables, x)
  with pytest.raises(Exception, match='dropout'):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=True), variables, x)


# --------------------------------------------------------------------------------------- VGG-M
def test_vggm_relu5_is_27x27_at_448_and_13x13_at_224():
  model = vgg.VGGM()
  for size, grid in ((448, 27), (224, 13)):
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8)
    out = jax.eval_shape(lambda x: model.init_with_output(KEY, x)[0], x)
    assert out['features']['relu5'].shape == (1, grid, grid, 512)
    assert {k: v.shape[1:3] for k, v in out['features'].items()} == model.feature_grid(size, size)
  assert model.feature_strides['relu5'] == 16


def np_lrn(x, n, kappa, alpha, beta):
  """vl_nnnormalize: window [k - floor((n-1)/2), k + ceil((n-1)/2)] clipped to the channels."""
  c, x = x.shape[-1], np.asarray(x, np.float64)
  out = np.empty_like(x)
  for k in range(c):
    lo, hi = max(0, k - (n - 1) // 2), min(c, k + n - (n - 1) // 2)
    out[..., k] = x[..., k] / (kappa + alpha * (x[..., lo:hi] ** 2).sum(-1)) ** beta
  return out


def np_conv(x, w, b, stride, pad):
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  win = sliding_window_view(x, w.shape[:2], axis=(1, 2))[:, ::stride, ::stride]
  return np.einsum('nhwcij,ijco->nhwo', win, w.astype(np.float64), optimize=True) + b


def np_maxpool(x, k, s, pad):
  """pooling_cpu.cpp: window y*s - pad_top .. + k, clipped to the image."""
  top, bottom, left, right = pad
  oh, ow = (x.shape[1] + top + bottom - k) // s + 1, (x.shape[2] + left + right - k) // s + 1
  out = np.empty((x.shape[0], oh, ow, x.shape[3]))
  for i in range(oh):
    for j in range(ow):
      y0, x0 = i * s - top, j * s - left
      out[:, i, j] = x[:, max(y0, 0):y0 + k, max(x0, 0):x0 + k].max(axis=(1, 2))
  return out


# (name, filter shape (h, w, in, out), stride, pad) of imagenet-vgg-m's weighted layers.
VGGM_CONVS = [('conv1', (7, 7, 3, 96), 2, 0), ('conv2', (5, 5, 96, 256), 2, 1),
              ('conv3', (3, 3, 256, 512), 1, 1), ('conv4', (3, 3, 512, 512), 1, 1),
              ('conv5', (3, 3, 512, 512), 1, 1), ('fc6', (6, 6, 512, 4096), 1, 0),
              ('fc7', (1, 1, 4096, 4096), 1, 0), ('fc8', (1, 1, 4096, 1000), 1, 0)]


def _cell(*items):
  c = np.empty((1, len(items)), object)
  for i, v in enumerate(items):
    c[0, i] = v
  return c


def _row(*v):
  return np.asarray(v, np.float64).reshape(1, -1)


@functools.lru_cache(maxsize=None)
def _vggm_mat(tmp_dir):
  """A MatConvNet simplenn imagenet-vgg-m layout (tidy format, meta.normalization), loaded back."""
  rng = np.random.default_rng(0)
  weights, layers = {}, []
  lrn, pool = _row(5, 2, 1e-4, 0.75), dict(type='pool', method='max', pool=_row(3, 3),
                                              stride=_row(2, 2))
  for name, shape, stride, pad in VGGM_CONVS:
    f = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / np.prod(shape[:3])))
    b = rng.normal(0, 0.1, (1, shape[3])).astype(np.float32)
    weights[name] = (f, b[0])
    layers.append(dict(name=name, type='conv', weights=_cell(f, b), stride=_row(stride, stride),
                       pad=_row(*[pad] * 4), dilation=_row(1, 1), opts=np.empty((1, 0), object)))
    if name != 'fc8':
      layers.append(dict(name='relu' + name[-1], type='relu', leak=0.0))
    if name in ('conv1', 'conv2'):
      layers.append(dict(name='norm' + name[-1], type='lrn', param=lrn))
      layers.append(dict(name='pool' + name[-1], pad=_row(0, name == 'conv2', 0, name == 'conv2'),
                         **pool))
    if name == 'conv5':
      layers.append(dict(name='pool5', pad=_row(0, 0, 0, 0), **pool))
  layers.append(dict(name='prob', type='softmax'))
  avg = (np.array([123.7, 116.8, 104.0]) + rng.normal(0, 5, (224, 224, 3))).astype(np.float32)
  path = os.path.join(tmp_dir, 'imagenet-vgg-m.mat')
  scipy.io.savemat(path, {'layers': _cell(*layers), 'meta': {'normalization': {
      'averageImage': avg, 'imageSize': _row(224, 224, 3), 'interpolation': 'bilinear'}}})
  return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False), weights, avg


@pytest.fixture(scope='module')
def vggm_mat(tmp_path_factory):
  return _vggm_mat(str(tmp_path_factory.mktemp('vggm')))


def test_matconvnet_vggm_loads_and_matches_numpy_oracle(vggm_mat):
  net, weights, avg = vggm_mat
  variables, prep = vgg.from_matconvnet_vggm(net)
  assert prep.channels == 'RGB' and prep.std == (1.0, 1.0, 1.0)
  np.testing.assert_allclose(prep.mean, avg.astype(np.float64).mean(axis=(0, 1)), rtol=1e-6)
  model = vgg.VGGM(include_top=True, preprocessing=prep)
  images = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3)).astype(np.uint8)
  out = jax.jit(model.apply)(variables, images)

  x = images.astype(np.float64) - np.asarray(prep.mean)
  x = np.maximum(np_conv(x, *weights['conv1'], 2, 0), 0)
  pool1 = np_maxpool(np_lrn(x, 5, 2.0, 1e-4, 0.75), 3, 2, (0, 0, 0, 0))
  x = np.maximum(np_conv(pool1, *weights['conv2'], 2, 1), 0)
  x = np_maxpool(np_lrn(x, 5, 2.0, 1e-4, 0.75), 3, 2, (0, 1, 0, 1))
  for k in (3, 4, 5):
    x = np.maximum(np_conv(x, *weights[f'conv{k}'], 1, 1), 0)
  relu5 = x
  x = np.maximum(np_conv(np_maxpool(x, 3, 2, (0, 0, 0, 0)), *weights['fc6'], 1, 0), 0)  # 6x6 -> 1x1
  x = np.maximum(x[:, 0, 0] @ weights['fc7'][0].reshape(4096, 4096) + weights['fc7'][1], 0)
  logits = x @ weights['fc8'][0].reshape(4096, 1000) + weights['fc8'][1]

  assert out['features']['pool1'].shape == (1, 54, 54, 96)
  _close(out['features']['pool1'], pool1, 'vggm pool1')
  assert out['features']['relu5'].shape == (1, 13, 13, 512)
  _close(out['features']['relu5'], relu5, 'vggm relu5')
  _close(out['logits'], logits, 'vggm logits')


def test_matconvnet_vggm_conversion_errors(vggm_mat):
  net = dict(vggm_mat[0])
  layers = [copy.copy(layer) for layer in net['layers']]
  by_name = {layer.name: layer for layer in layers}
  by_name['conv3'].weights = by_name['conv3'].weights[:1]  # no biases
  f, b = by_name['conv2'].weights
  by_name['conv2'].weights = np.array([f[..., :128], b[:128]], dtype=object)
  by_name['norm2'].param = np.array([5, 2, 5e-4, 0.75])  # caffe's alpha, not divided by N
  by_name['pool2'].pad = np.array([0.0, 0, 0, 0])
  extra = copy.copy(by_name['conv5'])
  extra.name = 'conv6'
  net['layers'] = np.array(layers + [extra], dtype=object)
  with pytest.raises(ConversionError) as e:
    vgg.from_matconvnet_vggm(net, include_top=False)
  msg = str(e.value)
  assert 'missing in MatConvNet vgg-m: conv3.biases' in msg
  assert 'not used (no rule maps it): conv6.filters' in msg
  assert 'wrong shape: params/conv2/kernel' in msg and 'conv2.filters (5, 5, 96, 128)' in msg
  assert 'layer norm2: param' in msg and 'layer pool2: pad' in msg
  assert 'norm1' not in msg and 'pool1' not in msg
  # include_top=False: fc6..fc8 are ignored, everything else maps exactly.
  variables, _ = vgg.from_matconvnet_vggm(vggm_mat[0], include_top=False)
  assert sorted(variables['params']) == ['conv1', 'conv2', 'conv3', 'conv4', 'conv5']
