"""Test session setup: 8 fake CPU devices (multi-device tests), a shared tiny dataset directory.

Tests that do not test sharding pass `one_device_mesh` to keep compilation cheap.
"""

import jax

jax.config.update('jax_num_cpu_devices', 8)

import pytest  # noqa: E402

from fgjax import methods, sharding  # noqa: E402
from fgjax.default_config import get_base_config  # noqa: E402


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """One tfds data_dir for the session: the tiny synthetic dataset is built once, on first use."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='session')
def one_device_mesh():
  return sharding.make_mesh(jax.devices()[:1])


def tiny_config(data_dir, method='bcnn', **model_overrides):
  """A tiny synthetic run at 32x32 (locked): 2 epochs of the `tiny` synthetic_parts config."""
  c = get_base_config()
  c.method = method
  c.model = methods.get(method).default_model_config()
  c.model.update(model_overrides)
  c.dataset.config = 'tiny'
  c.dataset.data_dir = data_dir
  c.dataset.resize_size = 36
  c.dataset.image_size = 32
  c.dataset.shift_y = 2
  c.dataset.shift_x = 2
  c.dataset.num_threads = 1
  c.train.global_batch_size = 16
  c.train.num_epochs = 2.0
  c.train.log_every_steps = 1000
  c.train.checkpoint_every_steps = 1000
  c.eval.batch_size = 16
  c.optim.learning_rate = 0.05
  c.lock()
  return c


@pytest.fixture
def make_config(data_dir):
  """config factory: the tiny synthetic dataset at 32x32, a short bcnn run."""
  def make(method='bcnn', **model_overrides):
    return tiny_config(data_dir, method, **model_overrides)
  return make


@pytest.fixture(scope='session')
def tiny_config_factory(data_dir):
  """`tiny_config_factory(method, **model_overrides)`: `tiny_config` for session/module-scoped
  fixtures (test modules must not import conftest: tests/reliability has its own conftest)."""
  return lambda method='bcnn', **overrides: tiny_config(data_dir, method, **overrides)


@pytest.fixture(scope='session')
def trained_workdir(data_dir, tmp_path_factory):
  """`trained_workdir(method)`: the workdir of a finished tiny run of `method` (default model
  config, one device), trained once per session and shared by the tests that read a run
  (predict, export, evaluate). Treat it as read-only; copy it to write into it."""
  from fgjax import trainer  # pylint: disable=g-import-not-at-top
  cache = {}

  def get(method='bcnn'):
    if method not in cache:
      workdir = str(tmp_path_factory.mktemp(f'run_{method}'))
      trainer.train_and_evaluate(tiny_config(data_dir, method), workdir,
                                 mesh=sharding.make_mesh(jax.devices()[:1]), log=lambda m: None)
      cache[method] = workdir
    return cache[method]
  return get
