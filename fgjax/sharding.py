"""Mesh and batch sharding: data parallelism with `jax.jit` over a Mesh with axis ``data``.

Params and optimizer state are replicated, batches are sharded on their leading axis. Each process
feeds only its own rows; `jax.make_array_from_process_local_data` assembles the global array.

Multi-host: `initialize()` calls `jax.distributed.initialize()` (JAX's own multi-process runtime)
before any other JAX use: with explicit coordinator / process count / process id (bare clusters,
launch/local_multiprocess.sh), or with no arguments under SLURM (one task per process) and on Cloud
TPU VMs, where JAX reads the cluster from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def _cluster_detected() -> str | None:
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_PROCID' in os.environ:
    return 'SLURM'
  if os.environ.get('TPU_WORKER_HOSTNAMES') or os.environ.get('CLOUD_TPU_TASK_ID'):
    return 'Cloud TPU'
  return None


def initialize(mode: str = 'auto', coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               local_device_count: int | None = None) -> str:
  """Start JAX's multi-process runtime if asked or detected; returns what was done.

  mode: 'off' (single process), 'on' (always; explicit arguments or JAX's cluster detection),
  'auto' ('on' when coordinator_address is given or SLURM / Cloud TPU is detected).
  local_device_count: fake CPU devices per process (testing and debugging on one machine).
  """
  if mode not in ('auto', 'on', 'off'):
    raise ValueError(f"distributed mode must be 'auto', 'on' or 'off', got {mode!r}")
  if local_device_count:
    jax.config.update('jax_num_cpu_devices', int(local_device_count))
  cluster = _cluster_detected()
  if mode == 'off' or (mode == 'auto' and coordinator_address is None and cluster is None):
    return 'single process'
  kwargs = {}
  if coordinator_address is not None:
    if num_processes is None or process_id is None:
      raise ValueError('--coordinator_address needs --num_processes and --process_id')
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  jax.distributed.initialize(**kwargs)
  return (f'jax.distributed: process {jax.process_index()} of {jax.process_count()} '
          f'({cluster or "explicit coordinator"}), {jax.local_device_count()} local / '
          f'{jax.device_count()} global devices')


def barrier(name: str) -> None:
  """Wait until every process reaches this point (no-op on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


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
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any (a small all-gather; one process: `flag`)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.max(multihost_utils.process_allgather(np.int32(bool(flag)))))
