"""fgjax.methods.activation_attention: eq. 2-6 against a float64 NumPy oracle, the Table 5
ablation switch, Table 6 / IoU eval metrics, config checks, and sequential per-scale stages
through the real trainer step (stage s changes scale s only)."""

import types

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fgjax import experiment, methods, optim, trainer
from fgjax.evaluation import protocols
from fgjax.data import pipeline
from fgjax.methods import activation_attention as aa
from fgjax.models.activation_attention import ActivationAttention

L = 6


def _oracle_local(a, mask, labels):
  """Eq. 2-4 written directly: loops over locations, float64."""
  n, h, w, _ = a.shape
  out = np.zeros(n)
  for i in range(n):
    l0 = l1 = 0.0
    for y in range(h):
      for x in range(w):
        z = a[i, y, x].astype(np.float64)
        logp = z - (np.log(np.sum(np.exp(z - z.max()))) + z.max())
        if mask[i, y, x] == 1:
          l1 += -logp[labels[i]]
        else:
          l0 += -logp[-1]  # background is the last channel
    wgt = mask[i].sum() / (h * w)
    out[i] = ((1 - wgt) * l1 + wgt * l0) / (w * h)
  return out


def _oracle_object(logits, labels):
  z = logits.astype(np.float64)
  logp = z - z.max(1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(1, keepdims=True))
  return -logp[np.arange(len(labels)), labels]


def _random(seed, n=5, h=4, w=3):
  rng = np.random.default_rng(seed)
  a = (rng.standard_normal((n, h, w, L + 1)) * 3).astype(np.float32)
  mask = (rng.random((n, h, w)) < 0.4).astype(np.float32)
  mask[0] = 0  # empty mask: w = 0, l1 = 0 -> loss 0
  mask[1] = 1  # full mask: w = 1, l0 = 0 -> loss 0
  labels = rng.integers(0, L, n)
  return a, mask, labels


def test_local_loss_matches_numpy_oracle():
  """Tolerance: rtol 1e-5 (float32 log-softmax of O(10) activations vs float64)."""
  for seed in range(3):
    a, mask, labels = _random(seed)
    ours = np.asarray(jax.jit(aa.local_loss)(a, mask, labels))
    ref = _oracle_local(a, mask, labels)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert ours[0] == 0.0 and ours[1] == 0.0  # degenerate masks give no local loss
    assert np.all(ours[2:] > 0)


def test_object_loss_matches_numpy_oracle():
  rng = np.random.default_rng(4)
  logits = (rng.standard_normal((7, L)) * 4).astype(np.float32)
  labels = rng.integers(0, L, 7)
  np.testing.assert_allclose(aa.object_loss(logits, labels), _oracle_object(logits, labels),
                             rtol=1e-5)


def test_no_gradient_through_the_mask():
  a, mask, labels = _random(5)
  g_mask = jax.grad(lambda m: aa.local_loss(a, m, labels).sum())(jnp.asarray(mask))
  assert float(jnp.abs(g_mask).sum()) == 0.0
  g_a = jax.grad(lambda x: aa.local_loss(x, mask, labels).sum())(jnp.asarray(a))
  assert float(jnp.abs(g_a).sum()) > 0


@pytest.mark.parametrize('which', ['both', 'local', 'object'])
def test_loss_fn_sums_scales_and_respects_the_ablation(which):
  rng = np.random.default_rng(6)
  n, s = 4, 3
  acts = (rng.standard_normal((n, s, 3, 3, L + 1)) * 2).astype(np.float32)
  mask = (rng.random((n, s, 3, 3)) < 0.5).astype(np.float32)
  obj = rng.standard_normal((n, s, L)).astype(np.float32)
  probs = np.full((n, s, L), 1.0 / L, np.float32)
  labels = rng.integers(0, L, n)
  outputs = {'activations': acts, 'mask': mask, 'object_logits': obj, 'scale_probs': probs,
             'logits': np.log(probs[:, 0])}
  config = ml_collections.ConfigDict({'model': {'losses': which}})
  loss, metrics = aa.loss_fn(outputs, {'label': labels}, config)
  expected = 0.0
  for k in range(s):
    loc = _oracle_local(acts[:, k], mask[:, k], labels).mean()
    ob = _oracle_object(obj[:, k], labels).mean()
    np.testing.assert_allclose(metrics[f'loss_loc_scale{k + 1}'], loc, rtol=1e-5)
    np.testing.assert_allclose(metrics[f'loss_obj_scale{k + 1}'], ob, rtol=1e-5)
    expected += (loc if which != 'object' else 0) + (ob if which != 'local' else 0)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_eval_metrics_table6_and_iou():
  labels = np.array([0, 1, 2, 1])
  loc = np.zeros((4, 2, 3))
  obj = np.zeros((4, 2, 3))
  loc[:, 0] = np.eye(3)[[0, 1, 0, 0]] * 0.9 + 0.05  # scale1 local: 2/4 right
  obj[:, 0] = np.eye(3)[[0, 1, 2, 2]] * 0.6 + 0.2  # scale1 object: 3/4 right
  loc[:, 1] = np.eye(3)[[0, 1, 2, 1]] * 0.5 + 0.25  # scale2 local: 4/4 right
  obj[:, 1] = np.eye(3)[[2, 2, 2, 2]] * 0.9 + 0.05  # scale2 object: 1/4 right
  boxes = np.zeros((4, 2, 4))
  boxes[:, 0] = [0, 0, 0.5, 0.5]  # vs gt [0, 0, 0.5, 1]: IoU 0.5
  boxes[:, 1] = [0.5, 0.5, 1, 1]  # no overlap: IoU 0
  bbox = np.tile([0.0, 0.0, 0.5, 1.0], (4, 1))
  gathered = {'label': labels, 'local_probs': loc, 'object_probs': obj, 'boxes': boxes,
              'bbox': bbox}
  config = ml_collections.ConfigDict({'model': {'losses': 'both'},
                                     'eval': {'protocol': 'classification'}})
  m = aa.eval_metrics(gathered, config)
  assert m['acc_loc_scale1'] == 0.5 and m['acc_obj_scale1'] == 0.75
  assert m['acc_loc_scale2'] == 1.0 and m['acc_obj_scale2'] == 0.25
  # avg scale1 per example: local 0.95 vs object 0.8 peaks -> [0, 1, 0 (0.5 vs 0.5+?), ...]
  avg1 = ((loc[:, 0] + obj[:, 0]) / 2).argmax(1)
  assert m['acc_avg_scale1'] == np.mean(avg1 == labels)
  assert m['acc_loc_ms'] == np.mean(loc.mean(1).argmax(1) == labels)
  assert m['acc_avg_ms'] == np.mean(((loc + obj) / 2).mean(1).argmax(1) == labels)
  assert m['attention_iou_scale1'] == pytest.approx(0.5)
  assert m['attention_iou_ge_0.5_scale1'] == 1.0
  assert m['attention_iou_scale2'] == 0.0
  assert m['box_area_scale1'] == pytest.approx(0.25)
  local_only = aa.eval_metrics(gathered, ml_collections.ConfigDict(
      {'model': {'losses': 'local'}, 'eval': {'protocol': 'classification'}}))
  assert local_only['acc_avg_scale2'] == local_only['acc_loc_scale2'] == 1.0


def test_scale_stages_freeze_every_other_scale(make_config, one_device_mesh):
  config = make_config('activation_attention', num_scales=3)
  with config.unlocked():
    config.stages = aa.scale_stages(3, 1.0)
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  params = exp.abstract_variables['params']
  for stage in exp.stages:
    labels = optim.param_labels(params, stage.optim)
    for s in (1, 2, 3):
      flat = set(jax.tree.leaves(labels[f'scale{s}']))
      assert flat == ({'lr_x1'} if stage.name == f'scale{s}' else {optim.FROZEN}), (stage, s)


# config.model of activation_attention as fgjax wrote it by hand before the fields moved onto the
# module (fgjax/methods/activation_attention.py, 2026-11): the derived config must equal it, so
# config.json files and --config.model.* overrides of earlier runs keep their meaning.
HAND_WRITTEN_MODEL = {
    'backbone': 'small_cnn', 'layer': 'conv4', 'backbone_kwargs': {}, 'backbone_pretrained': '',
    'allow_random_init': False, 'num_scales': 3, 'num_local': 16, 'losses': 'both',
    'attention_source': 'activations', 'local_prediction': 'pool_then_softmax', 'otsu_bins': 256,
    'crop_source': 'original', 'align_corners': False, 'min_box_fraction': 0.0,
    'sequential_stages': True, 'first_trained_scale': 1}


# Fields added since, with their defaults (`migrate_model_config` gives a config.json without them
# the behaviour before: frozen_scales='training').
ADDED_FIELDS = {'frozen_scales': 'inference'}


def test_default_model_config_is_the_module_fields():
  config = aa.METHOD.default_model_config().to_dict()
  assert config == {**HAND_WRITTEN_MODEL, **ADDED_FIELDS}
  assert {k: type(v) for k, v in config.items()} == {
      k: type(v) for k, v in {**HAND_WRITTEN_MODEL, **ADDED_FIELDS}.items()}
  old = dict(HAND_WRITTEN_MODEL)
  assert aa.migrate_model_config(old) and old == {**HAND_WRITTEN_MODEL,
                                                  'frozen_scales': 'training'}
  assert methods.get('activation_attention') is aa.METHOD


def test_build_passes_every_field_and_keeps_the_scope_names(make_config):
  """Every config.model field reaches the module; params stay under scale{s}/backbone, local,
  object (the prefixes of `pretrained` and of `scale_stages`' frozen patterns)."""
  config = make_config('activation_attention', num_scales=2, num_local=2, losses='local',
                       crop_source='previous', min_box_fraction=0.25,
                       backbone_kwargs={'widths': (8, 8, 8, 8)})
  model = aa.METHOD.build_model(config, types.SimpleNamespace(num_classes=3))
  assert isinstance(model, ActivationAttention)
  assert (model.num_scales, model.num_local, model.losses, model.crop_source,
          model.min_box_fraction) == (2, 2, 'local', 'previous', 0.25)
  assert model.num_classes == 3 and model.dtype == jnp.float32
  assert isinstance(model.backbone_kwargs, flax.core.FrozenDict)
  hash(model)  # every field hashable (Flax transforms hash modules)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                             train=False))['params']
  assert sorted(params) == ['scale1', 'scale2']
  for s in params:
    assert sorted(params[s]) == ['backbone', 'local', 'object']
    assert params[s]['local']['kernel'].shape == (1, 1, 8, 2 * 4)


@pytest.mark.parametrize('field, value, match', [
    ('losses', 'neither', 'config.model.losses'),
    ('attention_source', 'x', 'config.model.attention_source'),
    ('crop_source', 'x', 'config.model.crop_source'),
    ('local_prediction', 'x', 'config.model.local_prediction'),
    ('num_local', 0, 'config.model.num_local'),
    ('min_box_fraction', 1.5, 'config.model.min_box_fraction'),
    ('first_trained_scale', 4, 'config.model.first_trained_scale'),
])
def test_value_check_names_the_field(make_config, field, value, match):
  config = make_config('activation_attention', **{field: value})
  with pytest.raises(ValueError, match=match):
    aa.METHOD.build_model(config, types.SimpleNamespace(num_classes=2))


def test_check_config_names_the_layer(make_config):
  config = make_config('activation_attention', layer='conv9')
  with pytest.raises(ValueError, match='config.model.layer'):
    aa.check_config(config)


def test_check_config_stages_and_flip_tta(make_config):
  config = make_config('activation_attention')
  aa.check_config(config)  # no stages: joint training is allowed (documented)
  with config.unlocked():
    config.stages = aa.scale_stages(2, 1.0)
  with pytest.raises(ValueError, match='num_scales'):
    aa.check_config(config)
  with config.unlocked():
    config.stages = aa.scale_stages(3, 1.0)
    config.stages[1].frozen = '^scale1/'
  with pytest.raises(ValueError, match=r'stages\[1\]\.frozen'):
    aa.check_config(config)
  with config.unlocked():
    config.model.sequential_stages = False
  aa.check_config(config)
  with config.unlocked():
    config.eval.flip_tta = True
  with pytest.raises(ValueError, match='flip_tta'):
    aa.check_config(config)


def test_pretrained_goes_into_every_scale(make_config):
  config = make_config('activation_attention', backbone_pretrained='/w/resnet50', num_scales=3)
  assert aa.pretrained(config) == [('/w/resnet50', f'scale{s}/backbone/') for s in (1, 2, 3)]


@pytest.mark.slow
def test_stage_s_trains_only_scale_s_then_evaluates(make_config, one_device_mesh):
  """Real jitted train steps of the trainer: stage 1 changes scale1 params only, stage 2 scale2
  only (scale1 bit-identical); then the classification protocol reports Table 6 + IoU."""
  config = make_config('activation_attention', num_scales=2, num_local=2,
                       backbone_kwargs={'widths': (8, 8, 8, 8)})
  with config.unlocked():
    config.stages = aa.scale_stages(2, 1.0)
    config.optim.optimizer = 'adam'
    config.optim.learning_rate = 1e-2
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  batch = next(pipeline.train_batches(exp.source('train'), config.dataset, keys=exp.batch_keys,
                                      global_batch=16, mesh=one_device_mesh, seed=0))
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  for stage in exp.stages:
    tx = exp.optimizer(stage)
    state = state.replace(opt_state=jax.jit(tx.init)(state.params))
    before = jax.tree.map(np.asarray, state.params)
    state, metrics = trainer.make_train_step(exp, tx)(state, batch)
    assert np.isfinite(float(metrics['loss']))
    after = jax.tree.map(np.asarray, state.params)
    for s in (1, 2):
      same = jax.tree.leaves(jax.tree.map(np.array_equal, before[f'scale{s}'], after[f'scale{s}']))
      if stage.name == f'scale{s}':
        assert not all(same), (stage.name, s)
      else:
        assert all(same), (stage.name, s)
  result = protocols.evaluate(exp, state)
  for key in ('top1', 'acc_loc_scale1', 'acc_obj_scale2', 'acc_avg_ms', 'attention_iou_scale1',
              'attention_iou_scale2', 'box_area_scale1'):
    assert key in result and np.isfinite(result[key]), key
  assert result['acc_avg_ms'] == pytest.approx(result['top1'])
  assert 0.0 <= result['attention_iou_scale1'] <= 1.0


def test_first_trained_scale_continues_a_shorter_run(make_config):
  config = make_config('activation_attention', num_scales=3, first_trained_scale=2)
  with config.unlocked():
    config.stages = aa.scale_stages(3, 1.0, first=2)
  with pytest.raises(ValueError, match='init_from.path'):
    aa.check_config(config)
  with config.unlocked():
    config.init_from.path = '/some/run'
  aa.check_config(config)
  assert [s.name for s in config.stages] == ['scale2', 'scale3']
  with config.unlocked():
    config.stages = aa.scale_stages(3, 1.0)  # three stages but scale 1 is not trained here
  with pytest.raises(ValueError, match='first_trained_scale 2'):
    aa.check_config(config)
