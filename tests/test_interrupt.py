"""Ctrl-C (SIGINT) at a random step of `python -m fgjax.train`: a checkpoint of that step, one line
'interrupted at step N; rerun the same command to resume' on stderr, no traceback, exit 130; the
same command run again resumes at N and ends with the parameters of an uninterrupted run
(bit-identical)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fgjax import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 480  # 80 epochs of 6 steps: a few seconds on one CPU core
# No periodic checkpoint before the end: the one the rerun resumes from is the interrupt's.
ARGS = ['--config=configs/synthetic_bcnn.py', '--config.dataset.config=tiny',
        '--config.dataset.resize_size=36', '--config.dataset.image_size=32',
        '--config.train.global_batch_size=16', '--config.train.num_epochs=80',
        '--config.train.log_every_steps=5', '--config.train.checkpoint_every_steps=1000',
        '--config.eval.batch_size=16', '--config.dataset.num_threads=1']


def _command(workdir, data_dir):
  return [sys.executable, '-m', 'fgjax.train', f'--workdir={workdir}', *ARGS,
          f'--config.dataset.data_dir={data_dir}']


def _env():
  return {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # one CPU device


def _run(workdir, data_dir):
  return subprocess.run(_command(workdir, data_dir), cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=600)


def _last_logged_step(workdir):
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      lines = [line for line in f if line.endswith('\n')]
  except FileNotFoundError:
    return 0
  return json.loads(lines[-1])['step'] if lines else 0


def _final(workdir):
  """(variables, meta) of the latest checkpoint, read as stored."""
  ckpts = checkpoint.Checkpoints(workdir)
  return checkpoint.read_variables(workdir), ckpts.restore_meta(ckpts.latest_step())


@pytest.fixture(scope='module')
def baseline(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  out = _run(workdir, data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  return _final(workdir)


@pytest.mark.slow
def test_sigint_saves_exits_130_and_the_rerun_ends_bit_identical(baseline, data_dir, tmp_path):
  workdir = str(tmp_path / 'w')
  with open(tmp_path / 'stdout', 'w') as out, open(tmp_path / 'stderr', 'w') as err:
    proc = subprocess.Popen(_command(workdir, data_dir), cwd=ROOT, env=_env(), stdout=out,
                            stderr=err)
  try:
    t0 = time.time()
    while _last_logged_step(workdir) == 0:  # training has started
      assert proc.poll() is None and time.time() - t0 < 300, 'the run ended before its first step'
      time.sleep(0.02)
    time.sleep(random.Random(0).uniform(0.0, 0.5))
    assert proc.poll() is None, 'the run ended before it could be interrupted'
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # a second Ctrl-C while it stops: ignored
    proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  stderr = (tmp_path / 'stderr').read_text()
  assert proc.returncode == 130, stderr[-3000:]
  assert 'Traceback' not in stderr and 'KeyboardInterrupt' not in stderr, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.startswith('interrupted at step ')]
  assert len(lines) == 1, stderr[-3000:]
  step = int(lines[0].split(' ')[3].rstrip(';'))
  assert lines[0] == f'interrupted at step {step}; rerun the same command to resume'
  assert 0 < step < TOTAL_STEPS
  assert checkpoint.Checkpoints(workdir).all_steps() == [step]
  assert not os.path.exists(os.path.join(workdir, 'metrics.json'))
  assert not os.path.exists(os.path.join(workdir, '.lock'))

  rerun = _run(workdir, data_dir)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'step {step},' in rerun.stdout.split('resumed from')[1].split('\n')[0]
  variables, meta = _final(workdir)
  want_variables, want_meta = baseline
  assert meta == want_meta and meta['step'] == TOTAL_STEPS
  assert sorted(variables) == sorted(want_variables) and 'params' in variables
  jax.tree.map(np.testing.assert_array_equal, variables, want_variables)
