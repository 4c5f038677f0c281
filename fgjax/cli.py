"""Flags shared by the entry points (train, evaluate, export, predict, average): logging and
multi-process start-up, and every flag more than one of them takes, defined here once so that the
entry points can be imported together (tests) without a DuplicateFlagError. Flags only one entry
point takes are defined in it; each command marks its own required flags."""

from absl import flags, logging
from ml_collections import config_flags

from fgjax import sharding

CONFIG = config_flags.DEFINE_config_file(
    'config', None, "Config file (get_config()). train: required; evaluate, export: default the "
    "run's own WORKDIR/config.json.", lock_config=True)
WORKDIR = flags.DEFINE_string(
    'workdir', None, "The run's directory: train writes config.json, checkpoints/ and metrics "
    'there; evaluate, export and predict read them.')
SPLIT = flags.DEFINE_string('split', None, 'Dataset split. evaluate: default '
                            'config.dataset.eval_split; export: required.')
OUT = flags.DEFINE_string('out', None, 'Output file. export: the .npz (required); average: also '
                          'write the result to this JSON file.')
PROGRESS = flags.DEFINE_boolean('progress', False, 'export, predict: progress on stderr even '
                                'when it is not a terminal.')

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
