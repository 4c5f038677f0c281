"""Stop a run after k steps, rerun with the same workdir: it resumes at k and ends bit-identical."""

import jax
import ml_collections
import numpy as np

from fgjax import checkpoint, experiment, trainer


def _final_params(config, workdir, mesh):
  exp = experiment.setup(config, mesh=mesh, log=lambda m: None)
  ckpts = checkpoint.Checkpoints(workdir)
  state, meta = trainer.restore(exp, ckpts, ckpts.latest_step())
  return jax.device_get(state.params), jax.device_get(state.batch_stats), meta


def _assert_identical(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)


def test_resume_is_bit_identical_across_stages(make_config, tmp_path, one_device_mesh):
  config = make_config('bcnn')
  with config.unlocked():
    # Two stages (head only, then everything) so the resume crosses a stage boundary.
    config.stages = (ml_collections.ConfigDict({'name': 'head', 'num_epochs': 1.0,
                                                'frozen': '^backbone'}),
                     ml_collections.ConfigDict({'name': 'all', 'num_epochs': 1.0,
                                                'learning_rate': 0.01}))
  logs = []
  full = trainer.train_and_evaluate(config, str(tmp_path / 'full'), mesh=one_device_mesh,
                                    log=logs.append)
  total = full['step']
  k = 2  # inside stage 'head'
  assert trainer.train_and_evaluate(config, str(tmp_path / 'split'), stop_after_steps=k,
                                    mesh=one_device_mesh, log=logs.append) is None
  logs.clear()
  resumed = trainer.train_and_evaluate(config, str(tmp_path / 'split'), mesh=one_device_mesh,
                                       log=logs.append)
  assert any(f'resumed from' in line and f'step {k},' in line for line in logs), logs
  assert resumed['step'] == total
  p_full, s_full, meta_full = _final_params(config, str(tmp_path / 'full'), one_device_mesh)
  p_split, s_split, meta_split = _final_params(config, str(tmp_path / 'split'), one_device_mesh)
  assert meta_full == meta_split and meta_full['data_position'] == total
  _assert_identical(p_full, p_split)
  _assert_identical(s_full, s_split)
  assert resumed['top1'] == full['top1']


def test_frozen_stage_keeps_backbone(make_config, tmp_path, one_device_mesh):
  """Stage 'head' with frozen backbone: after it, backbone params equal their init."""
  config = make_config('bcnn')
  with config.unlocked():
    config.stages = (ml_collections.ConfigDict({'name': 'head', 'num_epochs': 1.0,
                                                'frozen': '^backbone'}),)
  trainer.train_and_evaluate(config, str(tmp_path / 'w'), mesh=one_device_mesh,
                             log=lambda m: None)
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  tx = exp.optimizer(exp.stages[0])
  init = jax.device_get(trainer.init_state(exp, tx).params)
  final, _, _ = _final_params(config, str(tmp_path / 'w'), one_device_mesh)
  _assert_identical(init['backbone_a'], final['backbone_a'])
  assert not np.array_equal(init['classifier']['kernel'], final['classifier']['kernel'])
