"""Every method against its paper's claim, on one budget per method, in one command.

python -m benchmarks.methods --workdir=DIR [--seeds 0,1,2] [--methods bcnn_spp,a3m,...]
    [--data synthetic_fgvc] [--weights W] [--before] [--readings] [--runlocal]
    [--epochs_scale 1.0] [--data_dir D]

On the embedded benchmark (`--data synthetic_fgvc`, the default) each claim compares two runs of
configs/synthetic_fgvc_*.py, the method and its paper's baseline or ablation, trained from scratch
with the config's own budget on every seed (`--weights DIR`: from the backbones of
`python -m benchmarks.pretrain --out=DIR`, as the real recipes start from ImageNet):

| method | claim (the paper's) | run A | run B |
|---|---|---|---|
| bcnn_spp | B-CNN+SPP > B-CNN [D,M] (Wu & Wang 2017) | bcnn_spp | bcnn |
| bilinear_lstm | bilinear_lstm > B-CNN [D,M] (Wu & Wang 2017) | bilinear_lstm | bcnn |
| a3m | A3M > Baseline-1 (Han et al. 2018) | a3m | a3m_baseline1 |
| activation_attention | 3 scales > 1 scale (Shen & Liu) | activation_attention | activation_attention_single |
| focus_discriminate | hybrid > image-level only (Feng et al. 2019) | focus_discriminate | focus_discriminate_image_level |

A claim *holds* when run A's test top-1 beats run B's on every seed (paired by seed); otherwise
it does not hold, and the table says so with both numbers. `--methods` picks claims by method
name (`bcnn` runs the baseline alone). Every run writes its workdir under --workdir (rerunning
resumes or reuses finished runs), one JSON line per run on stdout, and at the end a markdown table
(also written to WORKDIR/table.md): claim, mean ± std over seeds of A and B, holds / does not
hold, wall time and img/s.

`--before` (synthetic_fgvc) also trains each attention method with `:readings=before`, the
readings fgjax used before it fixed those that switched the mechanism off (2026-12,
docs/methods/), and the table gains an "A before" column. `--readings` also trains the readings
whose default the benchmark chooses (`READINGS`: bilinear_lstm's readout and input
normalisation; focus_discriminate's region scoring, whose default it chose: 'fixed_centre', so
the alternatives run: 'anchor_mean' is its `before` run, trained once for both flags) and prints a
second table: each reading's top-1 against run A's, paired by seed.

Real datasets (`--data cub2011 | cars196 | fgvc_aircraft | market1501`): the same claims with the
real configs (configs/<dataset>_<method>.py, which need the prepared dataset and ImageNet weights,
README "Datasets"), printed beside the published numbers (`PUBLISHED`). `--runlocal` passes
`:runlocal` to the configs that take it (a CPU smoke run; weights optional).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from fgjax import sharding, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Claim:
  method: str
  text: str
  run_a: str
  run_b: str
  before: str | None = None  # run A with the readings fgjax used before 2026-12 (`--before`)


CLAIMS = (
    Claim('bcnn_spp', 'B-CNN+SPP > B-CNN [D,M] (Wu & Wang 2017)', 'bcnn_spp', 'bcnn'),
    Claim('bilinear_lstm', 'bilinear_lstm > B-CNN [D,M] (Wu & Wang 2017)', 'bilinear_lstm',
          'bcnn', 'bilinear_lstm_before'),
    Claim('a3m', 'A3M > Baseline-1 (Han et al. 2018)', 'a3m', 'a3m_baseline1', 'a3m_before'),
    Claim('activation_attention', '3 scales > 1 scale (Shen & Liu)', 'activation_attention',
          'activation_attention_single', 'activation_attention_before'),
    Claim('focus_discriminate', 'hybrid > image-level only (Feng et al. 2019)',
          'focus_discriminate', 'focus_discriminate_image_level', 'focus_discriminate_before'),
)

# method -> the runs of the readings whose default the benchmark chooses (`--readings`).
# focus_discriminate's readings before 2026-12 are region_scoring='anchor_mean' with the default
# fusion ('concat'), so its `before` run is the anchor_mean reading: listed here, trained once.
READINGS = {
    'bilinear_lstm': ('bilinear_lstm_flatten', 'bilinear_lstm_mean', 'bilinear_lstm_image_norm'),
    'focus_discriminate': ('focus_discriminate_before', 'focus_discriminate_anchor_excess'),
}

# run name -> (method config suffix, config argument) for every dataset
RUNS = {
    'bcnn': ('bcnn', ''),
    'bcnn_spp': ('bcnn_spp', ''),
    'bilinear_lstm': ('bilinear_lstm', ''),
    'a3m': ('a3m', ''),
    'a3m_baseline1': ('a3m', 'ablation=baseline1'),
    'activation_attention': ('activation_attention', ''),
    'activation_attention_single': ('activation_attention', 'single'),
    'focus_discriminate': ('focus_discriminate', ''),
    'focus_discriminate_image_level': ('focus_discriminate', 'image_level'),
    # --before / --readings: synthetic_fgvc only (the configs' `readings`, `readout`, ... arguments)
    'bilinear_lstm_before': ('bilinear_lstm', 'readings=before'),
    'a3m_before': ('a3m', 'readings=before'),
    'activation_attention_before': ('activation_attention', 'readings=before'),
    'focus_discriminate_before': ('focus_discriminate', 'readings=before'),
    'bilinear_lstm_flatten': ('bilinear_lstm', 'readout=flatten'),
    'bilinear_lstm_mean': ('bilinear_lstm', 'readout=mean'),
    'bilinear_lstm_image_norm': ('bilinear_lstm', 'input_norm=sqrt_l2_image'),
    'focus_discriminate_anchor_excess': ('focus_discriminate', 'region_scoring=anchor_excess'),
}

DATA = {'synthetic_fgvc': 'synthetic_fgvc', 'cub2011': 'cub', 'cars196': 'cars',
        'fgvc_aircraft': 'aircraft', 'market1501': 'market1501'}

PUBLISHED: dict[tuple[str, str], tuple[float, str, str]] = {
    # (dataset, run): (value %, metric, where it is printed). ResNet-50 unless said otherwise.
    ('cub2011', 'bcnn'): (84.1, 'top1', 'Wu & Wang 2017, Table 2: B-CNN [D,M] / Birds'),
    ('fgvc_aircraft', 'bcnn'): (83.9, 'top1', 'Wu & Wang 2017, Table 2: B-CNN [D,M] / Aircrafts'),
    ('cars196', 'bcnn'): (91.3, 'top1', 'Wu & Wang 2017, Table 2: B-CNN [D,M] / Cars'),
    ('cub2011', 'bcnn_spp'): (86.9, 'top1', 'Wu & Wang 2017, Table 2: B-CNN + SPP [D,M] / Birds'),
    ('fgvc_aircraft', 'bcnn_spp'): (86.7, 'top1',
                                    'Wu & Wang 2017, Table 2: B-CNN + SPP [D,M] / Aircrafts'),
    ('cars196', 'bcnn_spp'): (92.5, 'top1', 'Wu & Wang 2017, Table 2: B-CNN + SPP [D,M] / Cars'),
    ('cub2011', 'bilinear_lstm'): (89.7, 'top1', 'Wu & Wang 2017, Table 2: Ours [D,M] / Birds'),
    ('fgvc_aircraft', 'bilinear_lstm'): (88.4, 'top1',
                                         'Wu & Wang 2017, Table 2: Ours [D,M] / Aircrafts'),
    ('cars196', 'bilinear_lstm'): (93.4, 'top1', 'Wu & Wang 2017, Table 2: Ours [D,M] / Cars'),
    ('market1501', 'bilinear_lstm'): (54.67, 'rank1', 'Wu & Wang 2017, Table 3: Ours [D,M] / R=1'),
    ('market1501', 'a3m'): (86.54, 'rank1', 'Han et al. 2018, Table 1: A3M / rank-1'),
    ('market1501', 'a3m_baseline1'): (73.90, 'rank1', 'Han et al. 2018, Table 1: Baseline-1 / '
                                      'rank-1'),
    ('cub2011', 'a3m'): (86.2, 'top1', 'Han et al. 2018, Table 2: A3M (attributes + box)'),
    ('cub2011', 'a3m_baseline1'): (82.3, 'top1', 'Han et al. 2018, Table 2: Baseline-1 (box)'),
    ('cub2011', 'activation_attention'): (87.9, 'top1', 'Shen & Liu, Table 2: ours'),
    ('cars196', 'activation_attention'): (94.1, 'top1', 'Shen & Liu, Table 3: ours'),
    ('fgvc_aircraft', 'activation_attention'): (92.1, 'top1', 'Shen & Liu, Table 4: ours'),
    # Table 6, row Acc_avg, column scale 1: the 3-scale model read at its first scale.
    ('cub2011', 'activation_attention_single'): (85.5, 'top1', 'Shen & Liu, Table 6: scale 1'),
    ('cars196', 'activation_attention_single'): (92.9, 'top1', 'Shen & Liu, Table 6: scale 1'),
    ('fgvc_aircraft', 'activation_attention_single'): (90.7, 'top1',
                                                       'Shen & Liu, Table 6: scale 1'),
    ('cub2011', 'focus_discriminate'): (87.6, 'top1', 'Feng et al. 2019, Table 1: Ours / Birds'),
    ('fgvc_aircraft', 'focus_discriminate'): (92.1, 'top1',
                                              'Feng et al. 2019, Table 1: Ours / Aircraft'),
    ('cars196', 'focus_discriminate'): (94.1, 'top1', 'Feng et al. 2019, Table 1: Ours / Cars'),
    ('cub2011', 'focus_discriminate_image_level'): (86.7, 'top1', 'Feng et al. 2019, Table 2: '
                                                    'image level only'),
}


def config_path(data: str, run: str) -> str:
  return os.path.join(ROOT, 'configs', f'{DATA[data]}_{RUNS[run][0]}.py')


def load_config(data: str, run: str, seed: int, runlocal: bool, epochs_scale: float,
                data_dir: str | None, dataset_config: str | None = None,
                manual_dir: str | None = None, weights: str | None = None):
  path = config_path(data, run)
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  arg = RUNS[run][1]
  if runlocal:  # every config benchmarks.methods runs takes :runlocal
    arg = ','.join(a for a in (arg, 'runlocal') if a)
  if weights:  # the embedded benchmark's pretrained backbones (benchmarks.pretrain)
    arg = ','.join(a for a in (arg, f'weights={os.path.abspath(weights)}') if a)
  c = module.get_config(arg) if arg else module.get_config()
  c.seed = seed
  if data_dir:
    c.dataset.data_dir = data_dir
  if dataset_config:
    c.dataset.config = dataset_config
  if manual_dir:
    c.dataset.manual_dir = manual_dir
  if epochs_scale != 1.0:
    c.train.num_epochs *= epochs_scale
    c.stages = tuple(ml_collections.ConfigDict({**s.to_dict(),
                                                'num_epochs': s.num_epochs * epochs_scale})
                     for s in c.stages)
  if runlocal and 'allow_random_init' in c.model:
    c.model.allow_random_init = True
  c.lock()
  return c, f'configs/{os.path.basename(path)}' + (f':{arg}' if arg else '')


def train_run(data, run, seed, workdir, runlocal, epochs_scale, data_dir, log,
              dataset_config=None, manual_dir=None, weights=None) -> dict:
  config, name = load_config(data, run, seed, runlocal, epochs_scale, data_dir, dataset_config,
                             manual_dir, weights)
  done = os.path.join(workdir, 'metrics.json')
  start = time.time()
  if not os.path.exists(done):
    trainer.train_and_evaluate(config, workdir, mesh=sharding.make_mesh(), log=log)
  wall = time.time() - start
  with open(done) as f:
    metrics = json.load(f)
  steps = metrics.get('step', 0)
  row = {'run': run, 'config': name, 'seed': seed, 'data': data,
         'top1': metrics.get('top1', metrics.get('rank1')), 'steps': steps,
         'wall_s': round(wall, 1),
         'img_s': round(steps * config.train.global_batch_size / wall, 1) if wall > 60 else None}
  for key in ('mean_per_class_accuracy', 'rank1', 'mAP'):
    if key in metrics:
      row[key] = metrics[key]
  return row


def verdict(a: list[float], b: list[float]) -> str:
  if not a or not b or len(a) != len(b):
    return 'incomplete'
  return 'holds' if all(x > y for x, y in zip(a, b)) else 'does not hold'


def _stat(values):
  if not values:
    return '-'
  values = 100 * np.asarray(values, np.float64)
  return f'{values.mean():.1f}' + (f' ± {values.std():.1f}' if len(values) > 1 else '')


def _by_run(rows: list[dict]) -> dict:
  by = {}
  for r in rows:
    by.setdefault(r['run'], {})[r['seed']] = r
  return by


def table(rows: list[dict], claims, data: str) -> str:
  """The claims table; with rows of the claims' `before` runs (`--before`), an "A before"
  column (run A with the readings fgjax used before 2026-12, on the seeds A has)."""
  by = _by_run(rows)
  before = any(c.before in by for c in claims)
  lines = ['| method | claim | A: top-1 % | ' + ('A before: top-1 % | ' if before else '')
           + 'B: top-1 % | verdict | seeds | wall s (A / B) | img/s (A / B) |',
           '|---|---|---|---|---|---|---|---|' + ('---|' if before else '')]
  for claim in claims:
    ra, rb = by.get(claim.run_a, {}), by.get(claim.run_b, {})
    seeds = sorted(set(ra) & set(rb))
    a = [ra[s]['top1'] for s in seeds]
    b = [rb[s]['top1'] for s in seeds]
    wall = ' / '.join(f'{np.mean([r["wall_s"] for r in runs.values()]):.0f}' if runs else '-'
                      for runs in (ra, rb))
    speed = ' / '.join(
        f'{np.mean([r["img_s"] for r in runs.values() if r["img_s"]]):.0f}'
        if runs and any(r['img_s'] for r in runs.values()) else '-' for runs in (ra, rb))
    pa, pb = PUBLISHED.get((data, claim.run_a)), PUBLISHED.get((data, claim.run_b))
    pub = (f' (published {pa[0]} / {pb[0]})' if pa and pb else '')
    rbefore = by.get(claim.before, {})
    cell = (f'{claim.before}: {_stat([rbefore[s]["top1"] for s in seeds if s in rbefore])} | '
            if before and claim.before else '- | ' if before else '')
    lines.append(f'| {claim.method} | {claim.text}{pub} | {claim.run_a}: {_stat(a)} | {cell}'
                 f'{claim.run_b}: {_stat(b)} | {verdict(a, b)} | {len(seeds)} | {wall} | '
                 f'{speed} |')
  return '\n'.join(lines)


def readings_table(rows: list[dict], claims) -> str:
  """`--readings`: each reading's top-1 against its method's run A (the config's default),
  the difference paired by seed."""
  by = _by_run(rows)
  lines = ['| method | reading (config argument) | top-1 % | A (default): top-1 % | '
           'reading - A, paired | seeds |', '|---|---|---|---|---|---|']
  for claim in claims:
    for run in READINGS.get(claim.method, ()):
      rr, ra = by.get(run, {}), by.get(claim.run_a, {})
      seeds = sorted(set(rr) & set(ra))
      x = [rr[s]['top1'] for s in seeds]
      a = [ra[s]['top1'] for s in seeds]
      diff = [p - q for p, q in zip(x, a)]
      lines.append(f'| {claim.method} | {run} (`:{RUNS[run][1]}`) | {_stat(x)} | {_stat(a)} | '
                   f'{_stat(diff)} | {len(seeds)} |')
  return '\n'.join(lines)


def planned_runs(claims, bcnn: bool, before: bool, readings: bool) -> list[str]:
  """The runs the claims need, each once: A and B, `bcnn` alone, the `before` runs and the
  readings."""
  return list(dict.fromkeys([r for c in claims for r in (c.run_a, c.run_b)]
                            + (['bcnn'] if bcnn else [])
                            + [c.before for c in claims if before and c.before]
                            + [r for c in claims if readings for r in READINGS.get(c.method, ())]))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--methods', default=','.join(c.method for c in CLAIMS))
  parser.add_argument('--data', default='synthetic_fgvc', choices=sorted(DATA))
  parser.add_argument('--runlocal', action='store_true')
  parser.add_argument('--epochs_scale', type=float, default=1.0)
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--dataset_config', default=None,
                      help='another builder config of the dataset (fgvc_tiny: a smoke run)')
  parser.add_argument('--manual_dir', default=None, help='real datasets: the official archives')
  parser.add_argument('--weights', default=None,
                      help='synthetic_fgvc: DIR of python -m benchmarks.pretrain --out=DIR')
  parser.add_argument('--before', action='store_true',
                      help='synthetic_fgvc: also run each attention method with :readings=before')
  parser.add_argument('--readings', action='store_true',
                      help='synthetic_fgvc: also run the readings whose default it chooses')
  args = parser.parse_args(argv)
  wanted = [m for m in args.methods.split(',') if m]
  valid = [c.method for c in CLAIMS] + ['bcnn']
  unknown = [m for m in wanted if m not in valid]
  if unknown:
    print(f'ERROR: --methods {",".join(unknown)}: valid: {", ".join(valid)}', file=sys.stderr)
    return 2
  claims = [c for c in CLAIMS if c.method in wanted]
  runs = planned_runs(claims, 'bcnn' in wanted, args.before, args.readings)
  if (args.before or args.readings) and args.data != 'synthetic_fgvc':
    print('ERROR: --before and --readings are for --data synthetic_fgvc (the real configs take '
          'the readings as config.model fields, docs/methods/)', file=sys.stderr)
    return 2
  if args.weights and args.data != 'synthetic_fgvc':
    print('ERROR: --weights is for --data synthetic_fgvc (real configs take ImageNet weights '
          'through their *_pretrained fields)', file=sys.stderr)
    return 2
  missing = [config_path(args.data, r) for r in runs if not os.path.exists(config_path(args.data,
                                                                                        r))]
  if missing:
    print(f'ERROR: --data {args.data} has no config for {", ".join(sorted(set(missing)))}; '
          'leave those methods out with --methods', file=sys.stderr)
    return 2
  try:
    seeds = [int(s) for s in args.seeds.split(',') if s]
  except ValueError:
    print(f'ERROR: --seeds must be integers separated by commas, got {args.seeds!r}',
          file=sys.stderr)
    return 2
  log = lambda m: print(m, file=sys.stderr, flush=True)
  rows = []
  for seed in seeds:
    for run in runs:
      workdir = os.path.join(args.workdir, args.data, f'{run}_s{seed}')
      row = train_run(args.data, run, seed, workdir, args.runlocal, args.epochs_scale,
                      args.data_dir, log, args.dataset_config, args.manual_dir, args.weights)
      rows.append(row)
      print(json.dumps(row), flush=True)
  text = table(rows, claims, args.data)
  if args.readings:
    text += '\n\n' + readings_table(rows, claims)
  with open(os.path.join(args.workdir, args.data, 'table.md'), 'w') as f:
    f.write(text + '\n')
  print(text)
  return 0


if __name__ == '__main__':
  jax.config.parse_flags_with_absl()
  sys.exit(main())
