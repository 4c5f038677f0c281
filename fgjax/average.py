"""Average the final metrics of several runs (e.g. VIPeR's 10 random splits, or seeds).

python -m fgjax.average DIR [DIR ...] [--out FILE]

Reads DIR/metrics.json of every run (written at the end of training or by fgjax.evaluate) and
prints one JSON object: `runs` (the directories), `mean` and `std` (population) of every numeric
metric, `per_run` (each run's metrics). All runs must report the same numeric metrics; a missing
file or metric is an error naming it, so nothing is averaged over a partial set.

VIPeR protocol (Wu & Wang 2017, Table 3): train one model per split with
`--config=configs/viper_bilinear_lstm.py:split=K` (K = 0..9, one workdir each), then average.
"""

from __future__ import annotations

import json
import os

from absl import app
import numpy as np

from fgjax import cli


def read_metrics(workdir: str) -> dict:
  path = os.path.join(workdir, 'metrics.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} does not exist: train the run to its end (or run '
                            'python -m fgjax.evaluate on it) first')
  with open(path) as f:
    return json.load(f)


def average(results: list[dict], names: list[str]) -> dict:
  """Mean and population std of every numeric metric over runs that all report it."""
  if not results:
    raise ValueError('no runs to average')
  numeric = [{k: v for k, v in r.items() if isinstance(v, (int, float)) and k != 'step'}
             for r in results]
  keys = set(numeric[0])
  for name, r in zip(names, numeric):
    if set(r) != keys:
      raise ValueError(f'{name} reports metrics {sorted(set(r) ^ keys)} that '
                       f'{names[0]} does not (or the reverse); runs must match')
  table = {k: np.array([r[k] for r in numeric], np.float64) for k in sorted(keys)}
  return {'runs': names, 'mean': {k: float(v.mean()) for k, v in table.items()},
          'std': {k: float(v.std()) for k, v in table.items()}, 'per_run': results}


def main(argv):
  dirs = argv[1:]
  if not dirs:
    raise app.UsageError('give the workdirs of the runs to average: python -m fgjax.average DIR '
                         '[DIR ...] [--out FILE]')
  result = average([read_metrics(d) for d in dirs], dirs)
  if cli.OUT.value:
    with open(cli.OUT.value, 'w') as f:
      json.dump(result, f, indent=2)
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  # A missing or mismatched run: exit 2 with one ERROR line (fgjax.cli).
  cli.run(main, shared=('out',), user_errors=(FileNotFoundError, ValueError))
