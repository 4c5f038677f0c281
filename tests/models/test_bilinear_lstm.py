"""BilinearLSTM (Wu & Wang 2017): wiring against an explicit float64 composition that materialises
every per-location bilinear matrix B_uv, the factorised normalisation, variants and shapes."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax import methods
from fgjax.default_config import get_base_config, synthetic_cpu_recipe
from fgjax.models import bilinear_lstm as blstm
from fgjax.models import spatial_lstm as slstm
from fgjax.models.backbones import get_backbone


def _ssqrt_l2_outer(a, b):
  """Oracle: signed sqrt then l2 of the materialised outer product a b^T, float64."""
  outer = np.einsum('...i,...j->...ij', a.astype(np.float64), b.astype(np.float64))
  s = np.sign(outer) * np.sqrt(np.abs(outer))
  norm = np.sqrt((s ** 2).sum((-2, -1), keepdims=True))
  return s / np.maximum(norm, 1e-12)


def test_normalise_factor_is_the_per_location_bcnn_normalisation():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 3, 3, 7)), rng.normal(size=(2, 3, 3, 5))
  got = np.einsum('...i,...j->...ij', np.asarray(blstm.normalise_factor(a, eps=0.0)),
                  np.asarray(blstm.normalise_factor(b, eps=0.0)))
  np.testing.assert_allclose(got, _ssqrt_l2_outer(a, b), rtol=2e-5, atol=1e-6)


def _model(**kw):
  base = dict(num_classes=5, backbone_a=get_backbone('small_cnn', widths=(8, 8, 8, 6)),
              layer_a='conv4', hidden=6, dropout_rate=0.0)
  base.update(kw)
  return blstm.BilinearLSTM(**base)


def _init(model, shape=(2, 32, 32, 3), seed=0):
  x = jax.random.uniform(jax.random.key(seed), shape, minval=0, maxval=255)
  v = model.init({'params': jax.random.key(1), 'dropout': jax.random.key(2)}, x)
  return x, v


def test_model_equals_explicit_composition_with_materialised_bilinear_inputs():
  with jax.default_matmul_precision('highest'):
    # The causal rectangle, as this composition's AttentiveSpatialLSTM (the model's default became
    # the whole grid; tests/methods/test_bilinear_lstm_readings.py composes that one).
    model = _model(readout='flatten', attention_region='causal')
    x, v = _init(model)
    out = model.apply(v, x, train=False)
    p = v['params']
    feats = get_backbone('small_cnn', widths=(8, 8, 8, 6)).apply(
        {'params': p['backbone_a'], 'batch_stats': v['batch_stats']['backbone_a']}, x,
        train=False)['features']['conv4']
    f = np.asarray(feats, np.float64)
    s = np.sign(f) * np.sqrt(np.abs(f) + 1e-5)
    s = s / np.linalg.norm(s, axis=-1, keepdims=True)
    big_b = np.einsum('nhwi,nhwj->nhwij', s, s)  # every B_uv, materialised
    gates_x = np.einsum('nhwij,ijg->nhwg', big_b, np.asarray(p['gate_input']['kernel'], np.float64))
    gx = jnp.asarray(gates_x, jnp.float32)
    init1 = slstm.InitialState(6).apply({'params': p['init_1']}, gx)
    h1, att = slstm.AttentiveSpatialLSTM(6).apply({'params': p['lstm_1']}, gx, init1)
    init2 = slstm.InitialState(6).apply({'params': p['init_2']}, h1)
    h2 = slstm.SpatialLSTM(6).apply({'params': p['lstm_2']}, h1, init2)
    flat = np.asarray(h2, np.float64).reshape(2, -1)
    logits = flat @ np.asarray(p['classifier']['kernel'], np.float64) + np.asarray(
        p['classifier']['bias'], np.float64)
  np.testing.assert_allclose(out['logits'], logits, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out['attention'], att, atol=1e-5)
  np.testing.assert_allclose(out['attention_mass'], np.asarray(att).sum((1, 2)), atol=1e-4)
  chex_shape = out['features'].shape
  assert chex_shape == (2, 4 * 4 * 6)


def test_attention_is_a_causal_distribution_per_cell():
  model = _model(readout='mean', attention_region='causal')
  x, v = _init(model, (2, 48, 40, 3))  # 6x5 grid
  att = np.asarray(model.apply(v, x)['attention'])
  assert att.shape == (2, 6, 5, 6, 5)
  np.testing.assert_allclose(att.sum((3, 4)), 1.0, atol=1e-5)
  ii, jj, uu, vv = np.meshgrid(*[np.arange(n) for n in (6, 5, 6, 5)], indexing='ij')
  outside = (uu > ii) | (vv > jj)
  assert np.all(att[:, outside] == 0)


@pytest.mark.parametrize('kw', [
    dict(readout='last', num_layers=1, init_source='zeros'),
    dict(readout='mean', rank=3, init_source='bilinear', input_norm='none'),
    dict(proj_dim_a=4, layer_b='conv3', window=1, query='concat', output='standard'),
])
def test_variants_build_and_give_finite_outputs(kw):
  model = _model(**kw)
  x, v = _init(model)
  out = model.apply(v, x, train=True, rngs={'dropout': jax.random.key(3)},
                    mutable=['batch_stats'])[0]
  assert out['logits'].shape == (2, 5)
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(out))
  if kw.get('readout') == 'last':
    assert out['features'].shape == (2, 6)
  if kw.get('rank'):
    assert 'p' in v['params']['gate_input'] and 'kernel' not in v['params']['gate_input']


def test_dropout_changes_training_outputs_only():
  model = _model(dropout_rate=0.5)
  x, v = _init(model)
  run = lambda key, train: model.apply(v, x, train=train, rngs={'dropout': key},
                                       mutable=['batch_stats'])[0]['logits']
  assert not np.allclose(run(jax.random.key(0), True), run(jax.random.key(1), True))
  np.testing.assert_allclose(run(jax.random.key(0), False), run(jax.random.key(1), False))


def test_bad_option_names_the_field():
  with pytest.raises(ValueError, match='readout'):
    _init(_model(readout='max'))


def test_bad_config_value_names_the_field():
  """check_config passes the defaults; a bad value fails when the model is built (the module's
  __post_init__, before compilation in experiment.setup) with a message naming the field."""
  c = synthetic_cpu_recipe(get_base_config())
  c.method = 'bilinear_lstm'
  c.model = methods.get('bilinear_lstm').default_model_config()
  methods.get('bilinear_lstm').check_config(c)
  meta = types.SimpleNamespace(num_classes=3)
  for field, bad in (('readout', 'max'), ('query', 'down'), ('init_source', 'ones'),
                     ('num_layers', 3), ('window', -2), ('dropout_rate', 1.0),
                     ('scan_groups', -1), ('output', 'lstm'), ('scan', 'raster'), ('hidden', 0),
                     ('rank', -1), ('proj_dim_a', -1), ('attention_tau', -1.0)):
    c2 = c.copy_and_resolve_references()
    c2.model[field] = bad
    with pytest.raises(ValueError, match=f'config.model.{field}'):
      methods.get('bilinear_lstm').build_model(c2, meta)


def test_build_from_config_uses_the_method_registry():
  c = synthetic_cpu_recipe(get_base_config())
  c.method = 'bilinear_lstm'
  c.model = methods.get('bilinear_lstm').default_model_config()
  c.model.hidden, c.model.rank, c.model.window = 8, 4, 2
  model = methods.get('bilinear_lstm').build_model(c, types.SimpleNamespace(num_classes=3))
  assert (model.hidden, model.rank, model.window, model.readout) == (8, 4, 2, 'flatten')
  assert model.scan_groups == 0  # auto: the spatial LSTM modules' default
  c.model.scan_groups = 3
  model3 = methods.get('bilinear_lstm').build_model(c, types.SimpleNamespace(num_classes=3))
  x, v = _init(model3)
  assert model3.scan_groups == 3
  np.testing.assert_allclose(np.asarray(model3.apply(v, x)['logits']),
                             np.asarray(model.apply(v, x)['logits']), rtol=1e-5, atol=1e-6)
