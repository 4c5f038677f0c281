"""bilinear_lstm readings (Wu & Wang 2017, "Where to Focus"): the attention region and eq. (5)'s
penalty targets, the gate inputs' initial scale, one dropout mask on B, per-image normalisation,
weight decay coverage, the diagnostics, and the migration of runs written before these fields."""

import json
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fgjax import methods, optim, run
from fgjax.default_config import get_base_config, synthetic_cpu_recipe
from fgjax.methods import bilinear_lstm as method_lib
from fgjax.methods.bilinear_lstm import bilinear_lstm_recipe
from fgjax.models import bilinear_lstm as blstm
from fgjax.models import spatial_lstm as slstm
from fgjax.models.backbones import get_backbone

METHOD = methods.get('bilinear_lstm')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _uniform_attention(k_h, k_w, region, window=None):
  m = slstm.region_mask(k_h, k_w, region, window).astype(np.float64)
  return (m / m.sum(1, keepdims=True)).reshape(k_h, k_w, k_h, k_w)


def _self_attention(k_h, k_w):
  return np.eye(k_h * k_w).reshape(k_h, k_w, k_h, k_w)


def _penalty(att, region, target, window=None, tau=1.0):
  """eq. (5)'s penalty of one image's attention (K, K, K, K) through the method's loss."""
  model = ml_collections.ConfigDict(METHOD.default_model_config())
  model.attention_region, model.attention_target, model.attention_tau = region, target, tau
  model.window = -1 if window is None else window
  outputs = {'logits': np.zeros((1, 3), np.float32),
             'attention_mass': att.sum((0, 1))[None].astype(np.float32)}
  _, metrics = METHOD.loss_fn(outputs, {'label': np.zeros(1, np.int32)},
                              types.SimpleNamespace(model=model))
  return float(metrics['attention_penalty'])


# --------------------------------------------------------------------- 1. region and penalty
def test_literal_causal_penalty_is_large_for_uniform_and_zero_only_for_self_attention():
  """The reading that switched the attention off: on the causal rectangle with one tau = 1 the
  penalty of uniform attention is ~112 (8x8) and ~1,780 (27x27); self-only attention scores 0."""
  assert _penalty(_uniform_attention(8, 8, 'causal'), 'causal', 'constant') == pytest.approx(
      112.415, abs=1e-2)
  assert _penalty(_uniform_attention(27, 27, 'causal'), 'causal', 'constant') == pytest.approx(
      1781.87, rel=1e-4)
  assert _penalty(_self_attention(8, 8), 'causal', 'constant') == pytest.approx(0.0, abs=1e-6)


def test_whole_grid_penalty_zeros_are_the_doubly_stochastic_attentions():
  """Whole grid, tau = 1 (Xu et al.'s penalty): uniform, self-only and any permutation score 0;
  every cell on the same location does not."""
  k = 6
  assert _penalty(_uniform_attention(k, k, 'grid'), 'grid', 'uniform') == pytest.approx(0, abs=1e-6)
  assert _penalty(_self_attention(k, k), 'grid', 'uniform') == pytest.approx(0, abs=1e-6)
  perm = np.eye(k * k)[np.random.default_rng(0).permutation(k * k)].reshape(k, k, k, k)
  assert _penalty(perm, 'grid', 'uniform') == pytest.approx(0, abs=1e-6)
  same = np.zeros((k, k, k, k))
  same[:, :, 2, 3] = 1.0
  assert _penalty(same, 'grid', 'uniform') == pytest.approx((k * k - 1) ** 2 + k * k - 1)
  # On the whole grid without a window the targets are tau itself: 'constant' is the same penalty.
  np.testing.assert_allclose(method_lib.location_targets((k, k), 'grid', None, 2.0, 'uniform'),
                             2.0)


def _harmonic(n):
  return sum(1.0 / m for m in range(1, n + 1))


@pytest.mark.parametrize('grid', [(8, 8), (5, 7), (1, 4)])
def test_causal_uniform_targets_are_harmonic_and_zero_for_uniform_attention(grid):
  """tau_uv = (H_H - H_u)(H_W - H_v): uniform causal attention has penalty 0, self-only not."""
  k_h, k_w = grid
  want = np.array([[(_harmonic(k_h) - _harmonic(u)) * (_harmonic(k_w) - _harmonic(v))
                    for v in range(k_w)] for u in range(k_h)])
  np.testing.assert_allclose(slstm.uniform_mass(k_h, k_w, 'causal'), want, rtol=1e-12)
  np.testing.assert_allclose(method_lib.location_targets(grid, 'causal', None, 1.5, 'uniform'),
                             1.5 * want, rtol=1e-6)
  uniform = _penalty(_uniform_attention(k_h, k_w, 'causal'), 'causal', 'uniform')
  assert uniform == pytest.approx(0.0, abs=1e-5)
  assert _penalty(_self_attention(k_h, k_w), 'causal', 'uniform') > 1.0


@pytest.mark.parametrize('region', ['causal', 'grid'])
def test_uniform_targets_with_a_window_are_met_by_uniform_windowed_attention(region):
  att = _uniform_attention(5, 6, region, window=1)
  assert _penalty(att, region, 'uniform', window=1) == pytest.approx(0.0, abs=1e-5)
  assert _penalty(_self_attention(5, 6), region, 'uniform', window=1) > 0.1


SMALL = dict(num_classes=5, layer_a='conv4', hidden=6, dropout_rate=0.0)


def _model(**kw):
  """A small BilinearLSTM on an 8-channel small_cnn (2x2 grid at 32x32)."""
  stream = get_backbone('small_cnn', widths=(8, 8, 8, 6))
  return blstm.BilinearLSTM(**{'backbone_a': stream, **SMALL, **kw})


def _init(model, shape=(2, 32, 32, 3), seed=0):
  """(uniform [0, 255] images, the model's variables)."""
  x = jax.random.uniform(jax.random.key(seed), shape, minval=0, maxval=255)
  return x, model.init({'params': jax.random.key(1), 'dropout': jax.random.key(2)}, x)


def _stream(v, x, widths=(8, 8, 8, 6)):
  return get_backbone('small_cnn', widths=widths).apply(
      {'params': v['params']['backbone_a'], 'batch_stats': v['batch_stats']['backbone_a']}, x,
      train=False)['features']['conv4']


def _head(model, params, a, b):
  """BilinearLSTM after its streams and normalisation, in evaluation: -> ({readout: features}
  for every readout, attention)."""
  hid = model.hidden
  gx = slstm.BilinearGateInput(hid, model.rank or None, gate_init=model.gate_init).apply(
      {'params': params['gate_input']}, a, b)
  init1 = slstm.InitialState(hid).apply({'params': params['init_1']}, gx)
  h, att = slstm.AttentiveSpatialLSTM(hid, region=model.attention_region,
                                      window=model.attention_window).apply(
                                          {'params': params['lstm_1']}, gx, init1)
  init2 = slstm.InitialState(hid).apply({'params': params['init_2']}, h)
  h = slstm.SpatialLSTM(hid).apply({'params': params['lstm_2']}, h, init2)
  features = {'flatten': h.reshape(h.shape[0], -1), 'mean': h.mean((1, 2)),
              'last': h[:, -1, -1]}
  assert set(features) == set(blstm.READOUTS)
  return features, att


def test_default_whole_grid_model_equals_its_composition_and_attends_everywhere():
  model = _model(readout='flatten')
  assert model.attention_region == 'grid'
  with jax.default_matmul_precision('highest'):
    x, v = _init(model, (2, 40, 48, 3))  # 5x6 grid
    out = model.apply(v, x)
    a = blstm.normalise_factor(_stream(v, x))
    features, att = _head(model, v['params'], a, a)
  np.testing.assert_allclose(out['features'], features['flatten'], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out['attention'], att, atol=1e-6)
  att = np.asarray(out['attention'])
  assert att.shape == (2, 5, 6, 5, 6) and np.all(att > 0)
  np.testing.assert_allclose(att.sum((3, 4)), 1.0, atol=1e-5)


def test_new_fields_check_their_values():
  for field, bad in (('attention_region', 'raster'), ('attention_target', 'tau'),
                     ('gate_init', 'xavier'), ('dropout_mask', 'entries'),
                     ('input_norm', 'image')):
    with pytest.raises(ValueError, match=f'config.model.{field}'):
      _model(**{field: bad})


# --------------------------------------------------------------------- 2. gate-input scale
SIZES = {  # (channels a, channels b, rank, hidden) of the configs' gate inputs
    'synthetic (64x64 full kernel, hidden 64)': (64, 64, 0, 64),
    'synthetic_fgvc (64x128, rank 64, hidden 64)': (64, 128, 64, 64),
    'real recipe (VGG 512x512, rank 512, hidden 512)': (512, 512, 512, 512),
}


def _gate_input_std(ca, cb, rank, hidden, init, seed=0):
  rng = np.random.default_rng(seed)
  relu = lambda c: np.maximum(rng.normal(size=(2, 4, 4, c)), 0.0).astype(np.float32)
  a, b = blstm.normalise_factor(relu(ca)), blstm.normalise_factor(relu(cb))  # |vec(a b^T)| = 1
  gate = slstm.BilinearGateInput(hidden, rank or None, gate_init=init)
  v = gate.init(jax.random.key(seed), a, b)
  return float(jnp.std(gate.apply(v, a, b)))


@pytest.mark.parametrize('name', list(SIZES))
def test_unit_gate_init_gives_unit_scale_gate_inputs(name):
  ca, cb, rank, hidden = SIZES[name]
  std = _gate_input_std(ca, cb, rank, hidden, 'unit')
  assert 0.5 <= std <= 2.0, (name, std)
  old = _gate_input_std(ca, cb, rank, hidden, 'fan_in')  # the literal reading: 1/sqrt(Ca*Cb)
  assert old == pytest.approx(1 / np.sqrt(ca * cb), rel=0.3), (name, old)


def test_real_recipe_uses_the_unit_gate_init_and_its_sizes():
  c = bilinear_lstm_recipe(get_base_config())  # the sizes SIZES assumes
  assert (c.model.rank, c.model.hidden, c.model.gate_init) == (512, 512, 'unit')


# --------------------------------------------------------------------- 3. one dropout mask on B
@pytest.mark.parametrize('mask,keep', [('bilinear', 0.5), ('factors', 0.25)])
def test_dropout_keeps_each_entry_of_b_with_one_minus_p(mask, keep):
  """Empirical keep rate of the entries of B = a b^T in the model (captured dropped factors)."""
  model = _model(dropout_rate=0.5, dropout_mask=mask)
  x, v = _init(model, (8, 32, 32, 3))

  def factors(key, rate=0.5):  # the factors a, b after dropout, captured in training
    _, state = _model(dropout_rate=rate, dropout_mask=mask).apply(
        v, x, train=True, rngs={'dropout': key}, capture_intermediates=True,
        mutable=['intermediates', 'batch_stats'])
    inter = state['intermediates']
    return [np.asarray(inter[f'Dropout_{k}']['__call__'][0], np.float64) for k in (0, 1)]

  a0, b0 = factors(jax.random.key(0), rate=0.0)  # same batch statistics, no dropout
  outer = lambda a, b: np.einsum('...i,...j->...ij', a, b)
  full = outer(a0, b0)
  live = full != 0
  kept, scale = [], []
  for seed in range(4):
    a, b = factors(jax.random.key(seed))
    dropped = outer(a, b)
    kept.append((dropped[live] != 0).mean())
    scale.append((dropped[live][dropped[live] != 0] / full[live][dropped[live] != 0]).mean())
  assert np.mean(kept) == pytest.approx(keep, abs=0.04)
  assert np.mean(scale) == pytest.approx(1 / keep, rel=1e-4)  # E[B] unchanged


# --------------------------------------------------------------------- 4. per-image normalisation
def test_image_normalisation_keeps_relative_location_norms():
  rng = np.random.default_rng(0)
  a = np.abs(rng.normal(size=(2, 3, 4, 5))) * rng.uniform(0.1, 9, size=(2, 3, 4, 1))
  b = np.abs(rng.normal(size=(2, 3, 4, 7)))
  na, nb = (np.asarray(t, np.float64) for t in blstm.normalise_image(a, b, eps=0.0))
  norms = np.linalg.norm(na, axis=-1) * np.linalg.norm(nb, axis=-1)  # |B_uv|
  np.testing.assert_allclose((norms ** 2).mean((1, 2)), 1.0, rtol=1e-5)
  raw = np.linalg.norm(np.sqrt(a), axis=-1) * np.linalg.norm(np.sqrt(b), axis=-1)
  np.testing.assert_allclose(norms / norms[:, :1, :1], raw / raw[:, :1, :1], rtol=1e-5)
  # per location instead, every |B_uv| is 1: the magnitude cue is gone
  per_loc = (np.linalg.norm(blstm.normalise_factor(a, eps=0.0), axis=-1)
             * np.linalg.norm(blstm.normalise_factor(b, eps=0.0), axis=-1))
  np.testing.assert_allclose(per_loc, 1.0, rtol=1e-5)
  out = _model(input_norm='sqrt_l2_image')
  x, v = _init(out)
  assert np.isfinite(np.asarray(out.apply(v, x)['logits'])).all()


# --------------------------------------------------------------------- 5. NaN guard, weight decay
def test_all_zero_location_and_image_have_finite_gradients():
  x = np.ones((1, 2, 2, 4), np.float32)
  x[0, 1, 0] = 0.0  # one all-zero location
  g = jax.grad(lambda x: jnp.sum(jnp.sin(blstm.normalise_factor(x))))(jnp.asarray(x))
  assert np.isfinite(np.asarray(g)).all()
  assert np.all(np.asarray(blstm.normalise_factor(x))[0, 1, 0] == 0)
  zero = jnp.zeros((1, 2, 2, 4))
  g = jax.grad(lambda a: jnp.sum(jnp.sin(blstm.normalise_image(a, a)[0])))(zero)
  assert np.isfinite(np.asarray(g)).all()


def test_recipe_weight_decay_covers_recurrent_matrices_and_low_rank_factors():
  """The optimizer's decay mask (optim.make_optimizer with the recipe's optim block): a zero
  gradient step moves exactly the decayed parameters."""
  c = bilinear_lstm_recipe(get_base_config())
  _, v = _init(_model(rank=3))
  params = v['params']
  stage = optim.make_stages(c, steps_per_epoch=10)[-1]
  tx = optim.make_optimizer(stage, params, steps_per_epoch=10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  flat = {jax.tree_util.keystr(p, simple=True, separator='/'): np.abs(np.asarray(u)).max()
          for p, u in jax.tree_util.tree_leaves_with_path(updates)}
  decayed = {k for k, u in flat.items() if u > 0}
  for name in ('lstm_1/w_up', 'lstm_1/w_left', 'lstm_2/w_up', 'lstm_2/w_left', 'gate_input/p',
               'gate_input/q', 'gate_input/r', 'lstm_1/attention_kernel', 'lstm_2/input/kernel',
               'classifier/kernel', 'init_1/h_0/kernel'):
    assert name in decayed, name
  assert not any(k.endswith('bias') for k in decayed), sorted(decayed)


# --------------------------------------------------------------------- 6. readouts at init
def _quadrant_sensitivity(model, params, a) -> dict:
  """Per readout: RMS gradient of random projections of the readout with respect to the
  bilinear factor at each location (a = b, [D,D]), top-left quadrant / bottom-right quadrant
  (a ratio of norms)."""
  k_h, k_w = a.shape[1:3]
  f0 = _head(model, params, a, a)[0]
  rs = {k: jax.random.normal(jax.random.key(7), (8,) + f.shape) for k, f in f0.items()}

  def grads(a, rs):
    proj = lambda a, r, k: jnp.sum(r * _head(model, params, a, a)[0][k])
    return {k: jax.vmap(jax.grad(proj), in_axes=(None, 0, None))(a, r, k) for k, r in rs.items()}

  out = {}
  for k, g in jax.jit(grads)(a, rs).items():
    sq = (np.asarray(g, np.float64) ** 2).mean(0).sum(axis=(0, 3))  # (K_h, K_w)
    out[k] = float(np.sqrt(sq[:k_h // 2, :k_w // 2].mean() / sq[k_h // 2:, k_w // 2:].mean()))
  return out


@pytest.mark.parametrize('region', ['causal', 'grid'])
def test_readout_sensitivity_at_init_follows_the_attention_region(region):
  """Every readout (`READOUTS`) at initialisation: on the causal rectangle the output depends
  far more on the top-left inputs (every cell may attend there) than on the bottom-right ones;
  on the whole grid about equally. docs/methods/bilinear_lstm.md gives the synthetic-size numbers
  (8x8 grid: ~10x for the quadrants and ~30x for location (0, 0) under causal attention)."""
  rng = np.random.default_rng(0)
  a = blstm.normalise_factor(np.abs(rng.normal(size=(1, 6, 6, 6))).astype(np.float32))
  model = _model(attention_region=region, hidden=8)
  _, v = _init(model, (1, 48, 48, 3))
  for readout, ratio in _quadrant_sensitivity(model, v['params'], a).items():
    if region == 'causal':
      assert ratio > 2.0, (readout, ratio)
    else:
      assert 0.5 < ratio < 2.0, (readout, ratio)


# --------------------------------------------------------------------- diagnostics
def _gathered(att, bbox=None):
  """A hand-made evaluation gather: predict_fn of known attention maps (N, K, K, K, K)."""
  n = att.shape[0]
  out = METHOD.predict_fn({'logits': np.zeros((n, 3)), 'features': np.zeros((n, 2)),
                           'attention': jnp.asarray(att, jnp.float32),
                           'attention_mass': jnp.asarray(att.sum((1, 2)), jnp.float32)})
  out = {k: np.asarray(v) for k, v in out.items()}
  if bbox is not None:
    out['bbox'] = bbox
  return out


def _config(region='grid', window=-1):
  return types.SimpleNamespace(model=types.SimpleNamespace(attention_region=region, window=window))


def test_eval_metrics_on_known_attention_maps():
  k = 4
  self_only = np.broadcast_to(_self_attention(k, k), (2, k, k, k, k))
  m = METHOD.eval_metrics(_gathered(self_only), _config())
  assert m['attention_self_mass'] == pytest.approx(1.0)
  assert m['attention_entropy'] == pytest.approx(0.0, abs=1e-6)
  assert 'attention_mass_in_box_ratio' not in m  # no boxes in this dataset
  uniform = np.broadcast_to(_uniform_attention(k, k, 'grid'), (2, k, k, k, k))
  m = METHOD.eval_metrics(_gathered(uniform), _config())
  assert m['attention_self_mass'] == pytest.approx(1 / 16)
  assert m['attention_entropy'] == pytest.approx(1.0, abs=1e-5)
  causal = np.broadcast_to(_uniform_attention(k, k, 'causal'), (2, k, k, k, k))
  m = METHOD.eval_metrics(_gathered(causal), _config('causal'))
  own = [1 / ((i + 1) * (j + 1)) for i in range(k) for j in range(k) if i + j > 0]
  assert m['attention_self_mass'] == pytest.approx(np.mean(own), rel=1e-5)  # (0,0) has no choice
  assert m['attention_entropy'] == pytest.approx(1.0, abs=1e-5)
  # In-box: every cell puts all its attention on location (0, 0), inside the first image's box
  # (a quarter of the grid) and outside the second's (the bottom-right quarter).
  corner = np.zeros((2, k, k, k, k))
  corner[:, :, :, 0, 0] = 1.0
  boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
  m = METHOD.eval_metrics(_gathered(corner, boxes), _config())
  assert m['attention_mass_in_box_ratio'] == pytest.approx((4.0 + 0.0) / 2)
  assert m['attention_self_mass'] == pytest.approx(1 / 16)  # only cell (0, 0) is on itself
  window_zero = METHOD.eval_metrics(_gathered(self_only), _config(window=0))
  assert 'attention_self_mass' not in window_zero  # no cell attends: nothing to diagnose


def test_diagnose_names_the_key_and_value():
  assert METHOD.diagnose({'attention_self_mass': 0.3, 'attention_entropy': 0.7}) == []
  assert METHOD.diagnose({}) == []
  (w,) = METHOD.diagnose({'attention_self_mass': 0.97, 'attention_entropy': 0.1})
  assert 'attention_self_mass' in w and '0.970' in w and 'own location' in w
  (w,) = METHOD.diagnose({'attention_self_mass': 0.02, 'attention_entropy': 0.995})
  assert 'attention_entropy' in w and '0.995' in w and 'uniform' in w
  assert len(METHOD.diagnose({'attention_self_mass': 0.95, 'attention_entropy': 0.99})) == 2


# --------------------------------------------------------------------- migration
LEGACY = {'attention_region': 'causal', 'attention_target': 'constant', 'gate_init': 'fan_in',
          'dropout_mask': 'factors'}


def test_migration_gives_runs_written_before_the_fields_their_old_behaviour(tmp_path):
  c = synthetic_cpu_recipe(get_base_config())
  c.method = 'bilinear_lstm'
  c.model = METHOD.default_model_config()
  raw = json.loads(c.to_json_best_effort())
  for field in LEGACY:
    assert raw['model'][field] != LEGACY[field]  # today's defaults differ from the old behaviour
    del raw['model'][field]
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(raw, f)
  logged = []
  loaded = run.load_config(str(tmp_path), log=logged.append)
  for field, value in LEGACY.items():
    assert loaded.model[field] == value
    assert any(f'config.model.{field}' in line for line in logged), field
  model = METHOD.build_model(loaded, types.SimpleNamespace(num_classes=3))
  assert (model.attention_region, model.gate_init, model.dropout_mask) == (
      'causal', 'fan_in', 'factors')
  # A config that has the fields is left as it is.
  current = METHOD.default_model_config().to_dict()
  assert METHOD.migrate_model_config(current) == [] and current['attention_region'] == 'grid'


@pytest.mark.parametrize('name, arg', [('synthetic_bilinear_lstm', None),
                                       ('synthetic_fgvc_bilinear_lstm', 'readings=before')])
def test_measured_synthetic_configs_keep_the_readings_they_were_measured_with(name, arg):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg) if arg else module.get_config()
  for field, value in LEGACY.items():
    assert c.model[field] == value, field
  assert c.optim.weight_decay == 0.0  # so the decay pattern does not matter for them
