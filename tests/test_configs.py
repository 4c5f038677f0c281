"""Every config in configs/ loads, names a registered method, backbone and dataset, and passes the
method's shape checks (without data or weights: those are the user's, see README)."""

import glob
import importlib.util
import os

import pytest

from fgjax import methods
from fgjax.evaluation import protocols
from fgjax.data import augment, datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize('path', CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_is_valid(path):
  config = _load(path)
  config.lock()
  method = methods.get(config.method)
  if 'allow_random_init' in config.model:
    config.model.allow_random_init = True  # weights are the user's; check everything else
  method.check_config(config)
  cls = datasets.builder_class(config.dataset.name)
  if config.dataset.config is not None:
    assert config.dataset.config in datasets.builder_config_names(config.dataset.name)
  assert config.eval.protocol in protocols.PROTOCOL_KEYS
  h, w = augment.input_hw(config.dataset)
  assert h > 0 and w > 0 and cls is not None
  assert config.train.global_batch_size % 8 == 0  # divides over 1, 2, 4 or 8 devices


def test_every_config_has_usage_docs():
  for path in CONFIGS:
    with open(path) as f:
      head = f.read(600)
    assert head.startswith('"""') and 'python -m fgjax.train --config=configs/' in head, path


SHRINKABLE = [p for p in CONFIGS if ':runlocal' in open(p).read()]  # real-data configs


@pytest.mark.parametrize('path', SHRINKABLE, ids=[os.path.basename(p) for p in SHRINKABLE])
def test_runlocal_argument_shrinks_the_config(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  full, small = module.get_config(), module.get_config('runlocal')
  small.model.allow_random_init = True
  methods.get(small.method).check_config(small)
  assert augment.input_hw(small.dataset)[0] < augment.input_hw(full.dataset)[0]
  assert small.train.global_batch_size < full.train.global_batch_size
  with pytest.raises(ValueError, match='runlocal'):
    module.get_config('fast')


def test_cub_bilinear_lstm_without_the_dataset_prints_instructions(tmp_path):
  """A new user's first command, before preparing CUB: exit 2 and what to do, no traceback."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.run(
      [sys.executable, '-m', 'fgjax.train', '--config=configs/cub_bilinear_lstm.py',
       f'--workdir={tmp_path / "w"}', f'--config.dataset.data_dir={tmp_path / "tfds"}',
       f'--config.dataset.manual_dir={tmp_path / "manual"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  text = proc.stdout + proc.stderr
  assert proc.returncode == 2, text[-3000:]
  assert 'Traceback' not in text, text[-3000:]
  assert 'CUB_200_2011' in text and 'manual_dir' in text, text[-3000:]
