"""End to end, as a user runs it: the README demo command trains for real and learns the task;
`fgjax.evaluate` re-evaluates the checkpoint it left and gets the same numbers."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, env):
  return subprocess.run([sys.executable, '-m', *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)


@pytest.mark.slow
def test_demo_trains_and_evaluates(tmp_path):
  env = {**os.environ, 'TFDS_DATA_DIR': str(tmp_path / 'tfds')}
  env.pop('XLA_FLAGS', None)
  workdir = tmp_path / 'demo'
  out = _run(['fgjax.train', '--config=configs/demo.py', f'--workdir={workdir}'], env)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  # The run says where its outputs are, and they are there.
  for what in ('checkpoints in', 'TensorBoard in', 'metrics in', 'img/s', 'ETA', 'wrote'):
    assert what in out.stdout, (what, out.stdout[-2000:])
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert metrics['top1'] >= 0.80, metrics
  assert metrics['num_examples'] == 600
  assert os.listdir(workdir / 'tensorboard')
  lines = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert lines[0]['split'] == 'train' and lines[-1]['split'] == 'eval'
  # Re-evaluating the latest checkpoint reproduces the final evaluation.
  out = _run(['fgjax.evaluate', '--config=configs/demo.py', f'--workdir={workdir}'], env)
  assert out.returncode == 0, out.stderr[-3000:]
  again = json.loads(out.stdout.strip().splitlines()[-1])
  assert again['step'] == metrics['step']
  assert abs(again['top1'] - metrics['top1']) < 1e-9
  # Rerunning the finished run resumes at the end and only re-evaluates.
  out = _run(['fgjax.train', '--config=configs/demo.py', f'--workdir={workdir}'], env)
  assert out.returncode == 0 and 'resumed from' in out.stdout, out.stdout[-2000:]
  assert 'compiled train step' not in out.stdout
