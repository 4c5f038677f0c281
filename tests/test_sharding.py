"""The same train steps on 1 device and on 8 (fake CPU) devices give the same losses and params."""

import jax
import jax.numpy as jnp
import numpy as np

from fgjax import experiment, sharding, trainer
from fgjax.evaluation import protocols
from fgjax.data import pipeline


def _run_steps(config, devices, num_steps=3):
  mesh = sharding.make_mesh(devices)
  exp = experiment.setup(config, mesh=mesh, log=lambda m: None)
  tx = exp.optimizer(exp.stages[0])
  state = trainer.init_state(exp, tx)
  step = trainer.make_train_step(exp, tx)
  batches = pipeline.train_batches(exp.source('train'), config.dataset, keys=exp.batch_keys,
                                   global_batch=config.train.global_batch_size, mesh=mesh,
                                   seed=config.seed)
  losses = []
  for _ in range(num_steps):
    batch = next(batches)
    assert batch['image'].sharding.num_devices == len(devices)
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  return losses, jax.device_get(state.params), jax.device_get(state.batch_stats)


def test_one_vs_eight_devices_same_losses_and_params(make_config):
  config = make_config('bcnn')
  assert len(jax.devices()) == 8
  losses1, params1, stats1 = _run_steps(config, jax.devices()[:1])
  losses8, params8, stats8 = _run_steps(config, jax.devices())
  # float32 tolerance: only the order of the cross-device reductions differs.
  np.testing.assert_allclose(losses1, losses8, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params1, params8)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               stats1, stats8)
  # The run must actually have changed the parameters (else equality proves nothing).
  exp = experiment.setup(config, mesh=sharding.make_mesh(jax.devices()[:1]), log=lambda m: None)
  tx = exp.optimizer(exp.stages[0])
  init = jax.device_get(trainer.init_state(exp, tx).params)
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), init, params8))
  assert max(moved) > 1e-4


def test_evaluation_same_on_one_and_eight_devices(make_config):
  """Padded, masked evaluation batches give identical metrics whatever the device count."""
  config = make_config('bcnn')
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    exp = experiment.setup(config, mesh=sharding.make_mesh(devices), log=lambda m: None)
    tx = exp.optimizer(exp.stages[0])
    results.append(protocols.evaluate(exp, trainer.init_state(exp, tx)))
  assert results[0]['num_examples'] == results[1]['num_examples'] == 48
  assert results[0]['top1'] == results[1]['top1']
  np.testing.assert_allclose(results[0]['loss'], results[1]['loss'], rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params(make_config, one_device_mesh):
  config = make_config('bcnn')
  with config.unlocked():
    config.compute_dtype = 'bfloat16'
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  tx = exp.optimizer(exp.stages[0])
  state = trainer.init_state(exp, tx)
  batch = next(pipeline.train_batches(exp.source('train'), config.dataset, keys=exp.batch_keys,
                                      global_batch=16, mesh=one_device_mesh, seed=0))
  out = exp.model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                         batch['image'], train=False)
  assert out['logits'].dtype == jnp.float32
  state, metrics = trainer.make_train_step(exp, tx)(state, batch)
  assert metrics['loss'].dtype == jnp.float32 and np.isfinite(float(metrics['loss']))
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype('float32')}
  assert {x.dtype for x in jax.tree.leaves(state.opt_state) if x.ndim} == {jnp.dtype('float32')}
