"""The launch scripts parse, print their usage on bad arguments, and read the pinned jax version.
(local_multiprocess.sh runs for real in tests/test_multiprocess.py; the TPU pod and SLURM scripts
need gcloud / sbatch, which no test machine has.)"""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ['launch/local_multiprocess.sh', 'launch/tpu_pod.sh', 'launch/gpu_slurm.sbatch']


@pytest.mark.parametrize('script', SCRIPTS)
def test_script_parses(script):
  assert subprocess.run(['bash', '-n', os.path.join(ROOT, script)]).returncode == 0


def test_usage_on_missing_arguments(tmp_path):
  for script in ('launch/local_multiprocess.sh', 'launch/tpu_pod.sh'):
    out = subprocess.run(['bash', os.path.join(ROOT, script)], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 2 and out.stderr.strip(), script
  out = subprocess.run(['bash', os.path.join(ROOT, 'launch/gpu_slurm.sbatch')], cwd=tmp_path,
                       capture_output=True, text=True, env={'PATH': os.environ['PATH']})
  assert out.returncode != 0 and 'set CONFIG=' in out.stderr


def test_tpu_script_pins_the_project_jax_version():
  out = subprocess.run(['sed', '-n', r's/.*"jax>=\([0-9.]*\),.*/\1/p',
                        os.path.join(ROOT, 'pyproject.toml')], capture_output=True, text=True)
  assert out.stdout.strip().count('.') == 2  # e.g. 0.10.2
