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
  """The TPU build installed is the jax version fgjax's own install resolved for the worker's
  Python (pyproject pins jax by Python version)."""
  with open(os.path.join(ROOT, 'launch', 'tpu_pod.sh')) as f:
    script = f.read()
  install = script.index('pip install -q -e .')
  tpu = script.index('jax[tpu]==')
  assert install < tpu
  assert "import jax; print(jax.__version__)" in script[tpu:tpu + 80]
