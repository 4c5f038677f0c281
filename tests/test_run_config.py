"""experiment.load_run_config: a run's config.json rebuilds the experiment and its checkpoint."""

import json
import os

import jax
import numpy as np
import pytest

from fgjax import checkpoint, experiment, trainer


def test_saved_config_rebuilds_the_run(make_config, trained_workdir, one_device_mesh):
  workdir = trained_workdir('bcnn')
  loaded = experiment.load_run_config(workdir)
  original = make_config('bcnn')
  assert loaded.method == original.method and loaded.model.to_dict() == original.model.to_dict()
  assert loaded.dataset.image_size == original.dataset.image_size
  with pytest.raises(AttributeError):  # locked: a typo in a field name is an error
    loaded.not_a_field = 1
  ckpts = checkpoint.Checkpoints(workdir)
  step = ckpts.latest_step()
  states = [trainer.restore(experiment.setup(c, mesh=one_device_mesh, log=lambda m: None),
                            ckpts, step)[0] for c in (loaded, original)]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(states[0].params),
               jax.device_get(states[1].params))


def test_missing_or_bad_config_json_names_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json does not exist.*fgjax.train'):
    experiment.load_run_config(str(tmp_path))
  (tmp_path / 'config.json').write_text('{not json')
  with pytest.raises(ValueError, match='config.json is not valid JSON'):
    experiment.load_run_config(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({'a': 1}))
  with pytest.raises(ValueError, match='not an fgjax run config'):
    experiment.load_run_config(str(tmp_path))


def test_fields_added_later_get_defaults_and_are_named(tmp_path, trained_workdir):
  """A config.json from before a field existed still loads: the field gets today's default and the
  log names it; values the run set (including maps such as lr_multipliers) are kept as they are."""
  with open(os.path.join(trained_workdir('bcnn'), 'config.json')) as f:
    raw = json.load(f)
  del raw['model']['proj_dim_a'], raw['eval']['flip_tta']
  raw['optim']['lr_multipliers'] = {'^classifier': 3.0}
  (tmp_path / 'config.json').write_text(json.dumps(raw))
  lines = []
  loaded = experiment.load_run_config(str(tmp_path), log=lines.append)
  assert loaded.model.proj_dim_a == 0 and loaded.eval.flip_tta is False
  assert loaded.optim.lr_multipliers.to_dict() == {'^classifier': 3.0}
  assert len(lines) == 2
  assert any('model.proj_dim_a' in l for l in lines) and any('eval.flip_tta' in l for l in lines)
