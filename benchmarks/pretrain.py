"""Pretrain the embedded benchmark's backbones once: the stand-in for ImageNet weights.

python -m benchmarks.pretrain --out=DIR [--streams d,m,r] [--epochs 20] [--data_dir D]

Every real recipe starts from ImageNet weights; on the embedded benchmark they would be missing,
so each small backbone the benchmark uses (the D and M streams of configs/synthetic_fgvc_*.py, and
R, the small ResNet their one-backbone configs take with `:backbone=r`) is trained once as a plain
classifier on `synthetic_parts/pretrain` (generic shape x texture classes, disjoint from the
benchmark's markings; configs/synthetic_pretrain_classifier.py) and written as a weight directory
in the format of `python -m fgjax.pretrained convert` (weights/, preprocessing.json, source.json)
to DIR/<stream>. The benchmark configs load them with `:weights=DIR`, through the same
`*_pretrained` fields and lr multipliers as the real recipes; `python -m benchmarks.methods
--weights DIR` passes it to every run.

Runs go to DIR/runs/<stream> (rerunning resumes or reuses them: a stream whose run finished is
not retrained, and an existing DIR/<stream> is kept); one JSON line per stream: its pretraining
test top-1, wall time and the weight directory. A run stopped by SIGTERM is not exported (exit
status 0 as `python -m fgjax.train`, no line for it or the streams after it): rerun to resume.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import jax

from fgjax import pretrained, sharding, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'configs', 'synthetic_pretrain_classifier.py')
STREAMS = ('d', 'm', 'r')  # the config's `:stream=` values, in the order they are trained


def pretrain_config(stream: str, epochs: float | None, data_dir: str | None,
                    dataset_config: str | None = None):
  spec = importlib.util.spec_from_file_location('synthetic_pretrain_classifier', CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f'stream={stream}')
  if epochs is not None:
    c.train.num_epochs = float(epochs)
  if data_dir:
    c.dataset.data_dir = data_dir
  if dataset_config:
    c.dataset.config = dataset_config
  c.lock()
  return c


def pretrain(stream: str, out: str, epochs: float | None = None, data_dir: str | None = None,
             dataset_config: str | None = None, log=print) -> dict | None:
  """Trains stream `stream` (unless its run finished) and exports it to OUT/<stream>; None when
  the run stopped before its end (SIGTERM): nothing is exported, and rerunning resumes it."""
  config = pretrain_config(stream, epochs, data_dir, dataset_config)
  workdir = os.path.join(out, 'runs', stream)
  start = time.time()
  if not os.path.exists(os.path.join(workdir, 'metrics.json')):
    if trainer.train_and_evaluate(config, workdir, mesh=sharding.make_mesh(), log=log) is None:
      return None
  wall = time.time() - start
  weights = os.path.join(out, stream)
  if not os.path.exists(os.path.join(weights, 'weights')):
    pretrained.export(workdir, weights)
  with open(os.path.join(workdir, 'metrics.json')) as f:
    metrics = json.load(f)
  return {'stream': stream, 'backbone': config.model.backbone,
          'backbone_kwargs': config.model.backbone_kwargs.to_dict(),
          'dataset': f'synthetic_parts/{config.dataset.config}', 'epochs': config.train.num_epochs,
          'test_top1': metrics['top1'], 'wall_s': round(wall, 1), 'weights': weights}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--streams', default=','.join(STREAMS))
  parser.add_argument('--epochs', type=float, default=None, help='default: the config (20)')
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--dataset_config', default=None,
                      help='another builder config (pretrain_tiny: a smoke run)')
  args = parser.parse_args(argv)
  streams = [s for s in args.streams.split(',') if s]
  bad = [s for s in streams if s not in STREAMS]
  if bad:
    print(f'ERROR: --streams {",".join(bad)}: valid: {", ".join(STREAMS)}', file=sys.stderr)
    return 2
  for stream in streams:
    row = pretrain(stream, args.out, args.epochs, args.data_dir, args.dataset_config,
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    if row is None:
      print(f'stream {stream} stopped before its end, nothing exported: rerun the same command to '
            'resume it', file=sys.stderr, flush=True)
      return 0  # as python -m fgjax.train after SIGTERM
    print(json.dumps(row), flush=True)
  return 0


if __name__ == '__main__':
  jax.config.parse_flags_with_absl()
  sys.exit(main())
