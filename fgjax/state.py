"""The training state: what a checkpoint holds, how a fresh one is made from config.seed and how
one is restored with the optimizer structure of the stage it was written in. Used by the trainer
and by fgjax.run (restoring a finished run for evaluate / predict / export)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from fgjax import checkpoint as ckpt_lib
from fgjax import experiment as experiment_lib
from fgjax import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # raw key data (uint32), so checkpoints hold plain arrays
  first_nonfinite: jax.Array  # int32: first step whose loss or gradient was not finite, -1 if none
  num_skipped: jax.Array  # int32: steps skipped as non-finite (train.skip_nonfinite_steps)



def variables(params, batch_stats) -> dict:
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def _init_fn(exp: experiment_lib.Experiment, tx: optax.GradientTransformation):
  """A zero-argument function creating the initial TrainState from config.seed."""
  def init():
    key = jax.random.key(exp.config.seed)
    k_params, k_dropout, k_train = jax.random.split(key, 3)
    variables = exp.model.init({'params': k_params, 'dropout': k_dropout}, exp.dummy_images(),
                               train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      rng=jax.random.key_data(k_train),
                      first_nonfinite=jnp.full((), -1, jnp.int32),
                      num_skipped=jnp.zeros((), jnp.int32))
  return init


def init_state(exp: experiment_lib.Experiment, tx: optax.GradientTransformation) -> TrainState:
  """Initial state, created directly with replicated sharding on the mesh."""
  return jax.jit(_init_fn(exp, tx), out_shardings=sharding.replicated(exp.mesh))()


def abstract_state(exp: experiment_lib.Experiment, tx) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the state, without computing anything."""
  rep = sharding.replicated(exp.mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                      jax.eval_shape(_init_fn(exp, tx)))


def restore(exp: experiment_lib.Experiment, ckpts: ckpt_lib.Checkpoints, step: int):
  """(state, meta) of checkpoint `step`, with the optimizer structure of the stage it was in."""
  meta = ckpts.restore_meta(step)
  if meta['stage'] >= len(exp.stages):
    raise ValueError(f'checkpoint {step} was written in stage {meta["stage"]} '
                     f'({meta["stage_name"]!r}) but this config has {len(exp.stages)} stage(s)')
  tx = exp.optimizer(exp.stages[meta['stage']])
  return ckpts.restore_state(step, abstract_state(exp, tx)), meta
