"""A half-written checkpoint is ignored on restore with a warning; the previous one is used and the
run still ends bit-identical to an uninterrupted one."""

import os
import shutil

import jax

import reliability_helpers as rel  # tests/reliability/reliability_helpers.py
from fgjax import trainer


def _config(make_config):
  config = make_config('bcnn')
  with config.unlocked():
    config.train.checkpoint_every_steps = 4
  return config


def test_torn_checkpoint_is_skipped(make_config, tmp_path, one_device_mesh):
  config = _config(make_config)  # 12 steps
  full = str(tmp_path / 'full')
  trainer.train_and_evaluate(config, full, mesh=one_device_mesh, log=lambda m: None)
  torn = str(tmp_path / 'torn')
  trainer.train_and_evaluate(config, torn, stop_after_steps=8, mesh=one_device_mesh,
                             log=lambda m: None)
  assert rel.checkpoint_steps(torn) == [4, 8]
  # Simulate a copy that stopped half-way: step 8's arrays are gone, its metadata is still there.
  shutil.rmtree(os.path.join(torn, 'checkpoints', '8', 'state'))
  logs = []
  result = trainer.train_and_evaluate(config, torn, mesh=one_device_mesh, log=logs.append)
  warning = [l for l in logs if 'checkpoint 8 is unreadable' in l]
  assert warning and 'torn_8' in warning[0], logs
  assert any('resumed from' in l and 'step 4,' in l for l in logs), logs
  assert os.path.isdir(os.path.join(torn, 'checkpoints', 'torn_8'))
  assert result['step'] == 12
  exp_params = [rel.final_variables(w, config)[0] for w in (full, torn)]
  rel.assert_identical(*exp_params)


def test_all_checkpoints_torn_starts_from_scratch(make_config, tmp_path, one_device_mesh):
  config = _config(make_config)
  workdir = str(tmp_path / 'w')
  trainer.train_and_evaluate(config, workdir, stop_after_steps=4, mesh=one_device_mesh,
                             log=lambda m: None)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4', 'state'))
  logs = []
  trainer.train_and_evaluate(config, workdir, stop_after_steps=2, mesh=one_device_mesh,
                             log=logs.append)
  assert any('no readable checkpoint left; starting from scratch' in l for l in logs), logs
  assert jax.device_get(rel.final_variables(workdir, config)[2])['step'] == 2
