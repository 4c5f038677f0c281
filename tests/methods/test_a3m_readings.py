"""a3m readings that would switch its mechanism off, and their diagnostics:

- `attention_norm`: the paper's sigmoids of non-negative scores lie in [0.5, 1] and saturate; the
  default normalises the scores first (BatchNorm, as the authors' code), against a NumPy oracle,
  and its attention moves where the literal one's cannot go below 0.5;
- Market-1501's 27 attribute columns (Lin et al. 2019) as 12 groups (`attribute_columns`), the
  config-time check that the groups fit the dataset's field, and the Market config end to end on
  a tiny archive;
- the diagnostics `a3m_attention_spread` / `a3m_gate_range` (eval_metrics) and `diagnose`;
- the migration of config.json files written before `attention_norm`.
"""

import json
import os
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax import experiment, methods, run
from fgjax.data import pipeline
from fgjax.methods import a3m as a3m_method
from fgjax.models import a3m_attributes
from fgjax.models.a3m import A3M

METHOD = methods.get('a3m')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKET_COLUMNS = a3m_attributes.MARKET1501_ATTRIBUTE_COLUMNS
MARKET_CLASSES = a3m_attributes.MARKET1501_ATTRIBUTE_CLASSES


# ---- attention_norm ---------------------------------------------------------------------------

class _Given(nn.Module):
  """Stand-in backbone: the input *is* the backbone map (NHWC)."""

  @nn.compact
  def __call__(self, images, train=False):
    return {'features': {'map': images}}


def _bn_train(x, scale, bias, axes, eps=1e-3):
  mean = x.mean(axes, keepdims=True)
  var = x.var(axes, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def test_default_normalises_the_scores_before_the_sigmoids():
  """m_k = sigmoid(BN_L(V a_k)) (statistics over the batch and the K maps, one scale per
  location) and s = sigmoid(BN_K(A^T v)), in training (batch statistics), against NumPy."""
  rng = np.random.default_rng(0)
  n, h, w, c, d = 4, 2, 3, 5, 6
  fmap = jnp.asarray(rng.normal(size=(n, h, w, c)), jnp.float32)
  model = A3M(num_classes=3, backbone=_Given(), layer='map', attribute_classes=(2, 3), embed_dim=d)
  assert model.attention_norm == 'batchnorm'
  variables = jax.jit(model.init)(jax.random.key(0), fmap)
  params = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
  params['attn_bn'] = {'scale': rng.uniform(0.5, 2, h * w), 'bias': rng.normal(size=h * w)}
  params['attr_scores_bn'] = {'scale': rng.uniform(0.5, 2, 2), 'bias': rng.normal(size=2)}
  variables = {**variables, 'params': jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)}
  with jax.default_matmul_precision('highest'):
    out, _ = jax.jit(lambda v: model.apply(v, fmap, train=True, mutable=['batch_stats']))(variables)
  x = np.asarray(fmap, np.float64).reshape(n, h * w, c)
  conv = lambda name: np.maximum(x @ params[name]['kernel'] + params[name]['bias'], 0)  # noqa: E731
  big_v = conv('category_conv')
  v = big_v.mean(1)
  a = np.stack([conv(f'attribute{k}_conv').mean(1) for k in range(2)], 1)
  scores = np.einsum('nld,nkd->nkl', big_v, a)
  m_k = 1 / (1 + np.exp(-_bn_train(scores, params['attn_bn']['scale'],
                                    params['attn_bn']['bias'], (0, 1))))
  s = 1 / (1 + np.exp(-_bn_train(np.einsum('nkd,nd->nk', a, v), params['attr_scores_bn']['scale'],
                                 params['attr_scores_bn']['bias'], (0,))))
  tol = dict(rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out['attribute_maps'], m_k, **tol)
  np.testing.assert_allclose(out['region_attention'], m_k.max(1), **tol)
  np.testing.assert_allclose(out['attribute_scores'], s, **tol)


def test_default_attention_moves_where_the_literal_one_cannot():
  """At init, in a training step on random images through the small CNN: the literal reading's
  m and s stay in [0.5, 1] (sigmoids of non-negative scores); the default's go below 0.5 and its
  spread over the locations is well above the literal one's."""
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (16, 32, 32, 3)), jnp.uint8)
  got = {}
  for norm in ('batchnorm', 'none'):
    model = A3M(num_classes=4, backbone='small_cnn', layer='conv4', attribute_classes=(3, 3, 3),
                embed_dim=32, attention_norm=norm)
    variables = jax.jit(lambda m=model: m.init(jax.random.key(0), images))()
    out, _ = jax.jit(lambda v, m=model: m.apply(v, images, train=True,
                                                mutable=['batch_stats']))(variables)
    got[norm] = a3m_method.attention_diagnostics(
        {'region_attention': np.asarray(out['region_attention']),
         'attribute_scores': np.asarray(out['attribute_scores'])}, 'none')
    got[norm]['min'] = min(float(out['region_attention'].min()),
                           float(out['attribute_scores'].min()))
  assert got['none']['min'] >= 0.5
  assert got['batchnorm']['min'] < 0.3
  assert got['batchnorm']['a3m_attention_spread'] > 2 * got['none']['a3m_attention_spread']
  assert got['batchnorm']['a3m_gate_range'] > 2 * got['none']['a3m_gate_range']


def test_official_code_keeps_its_batchnorms(make_config):
  config = make_config('a3m', variant='official_code', attention_norm='none')
  with pytest.raises(ValueError, match="config.model.attention_norm is a 'paper' option"):
    METHOD.build_model(config, types.SimpleNamespace(num_classes=5))
  config = make_config('a3m', attention_norm='softmax')
  with pytest.raises(ValueError, match='config.model.attention_norm must be one of batchnorm'):
    METHOD.build_model(config, types.SimpleNamespace(num_classes=5))


# ---- migration --------------------------------------------------------------------------------

def test_migration_keeps_old_runs_literal():
  old = {'variant': 'paper', 'embed_dim': 16}
  assert a3m_method.migrate_model_config(old) == [
      "config.model.attention_norm: absent (fgjax before the field: no normalisation before the "
      "attention sigmoids) -> 'none'"]
  assert old == {'variant': 'paper', 'embed_dim': 16, 'attention_norm': 'none'}
  assert a3m_method.migrate_model_config(old) == []
  no_variant = {'embed_dim': 16}  # the variant's default was 'paper' then too
  a3m_method.migrate_model_config(no_variant)
  assert no_variant['attention_norm'] == 'none'
  official = {'variant': 'official_code'}  # had its BatchNorms: the default is its behaviour
  assert a3m_method.migrate_model_config(official) == [] and official == {
      'variant': 'official_code'}
  new = {'variant': 'paper', 'attention_norm': 'batchnorm'}
  assert a3m_method.migrate_model_config(new) == [] and new['attention_norm'] == 'batchnorm'


def test_old_config_json_evaluates_as_it_trained(make_config, tmp_path):
  """A config.json without the field (evaluate / predict / resume read it with load_config) builds
  the literal model: no attention BatchNorms."""
  raw = json.loads(make_config('a3m', embed_dim=8).to_json_best_effort())
  del raw['model']['attention_norm'], raw['model']['attribute_columns']
  (tmp_path / 'config.json').write_text(json.dumps(raw))
  lines = []
  loaded = run.load_config(str(tmp_path), log=lines.append)
  assert loaded.model.attention_norm == 'none' and tuple(loaded.model.attribute_columns) == ()
  assert any('attention_norm' in line and "-> 'none'" in line for line in lines)
  model = METHOD.build_model(loaded, types.SimpleNamespace(num_classes=4))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert 'attn_bn' not in shapes['params'] and 'attr_scores_bn' not in shapes['params']
  today = METHOD.build_model(make_config('a3m', embed_dim=8), types.SimpleNamespace(num_classes=4))
  shapes = jax.eval_shape(lambda: today.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert 'attn_bn' in shapes['params'] and 'attr_scores_bn' in shapes['params']


# ---- diagnostics ------------------------------------------------------------------------------

def _config(**model):
  config = types.SimpleNamespace(model=METHOD.default_model_config())
  config.model.update(model)
  return config


def test_eval_metrics_diagnostics_on_hand_made_arrays():
  m = np.array([[0.0, 1.0, 0.0, 1.0],  # std 0.5
                [0.5, 0.5, 0.5, 0.5]])  # std 0
  s = np.zeros((101, 2))
  s[:, 0] = np.linspace(0, 1, 101)  # 1st..99th percentile: 0.01..0.99 -> range 0.98
  s[:, 1] = 0.7  # stuck: range 0
  s[0, 1] = 0.0  # one outlier image: outside the 1st percentile's reach
  got = a3m_method.eval_metrics({'region_attention': m, 'attribute_scores': s,
                                 'attribute_logits': np.zeros((2, 9))}, _config())
  assert got['a3m_attention_spread'] == pytest.approx(0.25)
  lo1, hi1 = np.percentile(s[:, 1], [1, 99])
  assert got['a3m_gate_range'] == pytest.approx((0.98 + (hi1 - lo1)) / 2)
  assert hi1 - lo1 < 0.01  # the outlier hardly moves the robust range
  # An ablation that fixes an attention reports no diagnostic of it.
  assert set(a3m_method.attention_diagnostics({'region_attention': m, 'attribute_scores': s},
                                              'att2')) == {'a3m_gate_range'}
  assert set(a3m_method.attention_diagnostics({'region_attention': m, 'attribute_scores': s},
                                              'att1')) == {'a3m_attention_spread'}
  assert a3m_method.attention_diagnostics({'region_attention': np.zeros((2, 0)),
                                           'attribute_scores': np.zeros((2, 0))},
                                          'baseline1') == {}


def test_eval_metrics_maps_market_columns_for_attribute_accuracy():
  """Attribute accuracy of mapped groups: the colour group's label comes from its one-hot
  columns ('none' = the last class)."""
  config = _config(attribute_columns=((0,), (1, 2, 3)), attribute_classes=(2, 4))
  labels = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [-1, 1, 1, 0]])  # colour: 1, none (3), several
  logits = np.array([[0, 9, 0, 9, 0, 0],  # group 0 -> 1 (right), group 1 -> 1 (right)
                     [9, 0, 0, 0, 0, 9],  # 0 (right), 3 = none (right)
                     [9, 0, 9, 0, 0, 0]], np.float64)  # unknown, several: left out
  got = a3m_method.eval_metrics({'attribute_logits': logits, 'attributes': labels}, config)
  assert got['attribute_accuracy/0'] == 1.0 and got['attribute_accuracy/1'] == 1.0
  logits[1, 5] = 0  # the 'none' row now predicts class 0
  got = a3m_method.eval_metrics({'attribute_logits': logits, 'attributes': labels}, config)
  assert got['attribute_accuracy/1'] == 0.5


def test_diagnose_names_the_inert_mechanism():
  assert a3m_method.diagnose({'top1': 0.9}) == []
  assert a3m_method.diagnose({'a3m_attention_spread': 0.2, 'a3m_gate_range': 0.4}) == []
  flat, stuck = a3m_method.diagnose({'a3m_attention_spread': 0.0012, 'a3m_gate_range': 0.0003})
  assert flat.startswith('a3m_attention_spread = 0.0012 < 0.01') and 'Baseline-2' in flat
  assert stuck.startswith('a3m_gate_range = 0.0003 < 0.01') and 'stuck' in stuck
  (only,) = a3m_method.diagnose({'a3m_attention_spread': 0.3, 'a3m_gate_range': 0.001})
  assert only.startswith('a3m_gate_range')
  assert METHOD.diagnose is a3m_method.diagnose


# ---- attribute columns -> groups --------------------------------------------------------------

def test_attribute_targets_from_one_hot_columns():
  values = np.array([
      [1, 0, 1, 0, 0, 1, 0],  # single 1; colour A = 1 (class 1 of 3); colour B = 2
      [0, 0, 0, 0, 0, 0, 0],  # colour A: none -> class 3 (4 classes); B: none -> -1 (3 classes)
      [1, 1, 1, 0, 1, 1, 0],  # several -> -1
      [-1, -1, -1, -1, -1, -1, -1]])  # unknown identity
  columns, classes = ((0,), (1, 2, 3), (4, 5, 6)), (2, 4, 3)
  want = np.array([[1, 1, 1], [0, 3, -1], [1, -1, -1], [-1, -1, -1]])
  got = a3m_attributes.attribute_targets(values, columns, classes)
  assert isinstance(got, np.ndarray)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(
      jax.jit(lambda v: a3m_attributes.attribute_targets(v, columns, classes))(
          jnp.asarray(values, jnp.int32)), want)
  np.testing.assert_array_equal(a3m_attributes.attribute_targets(values, (), classes), values)


@pytest.mark.parametrize('columns,classes,match', [
    (((0,), (1, 2)), (2,), r'attribute_columns has 2 groups but config.model.attribute_classes'),
    (((0,), (1, 2, 3)), (2, 5), r'attribute_classes\[1\] = 5.*3 classes .* or 4'),
    (((0,), ()), (2, 2), r'attribute_columns\[1\] must be a non-empty tuple'),
])
def test_model_checks_the_columns_against_the_classes(columns, classes, match):
  with pytest.raises(ValueError, match=match):
    A3M(num_classes=3, attribute_classes=classes, attribute_columns=columns)


@pytest.mark.parametrize('classes,columns,match', [
    ((2,) * 9 + (4, 8, 9), (),  # the config's groups before this change: 12 vs 27 columns
     r"config.model.attribute_classes has 12 groups .* field 'attributes' .* has 27 columns"),
    ((2,) * 9 + (3, 9, 10), MARKET_COLUMNS,  # age takes 4 values
     r"config.model.attribute_classes\[9\] = 3, but column 9 of dataset 'market1501' field "
     r"'attributes' .* takes 4 values \(0..3\): the group needs >= 4"),
    ((2, 2), ((0,), (26, 27)), r'attribute_columns\[1\] = \(26, 27\) names columns \[27\]'),
    ((2, 5), ((0,), (9, 10, 11, 12)), r'columns \[9\] .* are not binary'),
])
def test_groups_that_do_not_fit_the_dataset_field_are_refused(classes, columns, match):
  counts = [2] * 9 + [4] + [2] * 17
  with pytest.raises(ValueError, match=match):
    a3m_attributes.check_fit(classes, columns, 'attributes', 27, counts, 'market1501')
  a3m_attributes.check_fit(MARKET_CLASSES, MARKET_COLUMNS, 'attributes', 27, counts, 'market1501')


def test_market_config_defaults_to_the_attribute_groups():
  config = _load_config('market1501_a3m.py')
  m = config.model
  assert m.attribute_field == 'attributes' and m.ablation == 'none'
  assert tuple(m.attribute_classes) == (2,) * 9 + (4, 9, 10)
  assert tuple(map(tuple, m.attribute_columns)) == MARKET_COLUMNS
  assert sorted(j for cols in m.attribute_columns for j in cols) == list(range(27))
  m.allow_random_init = True
  METHOD.check_config(config)  # the builder's static info: 27 columns, their values
  config.model.attribute_classes = (2,) * 9 + (3, 9, 10)
  with pytest.raises(ValueError, match=r'config.model.attribute_classes\[9\] = 3'):
    METHOD.check_config(config)
  config.model.attribute_classes = (2,) * 9 + (4, 9, 7)
  with pytest.raises(ValueError, match=r'config.model.attribute_classes\[11\] = 7'):
    METHOD.check_config(config)
  config.model.attribute_classes = MARKET_CLASSES
  config.model.ablation = 'no_attr_label'  # no attribute labels used: nothing to fit
  config.model.attribute_columns, config.model.attribute_classes = (), (2, 2)
  METHOD.check_config(config)


def _load_config(name, arg=None):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(ROOT, 'configs', name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# ---- Market-1501 end to end on a tiny archive -------------------------------------------------

@pytest.fixture(scope='module')
def tiny_market(tmp_path_factory):
  """(manual dir, data dir, pid -> MATLAB codes) of the builder tests' tiny Market archive."""
  here = os.path.join(ROOT, 'tests', 'data', 'builders')  # builder_testing is imported from there
  if here not in sys.path:
    sys.path.insert(0, here)
  import test_market1501 as files  # pylint: disable=g-import-not-at-top,protected-access
  base = tmp_path_factory.mktemp('market')
  files._write_manual(str(base / 'manual'))
  return str(base / 'manual'), str(base / 'tfds'), files._codes()


def _market_config(manual, data_dir, **model):
  config = _load_config('market1501_a3m.py', 'runlocal')
  config.dataset.manual_dir, config.dataset.data_dir = manual, data_dir
  config.dataset.num_threads = 1
  config.train.global_batch_size = config.eval.batch_size = 4
  config.model.embed_dim = 8
  config.model.update(model)
  return config


def _expected_groups(codes):
  """The 12 groups of a pid's codes (1/2, age 1..4), written out from the builder's order."""
  single = ['gender', 'hair', 'up', 'down', 'clothes', 'hat', 'backpack', 'bag', 'handbag', 'age']
  ups = ['upblack', 'upwhite', 'upred', 'uppurple', 'upyellow', 'upgray', 'upblue', 'upgreen']
  downs = ['downblack', 'downwhite', 'downpink', 'downpurple', 'downyellow', 'downgray',
           'downblue', 'downgreen', 'downbrown']
  out = [codes[f] - 1 for f in single]
  for colours in (ups, downs):
    yes = [i for i, f in enumerate(colours) if codes[f] == 2]
    out.append(yes[0] if len(yes) == 1 else len(colours) if not yes else -1)
  return out


def test_market_default_trains_on_the_attribute_groups(tiny_market, one_device_mesh):
  manual, data_dir, codes = tiny_market
  config = _market_config(manual, data_dir)
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  assert 'attributes' in exp.batch_keys
  batch = next(pipeline.train_batches(exp.source('train'), config.dataset,
                                      keys=exp.batch_keys + ('identity',), global_batch=4,
                                      mesh=one_device_mesh, seed=0))
  targets = a3m_attributes.attribute_targets(np.asarray(batch['attributes']),
                                             MARKET_COLUMNS, MARKET_CLASSES)
  want = [_expected_groups(codes[f'{int(p):04d}']) for p in np.asarray(batch['identity'])]
  np.testing.assert_array_equal(targets, want)
  assert (targets < np.array(MARKET_CLASSES)).all()
  variables = jax.jit(lambda: exp.model.init(jax.random.key(0), exp.dummy_images(2)))()

  def loss(params):
    out, _ = exp.model.apply({**variables, 'params': params}, batch['image'], train=True,
                             mutable=['batch_stats'])
    return METHOD.loss_fn(out, batch, config)

  grads, metrics = jax.jit(jax.grad(loss, has_aux=True))(variables['params'])
  assert np.isfinite(float(metrics['loss_attributes'])) and float(metrics['loss_attributes']) > 0
  for k in range(12):
    g = np.abs(np.asarray(grads[f'attribute{k}_classifier']['kernel'])).max()
    assert (g > 0) == bool((np.asarray(want)[:, k] >= 0).any()), k
  assert all(np.abs(np.asarray(grads[f'attribute{k}_classifier']['kernel'])).max() > 0
             for k in range(10))


def test_market_group_that_does_not_fit_is_a_config_error(tiny_market, one_device_mesh):
  manual, data_dir, _ = tiny_market
  config = _market_config(manual, data_dir, attribute_classes=(2,) * 9 + (2, 9, 10))
  with pytest.raises(ValueError, match=r"attribute_classes\[9\] = 2, but column 9 of dataset "
                                       r"'market1501' field 'attributes'"):
    experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
