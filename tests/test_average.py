"""fgjax.average: mean/std over runs' metrics.json, refusing partial or mismatched sets."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fgjax import average

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, name, metrics):
  d = tmp_path / name
  d.mkdir()
  (d / 'metrics.json').write_text(json.dumps(metrics))
  return str(d)


def test_average_over_splits_by_cli(tmp_path):
  values = [0.2, 0.5, 0.35]
  dirs = [_run(tmp_path, f's{k}', {'split': 'q->g', 'cmc_rank1': v, 'map': v / 2, 'step': 10})
          for k, v in enumerate(values)]
  out = subprocess.run([sys.executable, '-m', 'fgjax.average', *dirs], cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout
  result = json.loads(out)
  assert result['mean']['cmc_rank1'] == pytest.approx(np.mean(values))
  assert result['std']['map'] == pytest.approx(np.std(np.array(values) / 2))
  assert 'step' not in result['mean'] and result['runs'] == dirs


def test_mismatched_or_missing_runs_are_refused(tmp_path):
  a = _run(tmp_path, 'a', {'top1': 0.5})
  b = _run(tmp_path, 'b', {'top1': 0.4, 'map': 0.1})
  with pytest.raises(ValueError, match='map'):
    average.average([average.read_metrics(a), average.read_metrics(b)], [a, b])
  proc = subprocess.run([sys.executable, '-m', 'fgjax.average', a, str(tmp_path / 'none')],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and 'metrics.json does not exist' in proc.stderr
