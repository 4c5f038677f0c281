"""Train a method: python -m fgjax.train --config=configs/X.py --workdir=DIR [--config.FIELD=VALUE].

Rerunning the same command with the same workdir resumes from the latest checkpoint. Writes
WORKDIR/{config.json, metrics.jsonl, metrics.json, tensorboard/, checkpoints/}. `~` and $VARS
are expanded in --workdir and in the config's path fields (fgjax.run.resolve_config); an override
of config.dataset.image_size alone derives the resize size from it.
python -m fgjax.train --config=configs/X.py --print_config prints the config's fields and values.

Exit codes: 0 done, or stopped by SIGTERM after writing a checkpoint (rerun to resume); 130
interrupted by Ctrl-C (SIGINT) after writing a checkpoint of the current step (rerun to resume);
1 a non-finite loss/gradient or a checkpoint that could not be written; 2 a config, workdir or
dataset problem found before training, or another training run holding WORKDIR/.lock: one line
`ERROR: ...` says what to change (the traceback too with --verbosity=1 or FGJAX_TRACEBACK=1).
"""

import sys

from absl import app, flags
import jax

from fgjax import checkpoint, cli, experiment, run, trainer

_PRINT_CONFIG = flags.DEFINE_boolean(
    'print_config', False, "Print the config's fields and values as training would use them "
    '(after --config.FIELD=VALUE overrides and derived fields) and exit, without reading data or '
    'training (no --workdir needed).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} (flags take the form '
                         '--name=value; --help lists them)')
  if _PRINT_CONFIG.value:  # stdout: the config alone; notes (derived fields) on stderr
    config = run.resolve_config(cli.CONFIG.value, cli.overridden_fields(),
                                log=lambda m: print(m, file=sys.stderr, flush=True))
    print(config, end='', flush=True)
    return
  if not cli.WORKDIR.value:
    raise run.ConfigError("--workdir is required: the run's directory (config.json, checkpoints, "
                          'metrics), e.g. --workdir=/tmp/fgjax/run1')
  cli.start()
  log = (lambda m: print(m, flush=True)) if jax.process_index() == 0 else (lambda m: None)
  config = run.resolve_config(cli.CONFIG.value, cli.overridden_fields(), log)
  note = experiment.random_init_note(config)
  if note:
    log(note)
  try:
    trainer.train_and_evaluate(config, run.expand_path(cli.WORKDIR.value))
  except trainer.Interrupted:  # checkpoint written; the trainer printed 'interrupted at step N'
    sys.exit(130)
  except KeyboardInterrupt:  # Ctrl-C before the first step: nothing to save
    print('interrupted before training started; rerun the same command to start again',
          file=sys.stderr, flush=True)
    sys.exit(130)


if __name__ == '__main__':
  cli.run(main, shared=('config', 'workdir'), required=('config',),
          fatal_errors=(trainer.NonFiniteError, checkpoint.CheckpointError))
