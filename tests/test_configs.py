"""Every config in configs/ loads, names a registered method, backbone and dataset, and passes the
method's shape checks (without data or weights: those are the user's, see README)."""

import glob
import importlib.util
import os

import pytest

from fgjax import evaluation, methods
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
  assert config.eval.protocol in evaluation.PROTOCOL_KEYS
  h, w = augment.input_hw(config.dataset)
  assert h > 0 and w > 0 and cls is not None
  assert config.train.global_batch_size % 8 == 0  # divides over 1, 2, 4 or 8 devices


def test_every_config_has_usage_docs():
  for path in CONFIGS:
    with open(path) as f:
      head = f.read(600)
    assert head.startswith('"""') and 'python -m fgjax.train --config=configs/' in head, path
