"""Mesh and batch sharding: data parallelism with `jax.jit` over a Mesh with axis ``data``.

Params and optimizer state are replicated, batches are sharded on their leading axis. Each process
feeds only its own rows; `jax.make_array_from_process_local_data` assembles the global array.
Multi-host initialisation (`jax.distributed.initialize`) is added by the scale-out work; on one
host this module needs nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every global device) with axis ``data``."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Rows this process feeds; raises if the global batch cannot be split evenly."""
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  if global_batch_size % n_dev:
    raise ValueError(
        f'global batch size {global_batch_size} is not divisible by the {n_dev} devices of the '
        f'mesh; use a multiple of {n_dev}.')
  return global_batch_size // n_proc


def to_global(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> dict of global jax.Arrays sharded on ``data``."""
  sharding = batch_sharded(mesh)
  out = {}
  for k, v in local.items():
    v = np.asarray(v)
    global_shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
    out[k] = jax.make_array_from_process_local_data(sharding, v, global_shape)
  return out


def to_host(x: jax.Array) -> np.ndarray:
  """Gather a (possibly multi-process) global array to a numpy array on every host."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
