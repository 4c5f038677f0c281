"""SIGTERM: a checkpoint at the current step is written, the process exits 0, and the rerun
continues from it to the same final parameters as an uninterrupted run."""

import random
import signal
import time

import pytest

import reliability_helpers as rel  # tests/reliability/reliability_helpers.py


@pytest.mark.slow
def test_sigterm_checkpoints_exits_zero_and_resumes(baseline, data_dir, tmp_path):
  _, params, stats, meta = baseline
  workdir = str(tmp_path / 'w')
  proc = rel.start(workdir, data_dir)
  rel.wait_for_checkpoint_after(proc, workdir, 0)
  time.sleep(random.Random(0).uniform(0.05, 0.3))
  assert proc.poll() is None
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, output[-3000:]
  assert 'SIGTERM (preemption)' in output
  stopped_at = int(output.split('stopped after step ')[1].split(' ')[0])
  assert rel.checkpoint_steps(workdir)[-1] == stopped_at < 600
  out = rel.run(workdir, data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'step {stopped_at},' in out.stdout.split('resumed from')[1]
  got_params, got_stats, got_meta = rel.final_variables(workdir, rel.cli_config(data_dir))
  assert got_meta == meta
  rel.assert_identical(got_params, params)
  rel.assert_identical(got_stats, stats)
