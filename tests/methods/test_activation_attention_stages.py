"""activation_attention's sequential stages compute only what they train (`stage_inputs` ->
`train_scale`): stage s runs scales 1..s - 1 in inference mode without gradient or BatchNorm
updates, scale s in training mode, no later scale; through the trainer's jitted step. Also the
box diagnostics (`box_metrics`, `diagnose`), the stage checks and the config.json migration."""


import jax
import ml_collections
import numpy as np
import pytest

from fgjax import experiment, optim, trainer
from fgjax.data import pipeline
from fgjax.methods import activation_attention as aa
from fgjax.state import variables


def _train_step(exp, stage, with_stage=True):
  """The trainer's jitted step of `stage`; with_stage=False: the step without the method's stage
  inputs (every scale in training mode, the behaviour before `frozen_scales`)."""
  tx = exp.optimizer(stage)
  return trainer.make_train_step(exp, tx, stage) if with_stage else trainer.make_train_step(exp, tx)


@pytest.fixture(scope='module')
def staged(tiny_config_factory, one_device_mesh):
  """A 3-scale run with its three sequential stages, a batch and a fresh state."""
  config = tiny_config_factory('activation_attention', num_scales=3, num_local=2,
                               backbone_kwargs={'widths': (8, 8, 8, 8)})
  with config.unlocked():
    config.stages = aa.scale_stages(3, 1.0)
    config.optim.optimizer = 'adam'
    config.optim.learning_rate = 1e-2
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  batch = next(pipeline.train_batches(exp.source('train'), config.dataset, keys=exp.batch_keys,
                                      global_batch=16, mesh=one_device_mesh, seed=0))
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  return exp, batch, state


def _fresh(exp, state, stage):
  tx = exp.optimizer(stage)
  host = jax.device_get(state)  # the step donates its state: keep ours
  return host.replace(opt_state=jax.jit(tx.init)(host.params))


def _grads(exp, state, batch, inputs):
  """d loss / d params of the training step with `inputs`."""
  def loss(params):
    out, _ = exp.model.apply(variables(params, state.batch_stats), batch['image'], train=True,
                             rngs={'dropout': jax.random.key(0)}, mutable=['batch_stats'],
                             **inputs)
    return aa.loss_fn(out, batch, exp.config)[0]
  return jax.grad(loss)(state.params)


def _nonzero(tree) -> bool:
  return any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(tree))


def _same(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


def test_stage_inputs_name_the_trained_scale(make_config):
  config = make_config('activation_attention', num_scales=3)
  stage = lambda i: optim.Stage(i, f'scale{i + 1}', 0, 1, ml_collections.ConfigDict())
  assert aa.stage_inputs(config, stage(0)) == {}  # no stages: joint training, all scales
  with config.unlocked():
    config.stages = aa.scale_stages(3, 1.0)
  assert [aa.stage_inputs(config, stage(i)) for i in range(3)] == [
      {'train_scale': 1}, {'train_scale': 2}, {'train_scale': 3}]
  with config.unlocked():
    config.model.first_trained_scale = 2
    config.stages = aa.scale_stages(3, 1.0, first=2)
  assert aa.stage_inputs(config, stage(0)) == {'train_scale': 2}
  with config.unlocked():
    config.model.frozen_scales = 'training'  # fgjax before 2026-12: every scale, training mode
  assert aa.stage_inputs(config, stage(0)) == {}
  with config.unlocked():
    config.model.frozen_scales = 'inference'
    config.model.sequential_stages = False
  assert aa.stage_inputs(config, stage(0)) == {}


def test_stage1_touches_neither_scale2_nor_scale3(staged):
  exp, batch, state = staged
  stage = exp.stages[0]
  assert aa.stage_inputs(exp.config, stage) == {'train_scale': 1}
  grads = _grads(exp, state, batch, aa.stage_inputs(exp.config, stage))
  assert _nonzero(grads['scale1'])
  assert not _nonzero(grads['scale2']) and not _nonzero(grads['scale3'])
  before = _fresh(exp, state, stage)
  after, metrics = _train_step(exp, stage)(before, batch)
  after = jax.device_get(after)
  assert np.isfinite(float(metrics['loss']))
  assert jax.tree.structure(after.batch_stats) == jax.tree.structure(before.batch_stats)
  assert not _same(before.params['scale1'], after.params['scale1'])
  assert not _same(before.batch_stats['scale1'], after.batch_stats['scale1'])
  for s in ('scale2', 'scale3'):
    assert _same(before.params[s], after.params[s]), s
    assert _same(before.batch_stats[s], after.batch_stats[s]), s
  assert 'loss_loc_scale2' not in metrics  # scale 2 is not computed at all


def test_later_stages_run_earlier_scales_in_inference_mode(staged):
  """Stage 2 (3): scale 1 (and 2) keep their batch statistics (BatchNorm on its running averages)
  and get no gradient; the trained scale's statistics move; a later scale is untouched."""
  exp, batch, state = staged
  for k, stage in ((2, exp.stages[1]), (3, exp.stages[2])):
    grads = _grads(exp, state, batch, aa.stage_inputs(exp.config, stage))
    before = _fresh(exp, state, stage)
    after = jax.device_get(_train_step(exp, stage)(before, batch)[0])
    for s in range(1, 4):
      name = f'scale{s}'
      trained = s == k
      assert _nonzero(grads[name]) == trained, (k, s)
      assert _same(before.batch_stats[name], after.batch_stats[name]) != trained, (k, s)
      assert _same(before.params[name], after.params[name]) != trained, (k, s)


def test_frozen_bn_in_training_mode_was_the_old_behaviour(staged):
  """The same step without stage inputs (frozen_scales='training', fgjax before 2026-12): scale
  1's batch statistics change in stage 2 although its parameters are frozen."""
  exp, batch, state = staged
  stage = exp.stages[1]
  before = _fresh(exp, state, stage)
  after = jax.device_get(_train_step(exp, stage, with_stage=False)(before, batch)[0])
  assert _same(before.params['scale1'], after.params['scale1'])
  assert not _same(before.batch_stats['scale1'], after.batch_stats['scale1'])


def _flops(exp, state, batch, stage, with_stage=True) -> float:
  step = _train_step(exp, stage, with_stage)
  cost = step.lower(_fresh(exp, state, stage), batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def test_stage1_step_costs_less_than_stage3(staged):
  exp, batch, state = staged
  flops = [_flops(exp, state, batch, stage) for stage in exp.stages]
  every_scale = _flops(exp, state, batch, exp.stages[0], with_stage=False)
  # stage 1: scale 1 forward + backward; stage 3: scales 1-2 forward only + scale 3 forward +
  # backward; before: all three forward + backward in every stage.
  assert flops[0] < flops[1] < flops[2] < every_scale, (flops, every_scale)
  assert flops[0] < 0.5 * every_scale, (flops, every_scale)


def test_check_stages_needs_the_whole_scale_frozen(make_config):
  config = make_config('activation_attention', num_scales=2)
  with config.unlocked():
    config.stages = aa.scale_stages(2, 1.0)
  aa.check_config(config)
  with config.unlocked():
    config.stages[0].frozen = r'^scale2/(local|object)/'  # scale 2's backbone would train
  with pytest.raises(ValueError, match=r'stages\[0\]\.frozen.*scale2/backbone/conv1/kernel is '
                                       'not frozen'):
    aa.check_config(config)
  with config.unlocked():
    config.stages[0].frozen = r'^scale2/|^scale1/object/'  # part of the trained scale frozen
  with pytest.raises(ValueError, match='scale1/object/kernel is frozen'):
    aa.check_config(config)


# ------------------------------------------------------------------------------------------------
# Box diagnostics
# ------------------------------------------------------------------------------------------------

def test_box_metrics_on_hand_made_boxes():
  # Two images, two scales, in the original frame. Image 0: scale 1 box = the left half, scale 2
  # = the top half of that crop. Image 1: scale 1 = the whole image, scale 2 = one 1/8 x 1/2
  # strip of it (one cell high on an 8x8 grid).
  boxes = np.array([[[0, 0, 1, 0.5], [0, 0, 0.5, 0.5]],
                    [[0, 0, 1, 1], [0.25, 0, 0.375, 0.5]]], np.float32)
  sides = np.asarray(aa.scale_box_sides(boxes))
  np.testing.assert_allclose(sides, [[[1, 0.5], [0.5, 1]], [[1, 1], [0.125, 0.5]]])
  cells = sides * 8
  m = aa.box_metrics(boxes, cells)
  assert m['box_area_frac_scale1'] == pytest.approx((0.5 + 1.0) / 2)
  assert m['box_area_frac_scale2'] == pytest.approx((0.5 + 0.0625) / 2)
  assert m['box_area_scale2'] == pytest.approx((0.25 + 0.0625) / 2)  # original-image frame
  assert m['box_degenerate_frac_scale1'] == 0.0
  assert m['box_degenerate_frac_scale2'] == 0.5
  assert 'box_degenerate_frac_scale1' not in aa.box_metrics(boxes)


def test_predict_fn_box_cells_follow_the_grid():
  boxes = np.array([[[0, 0, 0.5, 0.25], [0, 0, 0.25, 0.25]]], np.float32)
  outputs = {k: np.zeros((1, 2, 3)) for k in ('logits', 'features', 'local_probs',
                                              'object_probs')}
  outputs.update(boxes=boxes, mask=np.zeros((1, 2, 4, 8), np.float32))
  cells = np.asarray(aa.predict_fn(outputs)['box_cells'])
  np.testing.assert_allclose(cells, [[[2, 2], [2, 8]]])  # (h, w) sides in cells of 4 x 8


def test_eval_metrics_reports_the_box_diagnostics():
  boxes = np.tile(np.array([[0, 0, 0.96, 0.97]], np.float32), (4, 1, 1))
  gathered = {'label': np.zeros(4, int), 'local_probs': np.full((4, 1, 3), 1 / 3),
              'object_probs': np.full((4, 1, 3), 1 / 3), 'boxes': boxes,
              'box_cells': np.asarray(aa.scale_box_sides(boxes)) * 8}
  config = ml_collections.ConfigDict({'model': {'losses': 'both'},
                                     'eval': {'protocol': 'classification'}})
  m = aa.eval_metrics(gathered, config)  # no bbox in this dataset: no IoU
  assert 'attention_iou_scale1' not in m
  assert m['box_area_frac_scale1'] == pytest.approx(0.96 * 0.97)
  assert m['box_degenerate_frac_scale1'] == 0.0
  warnings = aa.diagnose(m)
  assert len(warnings) == 1 and 'box_area_frac_scale1 = 0.931' in warnings[0]


def test_diagnose_names_inert_and_degenerate_boxes():
  healthy = {'box_area_frac_scale1': 0.4, 'box_area_frac_scale2': 0.5,
             'box_degenerate_frac_scale1': 0.0, 'box_degenerate_frac_scale2': 0.1, 'top1': 0.5}
  assert aa.diagnose(healthy) == []
  assert aa.diagnose({}) == []
  inert = {**healthy, 'box_area_frac_scale2': 0.95}
  (w,) = aa.diagnose(inert)
  assert w.startswith('box_area_frac_scale2 = 0.950') and 'selects almost nothing' in w
  at_threshold = {**healthy, 'box_area_frac_scale1': aa.WHOLE_INPUT_AREA_FRAC}
  assert aa.diagnose(at_threshold) == []
  collapsed = {**healthy, 'box_degenerate_frac_scale1': 0.75}
  (w,) = aa.diagnose(collapsed)
  assert w.startswith('box_degenerate_frac_scale1 = 0.750') and 'one feature cell' in w
  assert len(aa.diagnose({**inert, **{'box_degenerate_frac_scale1': 0.75}})) == 2
  assert aa.METHOD.diagnose is aa.diagnose


# ------------------------------------------------------------------------------------------------
# config.json of an older fgjax
# ------------------------------------------------------------------------------------------------

def test_migration_keeps_old_runs_in_training_mode():
  old = {'num_scales': 3, 'sequential_stages': True}  # no frozen_scales: fgjax before 2026-12
  messages = aa.migrate_model_config(old)
  assert old['frozen_scales'] == 'training' and len(messages) == 1
  assert 'config.model.frozen_scales' in messages[0]
  assert aa.migrate_model_config(old) == []  # already migrated
  new = aa.METHOD.default_model_config().to_dict()
  assert new['frozen_scales'] == 'inference'
  assert aa.migrate_model_config(new) == [] and new['frozen_scales'] == 'inference'
  assert aa.METHOD.migrate_model_config is aa.migrate_model_config
