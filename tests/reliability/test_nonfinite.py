"""A non-finite loss or gradient stops training naming the step and keeps the last good checkpoint;
with train.skip_nonfinite_steps the steps are skipped (no update) and counted."""

import jax
import numpy as np
import pytest

import reliability_helpers as rel  # tests/reliability/reliability_helpers.py
from fgjax import trainer


def _config(make_config, skip):
  config = make_config('bcnn')
  with config.unlocked():
    config.optim.learning_rate = 1e30  # the first update makes params ~1e29: step 2 overflows
    config.optim.schedule = 'constant'
    config.train.checkpoint_every_steps = 1
    config.train.skip_nonfinite_steps = skip
  return config


def test_nonfinite_stops_and_keeps_last_good_checkpoint(make_config, tmp_path, one_device_mesh):
  workdir = str(tmp_path / 'w')
  with pytest.raises(trainer.NonFiniteError) as info:
    trainer.train_and_evaluate(_config(make_config, False), workdir, mesh=one_device_mesh,
                               log=lambda m: None)
  msg = str(info.value)
  assert msg.startswith('non-finite loss or gradient at step 2:'), msg
  assert 'the last good checkpoint is step 1' in msg
  assert rel.checkpoint_steps(workdir) == [1]  # nothing at or after the bad step was written
  params = rel.final_variables(workdir, _config(make_config, False))[0]
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def test_skip_nonfinite_steps_counts_and_keeps_params(make_config, tmp_path, one_device_mesh):
  config = _config(make_config, True)
  workdir = str(tmp_path / 'w')
  result = trainer.train_and_evaluate(config, workdir, mesh=one_device_mesh, log=lambda m: None)
  assert result['step'] == 12
  params, _, meta = rel.final_variables(workdir, config)
  assert meta['skipped_nonfinite_steps'] == 11  # every step after the first overflowed
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))
  # Skipped steps change nothing: the final params are those after step 1.
  first = str(tmp_path / 'first')
  trainer.train_and_evaluate(config, first, stop_after_steps=1, mesh=one_device_mesh,
                             log=lambda m: None)
  rel.assert_identical(rel.final_variables(first, config)[0], params)
