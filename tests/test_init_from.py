"""config.init_from: load weights from another run, keep a new head, refuse mismatches by path."""

import jax
import numpy as np
import pytest

from fgjax import checkpoint, experiment, trainer


def _train(config, workdir, mesh):
  trainer.train_and_evaluate(config, workdir, mesh=mesh, log=lambda m: None)
  exp = experiment.setup(config, mesh=mesh, log=lambda m: None)
  ckpts = checkpoint.Checkpoints(workdir)
  return jax.device_get(trainer.restore(exp, ckpts, ckpts.latest_step())[0])


def test_init_from_run_with_new_head(make_config, tmp_path, one_device_mesh):
  source_cfg = make_config('bcnn')
  source = _train(source_cfg, str(tmp_path / 'src'), one_device_mesh)

  config = make_config('bcnn')
  with config.unlocked():
    config.seed = 7
    config.init_from.path = str(tmp_path / 'src')
    config.init_from.skip = ('^classifier',)
    config.train.num_epochs = 0.1  # one step is enough: we check what was loaded at init
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  logs = []
  run = trainer._Run(exp, str(tmp_path / 'dst'), logs.append)
  state, stage, position = trainer._restore_or_init(run)
  state = jax.device_get(state)
  assert (stage, position) == (0, 0)
  jax.tree.map(np.testing.assert_array_equal, state.params['backbone_a'],
               source.params['backbone_a'])
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats, source.batch_stats)
  tx = exp.optimizer(exp.stages[0])
  fresh = jax.device_get(trainer.init_state(exp, tx))
  np.testing.assert_array_equal(state.params['classifier']['kernel'],
                                fresh.params['classifier']['kernel'])
  assert not np.array_equal(state.params['classifier']['kernel'],
                            source.params['classifier']['kernel'])
  assert any('kept init for 2' in line for line in logs), logs


def test_init_from_mismatch_lists_paths(make_config, tmp_path, one_device_mesh):
  _train(make_config('bcnn'), str(tmp_path / 'src'), one_device_mesh)
  source = checkpoint.read_variables(str(tmp_path / 'src'))
  config = make_config('bcnn', proj_dim_a=8)  # adds proj_a; classifier fan-in 64*64 -> 8*8
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  tx = exp.optimizer(exp.stages[0])
  state = jax.device_get(trainer.init_state(exp, tx))
  with pytest.raises(ValueError) as info:
    checkpoint.merge_variables({'params': state.params}, source)
  msg = str(info.value)
  assert 'missing in checkpoint: params/proj_a/kernel' in msg
  assert 'wrong shape: params/classifier/kernel: checkpoint (4096, 4) vs model (64, 4)' in msg
  with pytest.raises(FileNotFoundError, match='not a directory'):
    checkpoint.read_variables(str(tmp_path / 'nowhere'))


def test_init_from_bare_backbone_pytree(make_config, tmp_path, one_device_mesh):
  """A plain Orbax pytree {'params': backbone tree} (what weight importers write) loads into a
  stream with init_from.into; everything outside the stream keeps its init."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  config = make_config('bcnn')
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  tx = exp.optimizer(exp.stages[0])
  fresh = jax.device_get(trainer.init_state(exp, tx))
  backbone = jax.tree.map(lambda x: np.full_like(x, 0.25), fresh.params['backbone_a'])
  writer = ocp.StandardCheckpointer()
  writer.save(str(tmp_path / 'imported'), {'params': backbone})
  writer.wait_until_finished()
  source = checkpoint.read_variables(str(tmp_path / 'imported'))
  merged, report = checkpoint.merge_variables(
      {'params': fresh.params}, source, skip=('^classifier',), into='backbone_a/')
  jax.tree.map(lambda x: np.testing.assert_array_equal(x, 0.25), merged['params']['backbone_a'])
  np.testing.assert_array_equal(merged['params']['classifier']['kernel'],
                                fresh.params['classifier']['kernel'])
  assert report['skipped'] == ['params/classifier/bias', 'params/classifier/kernel']
  assert not report['unused']
