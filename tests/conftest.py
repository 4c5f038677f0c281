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


@pytest.fixture
def make_config(data_dir):
  """config factory: the tiny synthetic dataset at 32x32, a short bcnn run."""
  def make(method='bcnn', **model_overrides):
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
  return make
