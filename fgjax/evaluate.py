"""Evaluate the latest checkpoint of a run.

python -m fgjax.evaluate --config=configs/X.py --workdir=DIR [--split=test]

Writes WORKDIR/metrics.json for the config's eval split (the same file training ends with), or
WORKDIR/metrics_<split>.json for another split, and prints the metrics as JSON.
"""

import json
import os

from absl import app, flags
import jax
from ml_collections import config_flags

from fgjax import checkpoint, cli, evaluation, experiment, trainer

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file of the run.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'The run\'s workdir (with checkpoints/).')
_SPLIT = flags.DEFINE_string('split', None, 'Split to evaluate (default: config.dataset.eval_split).')
flags.mark_flags_as_required(['config', 'workdir'])


def evaluate_latest(config, workdir: str, split: str | None = None) -> dict:
  exp = experiment.setup(config)
  ckpts = checkpoint.Checkpoints(workdir)
  step = ckpts.latest_step()
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {ckpts.directory}; train first with '
                            f'python -m fgjax.train --config=... --workdir={workdir}')
  state, _ = trainer.restore(exp, ckpts, step)
  result = {**evaluation.evaluate(exp, state, split), 'step': step}
  split = result['split']
  default = split in (config.dataset.eval_split, f'{config.eval.query_split}->{config.eval.gallery_split}')
  name = 'metrics.json' if default else f'metrics_{split}.json'
  if jax.process_index() == 0:
    with open(os.path.join(workdir, name), 'w') as f:
      json.dump(result, f, indent=2)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.start()
  print(json.dumps(evaluate_latest(_CONFIG.value, _WORKDIR.value, _SPLIT.value)), flush=True)


if __name__ == '__main__':
  app.run(main)
