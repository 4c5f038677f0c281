"""config.profile_steps: the window parser and a real traced run (the trace file exists)."""

import glob
import os

import pytest

from fgjax import experiment, profiling, trainer
from fgjax.default_config import ConfigError


def test_parse_windows_and_errors():
  assert profiling.parse('') is None
  window = profiling.parse('3,2')
  assert (window.start, window.count, window.last) == (3, 2, 4)
  for bad in ('3', '3,0', '0,2', 'a,b', '3,2,1', '-1,2'):
    with pytest.raises(ValueError, match=r"config.profile_steps=.*expected 'START,N'"):
      profiling.parse(bad)


def test_bad_window_is_a_config_error(make_config, one_device_mesh):
  config = make_config('bcnn')
  with config.unlocked():
    config.profile_steps = '5'
  with pytest.raises(ConfigError, match='config.profile_steps'):
    experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)


def test_training_writes_a_trace_of_the_window(make_config, one_device_mesh, tmp_path):
  config = make_config('bcnn')
  with config.unlocked():
    config.profile_steps = '2,2'
  lines = []
  trainer.train_and_evaluate(config, str(tmp_path), mesh=one_device_mesh,
                             stop_after_steps=4, log=lines.append)
  traces = glob.glob(os.path.join(tmp_path, 'profile', '**', '*.xplane.pb'), recursive=True)
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  assert any('profile: tracing steps 2-3' in line for line in lines), lines
  assert any('profile: trace written to' in line for line in lines)


def test_window_past_the_run_traces_until_its_end(tmp_path):
  """A window that runs past the stage's last step stops the trace at that step."""
  steps = []

  def step_fn(state, batch):
    steps.append(state)
    return state, {}
  lines = []
  traced = profiling.wrap_steps(step_fn, 4, 5, profiling.Window(5, 10), str(tmp_path),
                                lines.append)
  for i in (4, 5):
    traced(i, None)
  assert steps == [4, 5]
  assert lines[0].startswith('profile: tracing steps 5-5')
  assert glob.glob(os.path.join(tmp_path, 'profile', '**', '*.xplane.pb'), recursive=True)
  # A window outside the stage returns the step function itself.
  assert profiling.wrap_steps(step_fn, 1, 3, profiling.Window(5, 1), str(tmp_path), print) \
      is step_fn
