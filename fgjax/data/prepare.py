"""Build a dataset's array_record files once, before training.

    python -m fgjax.data.prepare NAME [--manual_dir=DIR] [--data_dir=DIR] [--builder_config=NAME]
    python -m fgjax.data.prepare image_folder --path=FOLDER [--builder_config=test_fraction=0.2]

NAME is a registered dataset (`python -m fgjax.data.prepare --list`). Files go to
`--data_dir` (default: $TFDS_DATA_DIR or ~/tensorflow_datasets); `--manual_dir` is the folder
holding the official archives or their extracted contents (README "Datasets" says what each
dataset needs); `--path` is the folder of class subfolders that `image_folder` reads (your own
images; its split options go in --builder_config, see fgjax.data.builders.image_folder). Prints
the split sizes and every image that was converted or skipped.
"""

import json

from absl import app, flags
import ml_collections

from fgjax import cli
from fgjax.data import datasets

_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Folder with the official files.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data_dir for the prepared files.')
_CONFIG = flags.DEFINE_string(
    'builder_config', None, 'Builder config name (e.g. labeled); image_folder: its split options, '
    'e.g. test_fraction=0.2,split_seed=0.')
_PATH = flags.DEFINE_string('path', None, 'image_folder: the folder of class subfolders '
                            '(config.dataset.path).')
_LIST = flags.DEFINE_bool('list', False, 'List the registered datasets and exit.')


def prepare(name: str, manual_dir=None, data_dir=None, builder_config=None, log=print,
            path=None) -> dict:
  cfg = ml_collections.ConfigDict({'name': name, 'config': builder_config, 'data_dir': data_dir,
                                   'manual_dir': manual_dir, 'path': path})
  builder, meta = datasets.prepare(cfg, log=log)
  metadata = builder.info.metadata or {}
  bad = metadata.get('bad_files', {'num_converted': 0, 'num_skipped': 0})
  return {'dataset': name, 'data_dir': meta.data_dir, 'splits': meta.split_sizes,
          'num_classes': meta.num_classes, 'bad_files': bad}


def main(argv):
  cli.quiet()  # as cli.start does for the other commands
  if _LIST.value:
    print('\n'.join(datasets.list_datasets()))
    return 0
  if len(argv) != 2:
    raise app.UsageError('usage: python -m fgjax.data.prepare NAME [--manual_dir=DIR] ...')
  summary = prepare(argv[1], _MANUAL_DIR.value, _DATA_DIR.value, _CONFIG.value,
                    path=_PATH.value)
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == '__main__':
  cli.run(main, user_errors=(FileNotFoundError, ValueError))
