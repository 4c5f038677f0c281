"""Flags shared by the entry points (train, evaluate): logging and multi-process start-up."""

from absl import flags, logging

from fgjax import sharding

_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    "jax.distributed: 'auto' starts it when --coordinator_address is given or SLURM / Cloud TPU "
    "is detected; 'on' always (JAX reads the cluster from the environment); 'off' never.")
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 (bare clusters, local multi-process).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (0-based).')
_LOCAL_DEVICES = flags.DEFINE_integer('local_device_count', None,
                                      'Fake CPU devices per process (testing / debugging).')


def start() -> None:
  """Quiet library INFO logs unless --verbosity was given, then start jax.distributed if needed."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  what = sharding.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                             _PROCESS_ID.value, _LOCAL_DEVICES.value)
  if what != 'single process':
    print(what, flush=True)
