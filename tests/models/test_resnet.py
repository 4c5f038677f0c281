"""ResNet-50 (torchvision v1.5): parity with torchvision, exact conversion, frozen BN, shapes.

Parity fixture: tests/fixtures/torchvision_resnet50.npz, written by
tests/parity/make_resnet_fixture.py (torch 2.13 / torchvision 0.28, CPU): every tensor of
`resnet50(weights=None)`, BN running statistics included, replaced by the seeded rule of
tests/parity/seeded_weights.py; the weights and the input are regenerated here from the stored
names/shapes/seed, so no torch is needed.
"""
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.models.backbones.convert import ConversionError
from fgjax.models.backbones.resnet import ResNet50, from_torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'parity'))
import seeded_weights as sw  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'torchvision_resnet50.npz')
KEY = jax.random.key(0, impl='rbg')  # fast to compile on CPU (see test_bcnn_model.py)
STRIDES = {'stem': 4, 'layer1': 4, 'layer2': 8, 'layer3': 16, 'layer4': 32}
CHANNELS = {'stem': 64, 'layer1': 256, 'layer2': 512, 'layer3': 1024, 'layer4': 2048}


@functools.lru_cache(maxsize=None)
def _fixture():
  with np.load(FIXTURE, allow_pickle=False) as f:
    fx = {k: f[k] for k in f.files}
  assert int(fx['rule_version']) == sw.RULE_VERSION
  seed = int(fx['seed'])
  state_dict = sw.seeded_state_dict(fx['names'], sw.unpad_shapes(fx['shapes']), seed)
  images = sw.seeded_images(seed, tuple(int(s) for s in fx['input_shape']))
  return fx, state_dict, images


@functools.lru_cache(maxsize=None)
def _variables():
  return from_torchvision(_fixture()[1])


@functools.lru_cache(maxsize=None)
def _apply(bn_frozen: bool, train: bool):
  """Jitted apply of ResNet50(include_top=True, bn_frozen), compiled once per combination."""
  model = ResNet50(include_top=True, bn_frozen=bn_frozen)
  if train:
    return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def test_parity_with_torchvision():
  """Logits and layer4 (and layer1) of the converted model match torchvision's.

  Observed (jax 0.10.2 CPU vs torch 2.13 CPU, float32): max|a-b| / max|b| about 1.0e-6 (logits),
  1.1e-6 (layer4), 5e-7 (layer1); the bound is 1e-4.
  """
  fx, _, images = _fixture()
  out = _apply(False, False)(_variables(), images)
  assert out['logits'].dtype == jnp.float32
  pairs = {'logits': out['logits'], 'layer4': out['features']['layer4'],
           'layer1': out['features']['layer1']}
  for name, got in pairs.items():
    want = fx[name]
    assert got.shape == want.shape, name
    assert _rel(got, want) <= 1e-4, (name, _rel(got, want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=name)


def test_conversion_variables_layout():
  v = _variables()
  assert set(v) == {'params', 'batch_stats'}
  p, s = v['params'], v['batch_stats']
  assert p['conv1']['kernel'].shape == (7, 7, 3, 64) and p['fc']['kernel'].shape == (2048, 1000)
  assert p['layer2_0']['conv2']['kernel'].shape == (3, 3, 128, 128)
  assert p['layer4_0']['downsample_conv']['kernel'].shape == (1, 1, 1024, 2048)
  assert 'downsample_conv' not in p['layer1_1'] and 'downsample_bn' not in s['layer1_1']
  leaves = jax.tree_util.tree_leaves(v)
  assert all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in leaves)
  sd = _fixture()[1]
  np.testing.assert_array_equal(s['layer3_5']['bn2']['var'], sd['layer3.5.bn2.running_var'])
  np.testing.assert_array_equal(p['fc']['kernel'], sd['fc.weight'].T)
  # include_top=False ignores fc.* (and needs no fc).
  headless = from_torchvision(sd, include_top=False)
  assert 'fc' not in headless['params']
  from_torchvision({k: x for k, x in sd.items() if not k.startswith('fc.')}, include_top=False)


@pytest.mark.parametrize('case', ['missing', 'extra', 'wrong_shape', 'wrong_rank'])
def test_conversion_errors_name_the_tensor(case):
  sd = dict(_fixture()[1])
  name = 'layer3.2.bn2.running_mean'
  if case == 'missing':
    del sd[name]
  elif case == 'extra':
    name = 'layer5.0.conv1.weight'
    sd[name] = np.zeros((3, 3), np.float32)
  elif case == 'wrong_shape':
    name = 'layer2.0.conv2.weight'
    sd[name] = np.zeros((128, 128, 5, 5), np.float32)
  else:
    name = 'fc.weight'
    sd[name] = np.zeros((1000,), np.float32)
  with pytest.raises(ConversionError) as err:
    from_torchvision(sd)
  assert name in str(err.value)


def test_conversion_lists_all_problems_in_one_error():
  sd = dict(_fixture()[1])
  del sd['bn1.weight']
  sd['extra.weight'] = np.zeros(3, np.float32)
  sd['layer1.0.conv1.weight'] = np.zeros((64, 64, 3, 3), np.float32)
  with pytest.raises(ConversionError) as err:
    from_torchvision(sd)
  msg = str(err.value)
  assert all(n in msg for n in ('bn1.weight', 'extra.weight', 'layer1.0.conv1.weight'))


def test_bn_frozen_uses_and_keeps_running_statistics():
  fx, _, images = _fixture()
  v = _variables()
  ref = _apply(False, False)(v, images)
  frozen, updates = _apply(True, True)(v, images)
  for a, b in [(frozen['logits'], ref['logits']),
               (frozen['features']['layer4'], ref['features']['layer4'])]:
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(b).max()))
  same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)),
                                updates['batch_stats'], v['batch_stats'])
  assert all(jax.tree_util.tree_leaves(same))
  # Not frozen: train=True normalises with batch statistics and updates the running averages.
  live, updates = _apply(False, True)(v, images)
  assert _rel(live['logits'], ref['logits']) > 1e-2
  old = v['batch_stats']['layer4_2']['bn3']['mean']
  assert not np.allclose(old, updates['batch_stats']['layer4_2']['bn3']['mean'])


@pytest.mark.parametrize('hw', [(64, 64), (448, 448), (97, 130)])
def test_feature_shapes_and_strides(hw):
  model = ResNet50()
  assert model.feature_strides == STRIDES
  x = jax.ShapeDtypeStruct((1, *hw, 3), jnp.uint8)
  out = jax.eval_shape(lambda x: model.init_with_output(KEY, x)[0], x)
  assert set(out) == {'features'}
  grids = model.feature_grid(*hw)
  for name, f in out['features'].items():
    assert f.shape == (1, *grids[name], CHANNELS[name]) and f.dtype == jnp.float32, name
    assert grids[name] == tuple(-(-n // STRIDES[name]) for n in hw), name
  if hw == (448, 448):
    assert out['features']['layer4'].shape == (1, 14, 14, 2048)


def test_feature_shapes_computed_at_64():
  """The real (not abstract) forward at 64x64, from the parity run's compiled function."""
  _, _, images = _fixture()
  out = _apply(False, False)(_variables(), images)
  assert {k: f.shape[1:] for k, f in out['features'].items()} == {
      k: (64 // s, 64 // s, CHANNELS[k]) for k, s in STRIDES.items()}


def test_bf16_compute_keeps_float32_params_and_logits():
  model = ResNet50(include_top=True, num_classes=7, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.uint8)
  variables, out = jax.eval_shape(
      lambda x: (lambda o, v: (v, o))(*model.init_with_output(KEY, x)), x)
  dtypes = {l.dtype for l in jax.tree_util.tree_leaves(variables)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  assert variables['params']['fc']['kernel'].shape == (2048, 7)
  assert out['logits'].dtype == jnp.float32 and out['logits'].shape == (2, 7)
  assert out['features']['layer4'].dtype == jnp.bfloat16
  train_out = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']), variables, x)
  assert train_out[0]['logits'].dtype == jnp.float32
  assert {l.dtype for l in jax.tree_util.tree_leaves(train_out[1])} == {jnp.dtype(jnp.float32)}


def test_rejects_non_nhwc_rgb():
  with pytest.raises(ValueError, match='NHWC'):
    jax.eval_shape(lambda x: ResNet50().init(KEY, x),
                   jax.ShapeDtypeStruct((1, 3, 32, 32), jnp.uint8))
