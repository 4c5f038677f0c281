"""One training run per workdir: a second run is refused (exit 2, one line naming the holder's pid
and host), a stale lock is taken over, the lock goes when the run ends however it ends."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from fgjax import run as run_lib, trainer, workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ['--config=configs/synthetic_bcnn.py', '--config.dataset.config=tiny',
        '--config.dataset.resize_size=36', '--config.dataset.image_size=32',
        '--config.train.global_batch_size=16', '--config.eval.batch_size=16',
        '--config.train.log_every_steps=1', '--config.dataset.num_threads=1']


def _command(workdir, data_dir, epochs):
  return [sys.executable, '-m', 'fgjax.train', f'--workdir={workdir}', *ARGS,
          f'--config.dataset.data_dir={data_dir}', f'--config.train.num_epochs={epochs}']


def _env():
  return {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # one CPU device


def _write_lock(workdir, pid, host, age_s=0.0):
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, '.lock')
  with open(path, 'w') as f:
    json.dump({'pid': pid, 'host': host, 'started': '2020-01-01T00:00:00+00:00'}, f)
  t = time.time() - age_s
  os.utime(path, (t, t))
  return path


def _dead_pid():
  proc = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  return int(proc.stdout)


@pytest.mark.slow
def test_second_run_is_refused_while_the_first_trains(data_dir, tmp_path):
  workdir = str(tmp_path / 'w')
  first = subprocess.Popen(_command(workdir, data_dir, 300), cwd=ROOT, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    metrics = os.path.join(workdir, 'metrics.jsonl')
    t0 = time.time()
    while not (os.path.exists(metrics) and os.path.getsize(metrics)):  # training has started
      assert first.poll() is None and time.time() - t0 < 300, 'the first run did not start'
      time.sleep(0.05)
    second = subprocess.run(_command(workdir, data_dir, 300), cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert first.poll() is None, 'the first run ended before the second was refused'
  finally:
    first.send_signal(signal.SIGTERM)  # stops with a checkpoint, exit 0
    first.wait(timeout=120)
  assert second.returncode == 2, second.stderr[-3000:]
  assert 'Traceback' not in second.stderr
  errors = [line for line in second.stderr.splitlines() if line.startswith('ERROR:')]
  assert len(errors) == 1, second.stderr[-3000:]
  assert f'pid {first.pid} on host {socket.gethostname()}' in errors[0]
  assert f'workdir {workdir} is in use by another training run' in errors[0]
  assert first.returncode == 0
  assert not os.path.exists(os.path.join(workdir, '.lock'))  # released on SIGTERM


def test_stale_lock_of_a_dead_process_is_taken_over(make_config, tmp_path, one_device_mesh):
  workdir = str(tmp_path / 'w')
  pid = _dead_pid()
  _write_lock(workdir, pid, socket.gethostname())
  logs = []
  trainer.train_and_evaluate(make_config('bcnn'), workdir, stop_after_steps=1,
                             mesh=one_device_mesh, log=logs.append)
  assert any(f'took over the stale lock {workdir}/.lock of pid {pid} on host '
             f'{socket.gethostname()}' in line and 'is not running' in line for line in logs), logs
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '1'))
  assert not os.path.exists(os.path.join(workdir, '.lock'))


def test_lock_released_after_a_normal_run_and_after_an_error(make_config, tmp_path,
                                                             one_device_mesh):
  workdir = str(tmp_path / 'w')
  config = make_config('bcnn')
  with config.unlocked():
    config.train.num_epochs = 0.5  # 3 steps
  result = trainer.train_and_evaluate(config, workdir, mesh=one_device_mesh, log=lambda m: None)
  assert result['step'] == 3
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'config.json', 'metrics.json',
                                         'metrics.jsonl', 'tensorboard']
  changed = make_config('bcnn')
  with changed.unlocked():
    changed.optim.learning_rate = 0.5
  # Resuming with another config: a ConfigError before training.
  with pytest.raises(run_lib.ConfigError, match='optim.learning_rate'):
    trainer.train_and_evaluate(changed, workdir, mesh=one_device_mesh, log=lambda m: None)
  assert not os.path.exists(os.path.join(workdir, '.lock'))


def test_lock_of_a_live_process_refuses(tmp_path):
  workdir = str(tmp_path)
  _write_lock(workdir, os.getpid(), socket.gethostname(), age_s=3600)  # alive: age does not matter
  with pytest.raises(workdir_lock.WorkdirLockedError) as info:
    workdir_lock.WorkdirLock(workdir).acquire()
  msg = str(info.value)
  assert f'pid {os.getpid()} on host {socket.gethostname()} (started 2020-01-01' in msg
  assert f'delete {workdir}/.lock' in msg and '\n' not in msg
  assert isinstance(info.value, run_lib.ConfigError)


def test_lock_of_another_host_is_stale_after_its_heartbeat_stops(tmp_path):
  workdir = str(tmp_path)
  _write_lock(workdir, 1, 'another-host', age_s=workdir_lock.STALE_AFTER_S - 60)
  with pytest.raises(workdir_lock.WorkdirLockedError, match='pid 1 on host another-host'):
    workdir_lock.WorkdirLock(workdir).acquire()
  _write_lock(workdir, 1, 'another-host', age_s=workdir_lock.STALE_AFTER_S + 60)
  logs = []
  with workdir_lock.WorkdirLock(workdir, logs.append) as lock:
    holder = workdir_lock.read_holder(lock.path)
    assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
  assert len(logs) == 1 and 'pid 1 on host another-host' in logs[0] and 'not touched' in logs[0]
  assert os.listdir(workdir) == []


def test_unreadable_lock_is_held_until_stale(tmp_path):
  path = os.path.join(str(tmp_path), '.lock')
  with open(path, 'w') as f:
    f.write('{"pid": 12')  # torn
  with pytest.raises(workdir_lock.WorkdirLockedError, match='an unknown run'):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  t = time.time() - workdir_lock.STALE_AFTER_S - 1
  os.utime(path, (t, t))
  with workdir_lock.WorkdirLock(str(tmp_path), lambda m: None):
    assert workdir_lock.read_holder(path)['pid'] == os.getpid()


def test_release_leaves_a_lock_that_is_not_its_own(tmp_path):
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  other = _write_lock(str(tmp_path), 4242, 'another-host')  # e.g. taken over meanwhile
  lock.release()
  assert workdir_lock.read_holder(other)['pid'] == 4242
