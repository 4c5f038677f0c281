"""metrics.jsonl after resumptions: one record per (step, split), steps in order, the same records
as an uninterrupted run; the progress line shows means over the steps since the previous line."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from fgjax import sharding, trainer, writers


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _without_rate(records):
  return [{k: v for k, v in r.items() if k != 'img_per_s'} for r in records]


def _config(make_config, log_every_steps=1):
  config = make_config('bcnn')  # 12 steps (2 epochs of 6)
  with config.unlocked():
    config.train.log_every_steps = log_every_steps
    config.train.checkpoint_every_steps = 4
    config.train.eval_every_steps = 3
  return config


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, tiny_config_factory):
  """An uninterrupted run logging every step: (workdir, log lines)."""
  config = tiny_config_factory('bcnn')
  with config.unlocked():
    config.train.log_every_steps = 1
    config.train.checkpoint_every_steps = 4
    config.train.eval_every_steps = 3
  workdir = str(tmp_path_factory.mktemp('full'))
  logs = []
  trainer.train_and_evaluate(config, workdir, mesh=sharding.make_mesh(jax.devices()[:1]),
                             log=logs.append)
  return workdir, logs


def test_resume_after_a_crash_writes_each_record_once(full_run, make_config, tmp_path,
                                                      one_device_mesh):
  expected = _records(full_run[0])
  keys = [(r['step'], r['split']) for r in expected]
  assert keys[:4] == [(1, 'train'), (2, 'train'), (3, 'train'), (3, 'eval')]
  assert keys[-2:] == [(12, 'train'), (12, 'eval')] and len(keys) == 12 + 3 + 1
  config = _config(make_config)
  workdir = str(tmp_path / 'w')
  log = lambda m: None
  trainer.train_and_evaluate(config, workdir, stop_after_steps=10, mesh=one_device_mesh, log=log)
  # A crash after step 10 but before its checkpoint: the run resumes from step 8, and the records
  # of steps 9 and 10 (written before the crash) are written again by the resumed run.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '10'))
  assert _records(workdir)[-1]['step'] == 10
  logs = []
  trainer.train_and_evaluate(config, workdir, mesh=one_device_mesh, log=logs.append)
  assert any('resumed from' in line and 'step 8,' in line for line in logs), logs
  # A crash after the final checkpoint, before metrics.json: the rerun evaluates step 12 again.
  os.remove(os.path.join(workdir, 'metrics.json'))
  trainer.train_and_evaluate(config, workdir, mesh=one_device_mesh, log=log)
  got = _records(workdir)
  got_keys = [(r['step'], r['split']) for r in got]
  assert len(set(got_keys)) == len(got_keys), got_keys
  assert [s for s, _ in got_keys] == sorted(s for s, _ in got_keys)
  assert got_keys == keys
  assert _without_rate(got) == _without_rate(expected)  # bit-identical values too


def test_run_from_scratch_drops_records_of_a_lost_run(make_config, tmp_path, one_device_mesh):
  """Checkpoints gone (deleted, or a crash before the first one): the steps are trained again and
  the old records of those steps go."""
  config = _config(make_config)
  workdir = str(tmp_path / 'w')
  trainer.train_and_evaluate(config, workdir, stop_after_steps=2, mesh=one_device_mesh,
                             log=lambda m: None)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 3, "split": "tra')  # a torn last line
  shutil.rmtree(os.path.join(workdir, 'checkpoints'))
  trainer.train_and_evaluate(config, workdir, stop_after_steps=4, mesh=one_device_mesh,
                             log=lambda m: None)
  assert [(r['step'], r['split']) for r in _records(workdir)] == [
      (1, 'train'), (2, 'train'), (3, 'train'), (3, 'eval'), (4, 'train')]


def test_metric_writer_keeps_records_up_to_the_resumed_step(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text(''.join(json.dumps({'step': s, 'split': p, 'loss': 1.0}) + '\n'
                          for s, p in [(5, 'train'), (5, 'eval'), (6, 'train')]))
  w = writers.MetricWriter(str(tmp_path), resume_step=5)
  w.write(5, {'loss': 2.0}, 'eval')  # already there: not repeated
  w.write(6, {'loss': 3.0}, 'train')
  w.close()
  assert [(r['step'], r['split'], r['loss']) for r in _records(str(tmp_path))] == [
      (5, 'train', 1.0), (5, 'eval', 1.0), (6, 'train', 3.0)]
  w = writers.MetricWriter(str(tmp_path))  # no resume_step: append only
  w.write(6, {'loss': 4.0}, 'train')
  w.close()
  assert len(_records(str(tmp_path))) == 4


def test_progress_line_shows_means_since_the_previous_line(full_run, make_config, tmp_path,
                                                           one_device_mesh):
  per_step = [r for r in _records(full_run[0]) if r['split'] == 'train']
  logs = []
  config = _config(make_config, log_every_steps=4)
  workdir = str(tmp_path / 'w')
  trainer.train_and_evaluate(config, workdir, stop_after_steps=8, mesh=one_device_mesh,
                             log=logs.append)
  lines = [line for line in logs if line.startswith('step ')]
  assert [line.split(' ')[1] for line in lines] == ['4/12', '8/12']
  for line, steps in zip(lines, (per_step[0:4], per_step[4:8])):
    mean = float(np.mean([r['accuracy'] for r in steps]))
    loss = float(np.mean([r['loss'] for r in steps]))
    assert 'mean of 4 steps: ' in line
    assert f' accuracy {mean:.4g} ' in line and f' loss {loss:.4g} ' in line, (line, mean)
    assert f' lr {steps[-1]["lr"]:.4g} ' in line  # not averaged
  # metrics.jsonl keeps the logged step's own values
  logged = [r for r in _records(workdir) if r['split'] == 'train']
  assert [r['accuracy'] for r in logged] == [per_step[3]['accuracy'], per_step[7]['accuracy']]


def test_progress_line_format():
  progress = writers.Progress(600, 16, 50, 0)
  line, _ = progress.line(120, {'lr': 0.05}, means={'accuracy': 0.5625, 'loss': 1.25},
                          mean_of=50)
  assert line.startswith('step 120/600 (epoch 2.40) mean of 50 steps: accuracy 0.5625 loss 1.25 '
                         '| lr 0.05 | ')
  assert trainer._finite_means([{'loss': 1.0}, {'loss': float('nan')}, {'loss': 3.0}]) == {
      'loss': 2.0}
