"""python -m fgjax.data.prepare builds a registered dataset and reports splits and bad files."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'fgjax.data.prepare', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_prepare_synthetic_tiny(tmp_path):
  out = _run('synthetic_parts', '--builder_config=tiny', f'--data_dir={tmp_path}')
  assert out.returncode == 0, out.stderr[-2000:]
  summary = json.loads(out.stdout[out.stdout.index('{'):])
  assert summary['splits']['train'] == 96 and summary['splits']['test'] == 48
  assert summary['num_classes'] == 4


def test_list_and_unknown_name(tmp_path):
  out = _run('--list')
  assert out.returncode == 0 and 'synthetic_parts' in out.stdout.split()
  out = _run('cub9000', f'--data_dir={tmp_path}')
  assert out.returncode != 0 and "unknown dataset 'cub9000'" in out.stderr
