"""SmallResNet: the backbone contract (strides, grids, dtypes, BN collections, preprocessing) and
what makes it residual (a zeroed residual branch passes its input through)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.default_config import FGVC_STREAM_R
from fgjax.models.backbones import SmallResNet, get_backbone

KEY = jax.random.key(0, impl='rbg')  # fast to compile on CPU (see tests/models/test_bcnn_model.py)
TINY = {'widths': (4, 6, 8, 5), 'blocks': (1, 2, 1, 1)}


def _uint8(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def test_registered_and_built_from_kwargs():
  bb = get_backbone('small_resnet', widths=[4, 8], blocks=[1, 1], strides=[1, 2],
                    dtype=jnp.bfloat16)
  assert isinstance(bb, SmallResNet) and bb.dtype == jnp.bfloat16
  assert (bb.widths, bb.blocks, bb.strides) == ((4, 8), (1, 1), (1, 2))  # lists become tuples
  hash(bb)


@pytest.mark.parametrize('hw', [(64, 64), (50, 37), (17, 9)])
@pytest.mark.parametrize('strides', [(2, 2, 2, 1), (1, 2, 2, 2), (1, 3, 1, 2)])
def test_strides_and_grids_match_the_outputs(hw, strides):
  bb = SmallResNet(strides=strides, **TINY)
  out = jax.eval_shape(lambda: bb.init_with_output(KEY, jnp.zeros((2, *hw, 3), jnp.uint8))[0])
  assert set(out) == {'features'}
  feats, grids = out['features'], bb.feature_grid(*hw)
  names = ['stem', 'stage1', 'stage2', 'stage3', 'stage4']
  assert list(bb.feature_strides) == list(grids) == names  # in network order
  assert set(feats) == set(names)
  for name, width in zip(names, (TINY['widths'][0],) + TINY['widths']):
    assert feats[name].shape == (2, *grids[name], width), name
    stride = bb.feature_strides[name]
    assert grids[name] == (-(-hw[0] // stride), -(-hw[1] // stride)), name


def test_defaults_end_at_the_d_streams_8x8_grid_at_128():
  bb = SmallResNet()
  assert bb.feature_strides == {'stem': 2, 'stage1': 4, 'stage2': 8, 'stage3': 16, 'stage4': 16}
  out = jax.eval_shape(lambda: bb.init_with_output(KEY, jnp.zeros((1, 128, 128, 3), jnp.uint8))[0])
  assert out['features']['stage4'].shape == (1, 8, 8, 128)
  stream = get_backbone(FGVC_STREAM_R['backbone'], **FGVC_STREAM_R['kwargs'])
  assert stream.feature_grid(128, 128)[FGVC_STREAM_R['layer']] == (8, 8)


def test_param_count_of_the_defaults():
  variables = jax.eval_shape(lambda: SmallResNet().init(KEY, jnp.zeros((1, 32, 32, 3), jnp.uint8)))
  params = variables['params']
  # 3x3 convs: stem 3->32; per stage conv1 cin->w and conv2 w->w; 1x1 projections where the stride
  # or width changes (all four stages with strides (2, 2, 2, 1) and widths 32, 64, 96, 128); every
  # BN has a scale and a bias; no conv biases with BN.
  widths, cin = (32, 64, 96, 128), (32, 32, 64, 96)
  convs = 27 * 32 + sum(9 * i * w + 9 * w * w + i * w for i, w in zip(cin, widths))
  bns = 2 * 32 + sum(3 * 2 * w for w in widths)
  assert sum(p.size for p in jax.tree.leaves(params)) == convs + bns
  assert set(params['stage1_block1']) == {'conv1', 'bn1', 'conv2', 'bn2', 'proj_conv', 'proj_bn'}
  assert 'bias' not in params['stem_conv']


def test_identity_shortcut_where_the_shape_is_kept():
  bb = SmallResNet(widths=(4, 4, 8), blocks=(2, 1, 1), strides=(1, 1, 2))
  params = jax.eval_shape(lambda: bb.init(KEY, jnp.zeros((1, 8, 8, 3), jnp.uint8)))['params']
  assert 'proj_conv' not in params['stage1_block1'] and 'proj_conv' not in params['stage2_block1']
  assert 'proj_conv' in params['stage3_block1'] and 'proj_conv' not in params['stage1_block2']


@pytest.mark.parametrize('use_bn', [True, False])
def test_a_zeroed_residual_branch_passes_its_input_through(use_bn):
  bb = SmallResNet(widths=(6, 6), blocks=(2, 1), strides=(1, 1), use_bn=use_bn)
  x = _uint8((2, 12, 10, 3))
  v = jax.tree.map(np.asarray, bb.init(KEY, x))
  v = jax.tree_util.tree_map_with_path(lambda p, a: _zero_branch_end(p, a, use_bn), v)
  feats = bb.apply(v, x)['features']
  assert float(jnp.abs(feats['stem']).max()) > 0  # post-ReLU, so relu(0 + x) == x
  np.testing.assert_allclose(feats['stage1'], feats['stem'], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(feats['stage2'], feats['stem'], rtol=1e-6, atol=1e-6)
  # With the branches as initialised, a block changes its input.
  assert not np.allclose(bb.apply(bb.init(KEY, x), x)['features']['stage1'], feats['stem'])


def _zero_branch_end(path, array, use_bn):
  """Zeros the last layer of every residual branch: bn2's scale and bias (or conv2's kernel and
  bias without BN), so the branch adds 0."""
  names = [getattr(k, 'key', None) for k in path]
  last = 'bn2' if use_bn else 'conv2'
  if names[0] == 'params' and last in names and 'block' in names[1]:
    return np.zeros_like(array)
  return array


def test_batch_norm_collections_and_train_mode():
  bb = SmallResNet(widths=(4, 8), blocks=(1, 1), strides=(1, 2))
  x = _uint8((4, 16, 16, 3))
  v = bb.init(KEY, x)
  assert set(v) == {'params', 'batch_stats'}
  assert set(v['batch_stats']) == {'stem_bn', 'stage1_block1', 'stage2_block1'}
  assert set(v['batch_stats']['stage2_block1']) == {'bn1', 'bn2', 'proj_bn'}
  _, upd = bb.apply(v, x, train=True, mutable=['batch_stats'])
  old, new = v['batch_stats']['stem_bn'], upd['batch_stats']['stem_bn']
  # momentum 0.9: the running mean moves a tenth of the way to the batch mean.
  assert not np.allclose(old['mean'], new['mean'])
  batch_mean = (new['mean'] - 0.9 * old['mean']) / 0.1
  assert np.all(np.isfinite(batch_mean))
  # Evaluation reads the running statistics: its output does not depend on the other images.
  a = bb.apply(v, x)['features']['stage2']
  b = bb.apply(v, x[:1])['features']['stage2']
  np.testing.assert_allclose(a[:1], b, rtol=1e-5, atol=1e-5)
  assert 'batch_stats' not in SmallResNet(widths=(4,), blocks=(1,), strides=(1,),
                                          use_bn=False).init(KEY, x)


def test_dtypes_and_uint8_equals_float():
  bb = SmallResNet(widths=(4, 4), blocks=(1, 1), strides=(1, 2), dtype=jnp.bfloat16)
  x8 = _uint8((2, 16, 16, 3))
  v = bb.init(KEY, x8)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))
  f8, ff = bb.apply(v, x8)['features'], bb.apply(v, x8.astype(jnp.float32))['features']
  for k in f8:
    assert f8[k].dtype == jnp.bfloat16
    np.testing.assert_array_equal(f8[k], ff[k])


def test_preprocessing_is_its_mean_std():
  assert (SmallResNet.mean, SmallResNet.std) == (127.5, 64.0)
  bb = SmallResNet(widths=(3,), blocks=(1,), strides=(1,), use_bn=False)
  x = jnp.asarray(np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3) * 2.6, jnp.float32)
  v = jax.tree.map(np.zeros_like, bb.init(KEY, x))
  v['params']['stem_conv']['kernel'][1, 1] = np.eye(3)  # the stem samples the normalised input
  stem = bb.apply(v, x)['features']['stem']
  np.testing.assert_allclose(stem, np.maximum((x[:, ::2, ::2] - 127.5) / 64.0, 0), rtol=1e-6)


@pytest.mark.parametrize('kwargs, match', [
    ({'widths': (4, 8), 'blocks': (1,), 'strides': (1, 2)}, 'blocks'),
    ({'widths': (4, 8), 'blocks': (1, 1), 'strides': (1, 0)}, 'strides'),
    ({'widths': (), 'blocks': (), 'strides': ()}, 'widths'),
])
def test_bad_fields_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    SmallResNet(**kwargs).feature_strides  # pylint: disable=expression-not-assigned
