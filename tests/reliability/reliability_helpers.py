"""Helpers shared by the reliability tests: the training command, a runner, restoring results.

Crash and preemption tests run `python -m fgjax.train` as a real subprocess (1 CPU device) on the
tiny synthetic dataset: ~600 steps of a small B-CNN with a checkpoint every 20 steps, long enough
to be interrupted at a random step after its first checkpoint.
"""

import os
import subprocess
import sys
import time

import jax
import numpy as np

from fgjax import checkpoint, experiment, sharding, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES = ['--config.dataset.config=tiny', '--config.dataset.resize_size=36',
             '--config.dataset.image_size=32', '--config.train.global_batch_size=16',
             '--config.train.num_epochs=100', '--config.train.checkpoint_every_steps=20',
             '--config.train.log_every_steps=100', '--config.eval.batch_size=16',
             '--config.dataset.num_threads=1']


def command(workdir, data_dir):
  return [sys.executable, '-m', 'fgjax.train', '--config=configs/synthetic_bcnn.py',
          f'--workdir={workdir}', f'--config.dataset.data_dir={data_dir}', *OVERRIDES]


def env():
  e = {**os.environ}
  e.pop('XLA_FLAGS', None)
  return e


def run(workdir, data_dir, timeout=600):
  return subprocess.run(command(workdir, data_dir), cwd=ROOT, env=env(), capture_output=True,
                        text=True, timeout=timeout)


def start(workdir, data_dir):
  return subprocess.Popen(command(workdir, data_dir), cwd=ROOT, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_steps(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def wait_for_checkpoint_after(proc, workdir, step, timeout=300):
  """Block until a checkpoint later than `step` exists (the process must still be running)."""
  t0 = time.time()
  while time.time() - t0 < timeout:
    steps = checkpoint_steps(workdir)
    if steps and steps[-1] > step:
      return steps[-1]
    assert proc.poll() is None, 'training ended before it could be interrupted'
    time.sleep(0.02)
  raise TimeoutError('no checkpoint appeared')


def final_variables(workdir, config):
  """(params, batch_stats, meta) of the latest checkpoint, restored as the trainer does."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  exp = experiment.setup(config, mesh=mesh, log=lambda m: None)
  ckpts = checkpoint.Checkpoints(workdir)
  state, meta = trainer.restore(exp, ckpts, ckpts.latest_step())
  return jax.device_get(state.params), jax.device_get(state.batch_stats), meta


def cli_config(data_dir):
  """The config the CLI builds from OVERRIDES (for restoring in-process)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('c', os.path.join(ROOT, 'configs',
                                                                 'synthetic_bcnn.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.dataset.config, c.dataset.data_dir = 'tiny', data_dir
  c.dataset.resize_size, c.dataset.image_size = 36, 32
  c.train.global_batch_size, c.train.num_epochs = 16, 100.0
  c.train.checkpoint_every_steps, c.train.log_every_steps = 20, 100
  c.eval.batch_size, c.dataset.num_threads = 16, 1
  return c


def assert_identical(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)
