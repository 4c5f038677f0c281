"""BCNN module: shapes, dtypes, parameter names, cropping of differing grids, and equality of its
head with the ops of fgjax.ops.bilinear composed by hand on the backbone maps."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fgjax.models.backbones import SmallCNN
from fgjax.models.bilinear import BCNN
from fgjax.ops import bilinear as bops

# RBG keys: on XLA CPU, initialising through the default (partitionable threefry) PRNG costs
# seconds of compile per model; RngBitGenerator keys compile in a fraction of that.
KEY = jax.random.key(0, impl='rbg')


class Stub(nn.Module):
  """Stand-in backbone: one VALID conv, so a 28x28 input gives 28x28 (kernel 1) or 27x27 (kernel 2)."""
  channels: int
  kernel: int
  dtype: jnp.dtype = jnp.float32
  feature_strides = {'feat': 1}

  @nn.compact
  def __call__(self, images, train=False):
    x = images.astype(jnp.float32) / 255.0
    x = nn.Conv(self.channels, (self.kernel, self.kernel), padding='VALID', dtype=self.dtype)(x)
    return {'features': {'feat': nn.relu(x)}}


def _images(n, h, w, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8))


def _small(**kw):
  return SmallCNN(widths=(4, 8, 8, 6), **kw)


def _init(model, x):
  return jax.jit(model.init)(KEY, x)


def _sub(variables, name):
  return {col: tree[name] for col, tree in variables.items() if name in tree}


def _head_by_hand(model, variables, images, a, b):
  """Projection, pooling, sqrt, l2 and classifier from the ops, on given backbone maps."""
  params = variables['params']
  if b is not None and a.shape[1:3] != b.shape[1:3]:
    a, b = bops.crop_to_common(a, b)
  if model.proj_dim_a:
    a = nn.relu(nn.Conv(model.proj_dim_a, (1, 1)).apply({'params': params['proj_a']}, a))
  if model.proj_dim_b:
    b = nn.relu(nn.Conv(model.proj_dim_b, (1, 1)).apply({'params': params['proj_b']}, b))
  pool = bops.spp_bilinear_pool if model.spp else bops.bilinear_pool
  z = bops.flatten_bilinear(pool(a, b))
  f = bops.l2_normalize(bops.signed_sqrt(z, model.sqrt_variant, model.sqrt_eps), eps=model.l2_eps)
  logits = f @ params['classifier']['kernel'] + params['classifier']['bias']
  return f, logits


def test_shared_stream_symmetric():
  model = BCNN(num_classes=7, backbone_a=_small(), layer_a='conv4')
  x = _images(3, 32, 32)
  v = _init(model, x)
  assert set(v['params']) == {'backbone_a', 'classifier'} and 'backbone_a' in v['batch_stats']
  out = model.apply(v, x)
  assert out['logits'].shape == (3, 7) and out['logits'].dtype == jnp.float32
  assert out['features'].shape == (3, 6 * 6) and out['features'].dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(out['features'], axis=-1), 1.0, rtol=1e-5)
  maps = _small().apply(_sub(v, 'backbone_a'), x)['features']
  f, logits = _head_by_hand(model, v, x, maps['conv4'], None)
  np.testing.assert_allclose(out['features'], f, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['logits'], logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('spp', [False, True])
def test_two_streams_crop_28_vs_27(spp):
  model = BCNN(num_classes=5, backbone_a=Stub(4, 1), layer_a='feat', backbone_b=Stub(3, 2),
               spp=spp, sqrt_variant='cvl_umass')
  x = _images(2, 28, 28)
  v = _init(model, x)
  assert set(v['params']) == {'backbone_a', 'backbone_b', 'classifier'}
  out = model.apply(v, x)
  assert out['features'].shape == (2, (5 if spp else 1) * 4 * 3)
  a = Stub(4, 1).apply(_sub(v, 'backbone_a'), x)['features']['feat']
  b = Stub(3, 2).apply(_sub(v, 'backbone_b'), x)['features']['feat']
  assert a.shape[1:3] == (28, 28) and b.shape[1:3] == (27, 27)
  f, logits = _head_by_hand(model, v, x, a, b)  # crops a's last row and column
  np.testing.assert_allclose(out['features'], f, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['logits'], logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out['features'], axis=-1), 1.0, rtol=1e-5)


def test_spp_two_smallcnn_streams_with_projection():
  bb_a, bb_b = _small(), SmallCNN(widths=(4, 4, 5, 4))
  model = BCNN(num_classes=4, backbone_a=bb_a, layer_a='conv4', backbone_b=bb_b, layer_b='conv3',
               proj_dim_a=3, spp=True)
  x = _images(2, 32, 32)
  v = _init(model, x)
  assert set(v['params']) == {'backbone_a', 'backbone_b', 'proj_a', 'classifier'}
  out = jax.jit(model.apply)(v, x)
  assert out['features'].shape == (2, 5 * 3 * 5)  # SPP: 5 * Ca * Cb
  a = bb_a.apply(_sub(v, 'backbone_a'), x)['features']['conv4']
  b = bb_b.apply(_sub(v, 'backbone_b'), x)['features']['conv3']
  f, logits = _head_by_hand(model, v, x, a, b)
  np.testing.assert_allclose(out['features'], f, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['logits'], logits, rtol=1e-5, atol=1e-5)


def test_shared_trunk_two_layers_and_projections():
  model = BCNN(num_classes=3, backbone_a=_small(), layer_a='conv2', layer_b='conv4',
               proj_dim_a=2, proj_dim_b=3)
  assert not model.symmetric
  x = _images(2, 32, 32)
  v = _init(model, x)
  assert set(v['params']) == {'backbone_a', 'proj_a', 'proj_b', 'classifier'}
  out = model.apply(v, x)
  maps = _small().apply(_sub(v, 'backbone_a'), x)['features']  # conv2 8x8 cropped to conv4's 4x4
  f, _ = _head_by_hand(model, v, x, maps['conv2'], maps['conv4'])
  np.testing.assert_allclose(out['features'], f, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_gives_float32_outputs():
  model = BCNN(num_classes=6, backbone_a=_small(dtype=jnp.bfloat16), layer_a='conv4',
               backbone_b=Stub(3, 1, dtype=jnp.bfloat16), layer_b='feat', proj_dim_a=4,
               dtype=jnp.bfloat16)
  x = _images(2, 16, 16)
  v = _init(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v['params']))
  out = model.apply(v, x)
  assert out['logits'].dtype == jnp.float32 and out['features'].dtype == jnp.float32
  assert out['features'].shape == (2, 4 * 3)
  np.testing.assert_allclose(np.linalg.norm(out['features'], axis=-1), 1.0, rtol=1e-5)


def test_train_step_dropout_batch_stats_and_grads():
  model = BCNN(num_classes=5, backbone_a=_small(), layer_a='conv4', dropout_rate=0.5)
  x, y = _images(4, 32, 32), jnp.arange(4) % 5
  v = _init(model, x)

  @jax.jit
  def loss_fn(params, batch_stats, rng):
    out, upd = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                           rngs={'dropout': rng}, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(out['logits'], y).mean(), (out, upd)

  (loss, (out, upd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      v['params'], v['batch_stats'], jax.random.key(1, impl='rbg'))
  assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads['backbone_a']))
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), upd['batch_stats'], v['batch_stats'])
  assert all(jax.tree.leaves(changed))
  eval_out = model.apply(v, x)  # eval: deterministic, no rng needed
  assert not np.allclose(np.asarray(out['logits']), np.asarray(eval_out['logits']))


def test_bad_configuration_errors():
  with pytest.raises(ValueError, match='cvl_umass'):
    BCNN(num_classes=2, backbone_a=_small(), layer_a='conv4', sqrt_variant='nope')
  model = BCNN(num_classes=2, backbone_a=_small(), layer_a='conv9')
  with pytest.raises(ValueError, match='conv9'):
    _init(model, _images(1, 16, 16))
