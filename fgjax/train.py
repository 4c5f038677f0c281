"""Train a method: python -m fgjax.train --config=configs/X.py --workdir=DIR [--config.FIELD=VALUE].

Rerunning the same command with the same workdir resumes from the latest checkpoint. Writes
WORKDIR/{config.json, metrics.jsonl, metrics.json, tensorboard/, checkpoints/}.

Exit codes: 0 done, or stopped by SIGTERM after writing a checkpoint (rerun to resume); 1 a
non-finite loss/gradient or a checkpoint that could not be written; 2 a config, workdir or dataset
problem found before training (the message says what to change).
"""

import sys

from absl import app, flags

from fgjax import checkpoint, cli, run, trainer


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.start()
  try:
    trainer.train_and_evaluate(cli.CONFIG.value, cli.WORKDIR.value)
  except run.ConfigError as e:  # config / workdir / dataset problems: the message says what to do
    print(f'ERROR: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  except (trainer.NonFiniteError, checkpoint.CheckpointError) as e:
    print(f'ERROR: {e}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  # Marked here, not at import: fgjax.cli's flags are shared with the other commands.
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
