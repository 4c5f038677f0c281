"""The uninterrupted baseline run that crash and preemption tests compare against."""

import pytest

import reliability_helpers as rel  # tests/reliability/reliability_helpers.py


@pytest.fixture(scope='session')
def baseline(tmp_path_factory, data_dir):
  """One uninterrupted CLI run: (workdir, params, batch_stats, meta)."""
  workdir = str(tmp_path_factory.mktemp('baseline'))
  out = rel.run(workdir, data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  params, stats, meta = rel.final_variables(workdir, rel.cli_config(data_dir))
  assert meta['step'] == 600
  return workdir, params, stats, meta
