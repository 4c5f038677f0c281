"""Optimiser construction: lr multipliers, frozen groups, weight-decay mask, schedules, stages."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fgjax import optim
from fgjax.default_config import get_base_config


def _stage(**optim_fields):
  c = get_base_config()
  c.optim.update(optim_fields)
  return optim.make_stages(c, steps_per_epoch=10)[0]


PARAMS = {'backbone': {'conv': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}},
          'classifier': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones((3,))}}
GRADS = jax.tree.map(lambda p: jnp.full_like(p, 0.5), PARAMS)


def _one_update(stage):
  tx = optim.make_optimizer(stage, PARAMS, steps_per_epoch=10)
  updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  return jax.tree.map(np.asarray, updates)


def test_lr_multiplier_frozen_and_decay_mask():
  stage = _stage(learning_rate=0.1, momentum=0.0, schedule='constant', weight_decay=0.01,
                 lr_multipliers=ml_collections.ConfigDict({'^backbone': 0.1}))
  u = _one_update(stage)
  # SGD: -lr * mult * (grad + wd * param on kernels only); computed by hand.
  np.testing.assert_allclose(u['backbone']['conv']['kernel'], -0.1 * 0.1 * (0.5 + 0.01), rtol=1e-6)
  np.testing.assert_allclose(u['backbone']['conv']['bias'], -0.1 * 0.1 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(u['classifier']['kernel'], -0.1 * (0.5 + 0.01), rtol=1e-6)
  np.testing.assert_allclose(u['classifier']['bias'], -0.1 * 0.5, rtol=1e-6)
  frozen = _one_update(_stage(learning_rate=0.1, schedule='constant', frozen='^backbone'))
  assert not np.any(frozen['backbone']['conv']['kernel'])
  assert np.all(frozen['classifier']['kernel'] < 0)


def test_frozen_params_keep_no_optimizer_state():
  stage = _stage(frozen='^backbone', momentum=0.9)
  tx = optim.make_optimizer(stage, PARAMS, steps_per_epoch=10)
  n_state = sum(x.size for x in jax.tree.leaves(tx.init(PARAMS)) if x.ndim)
  assert n_state == 2 * 3 + 3  # momentum only for the classifier's kernel and bias


def test_step_schedule_with_warmup():
  stage = _stage(learning_rate=1.0, schedule='step', warmup_epochs=1.0, decay_epochs=(3, 5),
                 decay_factor=0.1)
  fn = optim.schedule(stage.optim, 100, steps_per_epoch=10)
  assert float(fn(0)) == 0.0 and abs(float(fn(5)) - 0.5) < 1e-6
  assert abs(float(fn(29)) - 1.0) < 1e-6 and abs(float(fn(30)) - 0.1) < 1e-6
  assert abs(float(fn(50)) - 0.01) < 1e-7


def test_stages_ranges_and_overrides():
  c = get_base_config()
  c.optim.learning_rate = 0.5
  c.stages = (ml_collections.ConfigDict({'name': 'head', 'num_epochs': 2.0, 'frozen': 'x'}),
              ml_collections.ConfigDict({'name': 'all', 'num_epochs': 0.5,
                                         'learning_rate': 0.001}))
  head, full = optim.make_stages(c, steps_per_epoch=10)
  assert (head.start_step, head.end_step, full.start_step, full.end_step) == (0, 20, 20, 25)
  assert head.optim.frozen == 'x' and head.optim.learning_rate == 0.5
  assert full.optim.frozen == '' and full.optim.learning_rate == 0.001
  c.stages = (ml_collections.ConfigDict({'name': 'bad'}),)
  with pytest.raises(ValueError, match='num_epochs'):
    optim.make_stages(c, 10)
