"""Oracles that validate the embedded benchmark `synthetic_parts/fgvc` before any attention method
runs on it: does each property of real fine-grained data that the data claims actually show?

python -m benchmarks.fgvc_oracles --workdir=DIR [--oracles full,object,eye,noclutter,nolayout]
    [--weights W] [--epochs 40] [--seeds 0] [--data_dir D]

Every oracle trains the same model, B-CNN [D,D] with the benchmark's D stream at 128x128
(`--weights DIR`: pretrained by `python -m benchmarks.pretrain --out=DIR`, as the methods start),
with the same recipe and budget (`fgjax.default_config.synthetic_fgvc_recipe`, 40 epochs), and
differs only in the data it sees:

- full: the whole image (the baseline every oracle is compared with);
- object: the ground-truth object box (+10% margin) cropped and zoomed to the input size
  (property: objects are small and placed anywhere, so localising and zooming pays);
- eye: the ground-truth box of the fine `eye` detail (grown by its size on every side) zoomed to
  the input size (property: the detail pairs need the zoom; read `detail_pair_accuracy`);
- noclutter: `fgvc_noclutter`, the same data without decoys (property: clutter costs B-CNN);
- nolayout: `fgvc_nolayout`, the layout pairs replaced by base classes (property: layout pairs
  cost orderless pooling; read `layout_pair_accuracy` of `full`).

Metrics per run (test split): top-1 over all classes and over the base / layout / detail classes,
and the pair accuracies: for a test image of a paired class c with partner p, whether
logit[c] > logit[p] (0.5 is chance: the model cannot tell the pair apart). One JSON line per run
on stdout, and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from fgjax import run as run_lib, sharding, trainer
from fgjax.default_config import (fgvc_streams, fgvc_weights, get_base_config,
                                  synthetic_fgvc_recipe)
from fgjax.evaluation import protocols
from fgjax.methods.bcnn import BCNN_METHOD

ORACLES = {
    'full': dict(config='fgvc'),
    'object': dict(config='fgvc', crop_to_bbox=True, crop_box='bbox', crop_margin=0.1),
    'eye': dict(config='fgvc', crop_to_bbox=True, crop_box='part_boxes:4', crop_margin=1.0),
    'noclutter': dict(config='fgvc_noclutter'),
    'nolayout': dict(config='fgvc_nolayout'),
}


def oracle_config(name: str, epochs: float, seed: int, data_dir: str | None,
                  dataset_config: str | None = None,
                  weights: str = '') -> ml_collections.ConfigDict:
  """B-CNN [D,D] (the benchmark's D stream) at 128x128 on the data of oracle `name`."""
  c = synthetic_fgvc_recipe(get_base_config())
  c.method = 'bcnn'
  c.model = fgvc_streams(BCNN_METHOD.default_model_config(), 'dd')
  fgvc_weights(c, weights)
  spec = dict(ORACLES[name])
  c.dataset.config = dataset_config or spec.pop('config')
  spec.pop('config', None)
  for k, v in spec.items():
    c.dataset[k] = v
  c.dataset.data_dir = data_dir
  c.train.num_epochs = float(epochs)
  c.seed = seed
  c.lock()
  return c


def pair_metrics(logits: np.ndarray, labels: np.ndarray, kinds: list[str],
                 partner: np.ndarray) -> dict:
  """Top-1 overall and per class kind, and the pair accuracies (module docstring)."""
  pred = logits.argmax(-1)
  out = {'top1': float(np.mean(pred == labels))}
  kind = np.asarray(kinds)[labels]
  for k in ('base', 'layout', 'detail'):
    sel = kind == k
    if sel.any():
      out[f'top1_{k}'] = float(np.mean(pred[sel] == labels[sel]))
      if k != 'base':
        rows = np.nonzero(sel)[0]
        out[f'{k}_pair_accuracy'] = float(np.mean(
            logits[rows, labels[rows]] > logits[rows, partner[labels[rows]]]))
  return out


def run_oracle(name: str, epochs: float, seed: int, workdir: str, data_dir: str | None,
               dataset_config: str | None = None, weights: str = '') -> dict:
  config = oracle_config(name, epochs, seed, data_dir, dataset_config, weights)
  mesh = sharding.make_mesh()
  start = time.time()
  trainer.train_and_evaluate(config, workdir, mesh=mesh, log=lambda m: print(m, file=sys.stderr))
  train_s = time.time() - start
  exp, state, _ = run_lib.restore(config, workdir, mesh=mesh, log=lambda m: None)
  _, gathered = protocols.evaluate_with_outputs(exp, state, config.dataset.eval_split)
  gathered, meta = gathered['eval'], exp.builder.info.metadata
  metrics = pair_metrics(np.asarray(gathered['logits'], np.float64),
                         np.asarray(gathered['label']), list(meta['pair_kind']),
                         np.asarray(meta['partner']))
  n_train = exp.meta.split_sizes[config.dataset.train_split]
  return {'oracle': name, 'dataset': f'synthetic_parts/{config.dataset.config}', 'seed': seed,
          'backbone': 'pretrained D' if weights else 'D from scratch',
          'epochs': epochs, 'wall_s': round(train_s, 1),
          'train_img_s': round(n_train * epochs / train_s, 1), **metrics}


def table(rows: list[dict]) -> str:
  cols = ['top1', 'top1_base', 'top1_layout', 'top1_detail', 'layout_pair_accuracy',
          'detail_pair_accuracy', 'wall_s']
  lines = ['| oracle | data | seeds | ' + ' | '.join(cols) + ' |',
           '|---|---|---|' + '---|' * len(cols)]
  for name in dict.fromkeys(r['oracle'] for r in rows):
    rs = [r for r in rows if r['oracle'] == name]
    cells = []
    for col in cols:
      vals = [r[col] for r in rs if col in r]
      if not vals:
        cells.append('-')
      elif col == 'wall_s':
        cells.append(f'{np.mean(vals):.0f}')
      else:
        cells.append(f'{100 * np.mean(vals):.1f}' + (f' ± {100 * np.std(vals):.1f}'
                                                     if len(vals) > 1 else ''))
    lines.append(f'| {name} | {rs[0]["dataset"]} | {len(rs)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--oracles', default=','.join(ORACLES))
  parser.add_argument('--epochs', type=float, default=40.0)
  parser.add_argument('--seeds', default='0')
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--weights', default='',
                      help='DIR of python -m benchmarks.pretrain --out=DIR (default: from scratch)')
  parser.add_argument('--dataset_config', default=None,
                      help='one builder config for every oracle (fgvc_tiny: a smoke run)')
  args = parser.parse_args(argv)
  names = [n for n in args.oracles.split(',') if n]
  unknown = [n for n in names if n not in ORACLES]
  if unknown:
    print(f'ERROR: unknown oracle(s) {unknown}; valid: {", ".join(ORACLES)}', file=sys.stderr)
    return 2
  rows = []
  for seed in [int(s) for s in args.seeds.split(',')]:
    for name in names:
      row = run_oracle(name, args.epochs, seed, os.path.join(args.workdir, f'{name}_s{seed}'),
                       args.data_dir, args.dataset_config, args.weights)
      rows.append(row)
      print(json.dumps(row), flush=True)
  print(table(rows))
  return 0


if __name__ == '__main__':
  jax.config.parse_flags_with_absl()
  sys.exit(main())
