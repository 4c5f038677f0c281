"""fgjax.run.load_config: a run's config.json rebuilds the experiment and its checkpoint."""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest

from fgjax import checkpoint, experiment, methods, run, trainer
from fgjax.default_config import get_base_config


def test_saved_config_rebuilds_the_run(make_config, trained_workdir, one_device_mesh):
  workdir = trained_workdir('bcnn')
  loaded = run.load_config(workdir)
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
    run.load_config(str(tmp_path))
  (tmp_path / 'config.json').write_text('{not json')
  with pytest.raises(ValueError, match='config.json is not valid JSON'):
    run.load_config(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({'a': 1}))
  with pytest.raises(ValueError, match='not an fgjax run config'):
    run.load_config(str(tmp_path))


def test_fields_added_later_get_defaults_and_are_named(tmp_path, trained_workdir):
  """A config.json from before a field existed still loads: the field gets today's default and the
  log names it; values the run set (including maps such as lr_multipliers) are kept as they are."""
  with open(os.path.join(trained_workdir('bcnn'), 'config.json')) as f:
    raw = json.load(f)
  del raw['model']['proj_dim_a'], raw['eval']['flip_tta']
  raw['optim']['lr_multipliers'] = {'^classifier': 3.0}
  (tmp_path / 'config.json').write_text(json.dumps(raw))
  lines = []
  loaded = run.load_config(str(tmp_path), log=lines.append)
  assert loaded.model.proj_dim_a == 0 and loaded.eval.flip_tta is False
  assert loaded.optim.lr_multipliers.to_dict() == {'^classifier': 3.0}
  assert len(lines) == 2
  assert any('model.proj_dim_a' in l for l in lines) and any('eval.flip_tta' in l for l in lines)


# ---- config.json written by an older fgjax: the method's migration, removed fields -------------

# proj_dim_a=-1: a placeholder resolved when the model was built; pool: a field since removed.
OLD_MODEL = {'proj_dim_a': -1, 'pool': 'sum'}


def _migrate(model):
  """An older fgjax's `model` section into today's fields (the shape of a3m's alpha = -1.0)."""
  messages = []
  if model.get('proj_dim_a') == -1:
    model['proj_dim_a'] = 0
    messages.append('model.proj_dim_a: -1 (resolved when the model was built) -> 0')
  if 'pool' in model:
    messages.append(f'model.pool={model.pop("pool")!r}: removed (always sum pooling)')
  return messages


@pytest.fixture
def migrating_bcnn(monkeypatch):
  """methods.METHODS['bcnn'] with `_migrate` as its migration; records the dicts it was given."""
  seen = []

  def migrate(model):
    seen.append(json.loads(json.dumps(model)))
    return _migrate(model)
  monkeypatch.setitem(methods.METHODS, 'bcnn', dataclasses.replace(
      methods.get('bcnn'), migrate_model_config=migrate))
  return seen


def test_migration_comes_first_and_is_logged(tmp_path, migrating_bcnn):
  (tmp_path / 'config.json').write_text(json.dumps(
      {'method': 'bcnn', 'dataset': {'name': 'synthetic_parts'}, 'model': OLD_MODEL}))
  lines = []
  loaded = run.load_config(str(tmp_path), log=lines.append)
  assert migrating_bcnn == [OLD_MODEL]  # the file's own section, before any default was added
  path = str(tmp_path / 'config.json')
  assert lines[:2] == [f'{path}: model.proj_dim_a: -1 (resolved when the model was built) -> 0',
                       f"{path}: model.pool='sum': removed (always sum pooling)"]
  assert all(' has no ' in l for l in lines[2:])  # then the fields the file lacks, defaulted
  assert f'{path} has no model.proj_dim_b (added to fgjax later): using the default 0' in lines
  expected = methods.get('bcnn').default_model_config().to_dict()
  assert loaded.model.to_dict() == expected  # migrated, then filled: today's model section
  assert loaded.dataset.image_size == get_base_config().dataset.image_size


def test_a_model_field_the_method_does_not_have_is_an_error(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps(
      {'method': 'bcnn', 'dataset': {'name': 'synthetic_parts'}, 'model': OLD_MODEL}))
  with pytest.raises(ValueError, match=r"sets config.model.pool, which method 'bcnn' does not "
                                       r'have .*its fields: .*proj_dim_a'):
    run.load_config(str(tmp_path))


def _old_style(config, path, **model):
  """The config.json an older fgjax would have written for `config`: `model` fields replaced,
  eval.flip_tta absent (added later)."""
  raw = json.loads(config.to_json_best_effort())
  raw['model'].update(model)
  del raw['eval']['flip_tta']
  with open(path, 'w') as f:
    json.dump(raw, f)


def test_resume_compares_the_migrated_config(make_config, tmp_path, migrating_bcnn):
  config = make_config('bcnn')
  _old_style(config, tmp_path / 'config.json', **OLD_MODEL)
  lines = []
  run.write_config(config, str(tmp_path), lines.append)  # no ConfigError
  assert any('model.proj_dim_a: -1' in l for l in lines) and not any('WARNING' in l for l in lines)
  assert json.loads((tmp_path / 'config.json').read_text()) == json.loads(
      config.to_json_best_effort())  # today's config, written back
  # A real change is still refused, named with the migrated value.
  _old_style(config, tmp_path / 'config.json', **OLD_MODEL)
  changed = make_config('bcnn', proj_dim_a=8)
  with pytest.raises(run.ConfigError, match=r'model.proj_dim_a: 0 -> 8'):
    run.write_config(changed, str(tmp_path), lambda m: None)


def test_resume_without_a_migration_names_the_differences(make_config, tmp_path):
  config = make_config('bcnn')
  _old_style(config, tmp_path / 'config.json', **OLD_MODEL)
  with pytest.raises(run.ConfigError) as info:
    run.write_config(config, str(tmp_path), lambda m: None)
  msg = str(info.value)
  assert "model.pool: 'sum' -> '<absent>'" in msg and 'model.proj_dim_a: -1 -> 0' in msg
  assert 'flip_tta' not in msg  # added later: read as its default, which the new config has


def test_old_run_resumes_with_the_same_command(make_config, trained_workdir, tmp_path,
                                               one_device_mesh, migrating_bcnn):
  wd = str(tmp_path / 'run')
  shutil.copytree(trained_workdir('bcnn'), wd)
  config = make_config('bcnn')
  _old_style(config, os.path.join(wd, 'config.json'), **OLD_MODEL)
  lines = []
  result = trainer.train_and_evaluate(config, wd, mesh=one_device_mesh, log=lines.append)
  assert result['step'] == 12 and migrating_bcnn
  assert any('model.proj_dim_a: -1' in l for l in lines)
  assert any('resumed from' in l and 'step 12,' in l for l in lines), lines
