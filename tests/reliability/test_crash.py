"""SIGKILL at a random step after the first checkpoint; rerunning the same command resumes from the
last checkpoint and ends bit-identical to an uninterrupted run (also after two crashes in a row)."""

import os
import random
import signal

import pytest

import reliability_helpers as rel  # tests/reliability/reliability_helpers.py


def _crash(workdir, data_dir, after_step, rng):
  proc = rel.start(workdir, data_dir)
  step = rel.wait_for_checkpoint_after(proc, workdir, after_step)
  # A random moment between checkpoints: the step at which the kill lands is not a checkpoint.
  import time  # pylint: disable=g-import-not-at-top
  time.sleep(rng.uniform(0.0, 0.3))
  assert proc.poll() is None, 'training finished before the kill'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, 'metrics.json'))
  return step


@pytest.mark.slow
@pytest.mark.parametrize('crashes', [1, 2])
def test_sigkill_then_rerun_is_bit_identical(crashes, baseline, data_dir, tmp_path):
  _, params, stats, meta = baseline
  workdir = str(tmp_path / 'w')
  rng = random.Random(crashes)
  last = 0
  for _ in range(crashes):
    last = _crash(workdir, data_dir, last, rng)
  out = rel.run(workdir, data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'resumed from' in out.stdout
  resumed_at = int(out.stdout.split('resumed from')[1].split('step ')[1].split(',')[0])
  assert 0 < resumed_at < 600 and resumed_at >= last
  got_params, got_stats, got_meta = rel.final_variables(workdir, rel.cli_config(data_dir))
  assert got_meta == meta
  rel.assert_identical(got_params, params)
  rel.assert_identical(got_stats, stats)
