"""Config, workdir and disk problems give clear errors before compilation; a checkpoint that does
not fit the model names the mismatched paths; a failed checkpoint write leaves a usable latest."""

import errno
import os

import jax
import pytest

import reliability_helpers as rel  # tests/reliability/reliability_helpers.py
from fgjax import checkpoint, run, trainer


@pytest.fixture
def no_jit(monkeypatch):
  def forbidden(*args, **kwargs):
    raise AssertionError('jax.jit was called before the error was raised')
  monkeypatch.setattr(jax, 'jit', forbidden)


def test_workdir_with_a_different_config(make_config, tmp_path, one_device_mesh, monkeypatch):
  workdir = str(tmp_path / 'w')
  trainer.train_and_evaluate(make_config('bcnn'), workdir, stop_after_steps=1,
                             mesh=one_device_mesh, log=lambda m: None)
  changed = make_config('bcnn')
  with changed.unlocked():
    changed.optim.learning_rate = 0.5
    changed.train.log_every_steps = 7  # harmless: allowed on resume
  monkeypatch.setattr(jax, 'jit', lambda *a, **k: (_ for _ in ()).throw(AssertionError('jit')))
  with pytest.raises(run.ConfigError) as info:
    trainer.train_and_evaluate(changed, workdir, mesh=one_device_mesh, log=lambda m: None)
  msg = str(info.value)
  assert 'optim.learning_rate: 0.05 -> 0.5' in msg and 'log_every_steps' not in msg
  assert 'allow_config_change=True' in msg


def test_checkpoint_that_does_not_fit_the_model(make_config, tmp_path, one_device_mesh):
  workdir = str(tmp_path / 'w')
  trainer.train_and_evaluate(make_config('bcnn'), workdir, stop_after_steps=1,
                             mesh=one_device_mesh, log=lambda m: None)
  other = make_config('bcnn', proj_dim_a=8)
  with other.unlocked():
    other.train.allow_config_change = True
  with pytest.raises(checkpoint.CheckpointMismatchError) as info:
    trainer.train_and_evaluate(other, workdir, mesh=one_device_mesh, log=lambda m: None)
  msg = str(info.value)
  assert 'in the model, not in the checkpoint: params/proj_a/kernel' in msg
  assert 'shape params/classifier/kernel: checkpoint (4096, 4) vs model (64, 4)' in msg
  assert rel.checkpoint_steps(workdir) == [1]  # the good checkpoint was not moved aside


def test_missing_dataset_and_unwritable_workdir(make_config, tmp_path, one_device_mesh, no_jit):
  config = make_config('bcnn')
  with config.unlocked():
    config.dataset.name, config.dataset.config = 'cub2011', None
    config.dataset.manual_dir = str(tmp_path / 'empty')
  os.makedirs(tmp_path / 'empty')
  with pytest.raises(run.ConfigError, match='cub2011: missing files'):
    trainer.train_and_evaluate(config, str(tmp_path / 'w'), mesh=one_device_mesh,
                               log=lambda m: None)
  (tmp_path / 'a_file').write_text('x')  # a workdir under a regular file cannot be created
  with pytest.raises(run.ConfigError, match='is not writable'):
    trainer.train_and_evaluate(make_config('bcnn'), str(tmp_path / 'a_file' / 'w'),
                               mesh=one_device_mesh, log=lambda m: None)


def test_disk_full_during_checkpoint(make_config, tmp_path, one_device_mesh, monkeypatch):
  """ENOSPC on the second checkpoint write (simulated: a real full disk cannot be made here):
  a clear error naming the latest complete checkpoint, which still restores."""
  config = make_config('bcnn')
  with config.unlocked():
    config.train.checkpoint_every_steps = 4
  workdir = str(tmp_path / 'w')
  real_save, calls = checkpoint.ocp.CheckpointManager.save, []

  def failing_save(self, step, *args, **kwargs):
    calls.append(step)
    if len(calls) == 2:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real_save(self, step, *args, **kwargs)
  monkeypatch.setattr(checkpoint.ocp.CheckpointManager, 'save', failing_save)
  with pytest.raises(checkpoint.CheckpointError) as info:
    trainer.train_and_evaluate(config, workdir, mesh=one_device_mesh, log=lambda m: None)
  msg = str(info.value)
  assert 'could not write checkpoint 8' in msg and 'No space left on device' in msg
  assert 'latest complete checkpoint is 4' in msg
  monkeypatch.setattr(checkpoint.ocp.CheckpointManager, 'save', real_save)
  assert rel.checkpoint_steps(workdir) == [4]
  assert rel.final_variables(workdir, config)[2]['step'] == 4
