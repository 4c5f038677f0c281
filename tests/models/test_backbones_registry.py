"""Backbone registry and the SmallCNN contract (strides, grids, dtypes, preprocessing)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.models import backbones
from fgjax.models.backbones import SmallCNN, get_backbone, list_backbones

KEY = jax.random.key(0, impl='rbg')  # fast to compile on CPU (see tests/models/test_bcnn_model.py)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError) as err:
    get_backbone('vgg_does_not_exist')
  msg = str(err.value)
  assert 'vgg_does_not_exist' in msg
  for name in list_backbones():
    assert name in msg


def test_registry_contents_and_kwargs():
  assert 'small_cnn' in list_backbones() and list_backbones() == sorted(backbones.BACKBONES)
  assert backbones.BACKBONES['small_cnn'] is SmallCNN
  bb = get_backbone('small_cnn', widths=(4, 8), downsample=(1, 2), dtype=jnp.bfloat16)
  assert isinstance(bb, SmallCNN) and tuple(bb.widths) == (4, 8) and bb.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match='already registered'):
    backbones.register_backbone('small_cnn', nn.Dense)


@pytest.mark.parametrize('hw', [(64, 64), (50, 37)])
@pytest.mark.parametrize('downsample', [(2, 2, 2, 1), (1, 2, 2, 2)])
def test_small_cnn_strides_and_grids(hw, downsample):
  bb = SmallCNN(widths=(4, 6, 8, 5), downsample=downsample)
  x = jnp.zeros((2, *hw, 3), jnp.uint8)
  out = jax.eval_shape(lambda: bb.init_with_output(KEY, x)[0])
  assert set(out) == {'features'}
  feats = out['features']
  assert set(feats) == set(bb.feature_strides) == {'conv1', 'conv2', 'conv3', 'conv4'}
  grids = bb.feature_grid(*hw)
  for (name, f), width in zip(sorted(feats.items()), bb.widths):
    assert f.shape == (2, *grids[name], width)
    assert abs(f.shape[1] - hw[0] / bb.feature_strides[name]) < 1
  if hw == (64, 64):
    assert feats['conv4'].shape[1:3] == (8, 8)
    assert all(grids[k][0] * bb.feature_strides[k] == 64 for k in grids)
  assert SmallCNN().feature_strides == {'conv1': 2, 'conv2': 4, 'conv3': 8, 'conv4': 8}


def test_small_cnn_dtypes_and_uint8_equals_float():
  bb = SmallCNN(widths=(4, 4, 4, 4), dtype=jnp.bfloat16)
  x8 = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
  v = bb.init(KEY, x8)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))
  f8, ff = bb.apply(v, x8)['features'], bb.apply(v, x8.astype(jnp.float32))['features']
  for k in f8:
    assert f8[k].dtype == jnp.bfloat16
    np.testing.assert_array_equal(f8[k], ff[k])
  out, upd = bb.apply(v, x8, train=True, mutable=['batch_stats'])
  assert set(upd['batch_stats']) == {'bn1', 'bn2', 'bn3', 'bn4'}


def test_small_cnn_preprocessing_is_documented_mean_std():
  assert (SmallCNN.mean, SmallCNN.std) == (127.5, 64.0)
  bb = SmallCNN(widths=(3,), downsample=(1,), use_bn=False)
  x = jnp.asarray(np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3) * 2.6, jnp.float32)
  v = bb.init(KEY, x)
  kernel = np.zeros((3, 3, 3, 3), np.float32)
  kernel[1, 1] = np.eye(3)  # identity 3x3 conv: the output is relu(normalised input)
  v = {'params': {'conv1': {'kernel': kernel, 'bias': np.zeros(3, np.float32)}}}
  np.testing.assert_allclose(bb.apply(v, x)['features']['conv1'], np.maximum((x - 127.5) / 64.0, 0), rtol=1e-6)
