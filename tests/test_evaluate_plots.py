"""fgjax.evaluate on a finished tiny run: metrics file, plots per protocol (PNG files of the
stated pixel size that are not blank), the run's own config without --config, process 0 only;
the plotted quantities against NumPy loops written here."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from fgjax import evaluate, metrics, run
from fgjax.evaluation import protocols
from fgjax.evaluation import plots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy(trained_workdir, tmp_path, method='bcnn'):
  dst = str(tmp_path / 'run')
  shutil.copytree(trained_workdir(method), dst)
  return dst


def _png(path, size_inches):
  """The PNG as an (H, W, 3) array, checked: pixel size = inches * DPI, not blank."""
  assert os.path.isfile(path), path
  img = np.asarray(Image.open(path).convert('RGB'), np.float64)
  w, h = (round(s * plots.DPI) for s in size_inches)
  assert img.shape == (h, w, 3), (path, img.shape, (h, w))
  assert img.std() > 10, f'{path} looks blank (pixel std {img.std():.2f})'
  return img


def _config_with(workdir, **eval_fields):
  config = run.load_config(workdir)
  with config.unlocked():
    config.eval.update(eval_fields)
  return config


def test_classification_plots_from_the_runs_own_config(trained_workdir, tmp_path,
                                                       one_device_mesh):
  wd = _copy(trained_workdir, tmp_path)
  trained = json.load(open(os.path.join(wd, 'metrics.json')))
  os.remove(os.path.join(wd, 'metrics.json'))
  result = evaluate.evaluate_latest(None, wd, plots_on=True, mesh=one_device_mesh)
  written = json.load(open(os.path.join(wd, 'metrics.json')))
  assert result['plots'] == os.path.join(wd, 'plots', 'test') and 'plots' not in written
  assert written['step'] == trained['step'] and written['split'] == 'test'
  for k in ('top1', 'mean_per_class_accuracy', 'num_examples'):
    assert written[k] == pytest.approx(trained[k], abs=1e-9), k
  _png(os.path.join(wd, 'plots', 'test', 'per_class_accuracy.png'),
       plots.SIZES['per_class_accuracy'])
  _png(os.path.join(wd, 'plots', 'test', 'confusion_matrix.png'), plots.SIZES['confusion_matrix'])
  assert sorted(os.listdir(os.path.join(wd, 'plots', 'test'))) == [
      'confusion_matrix.png', 'per_class_accuracy.png']


def test_no_plots_and_not_on_other_processes(trained_workdir, tmp_path, one_device_mesh,
                                             monkeypatch):
  wd = _copy(trained_workdir, tmp_path)
  result = evaluate.evaluate_latest(None, wd, 'train', plots_on=False, mesh=one_device_mesh)
  assert result['split'] == 'train' and 'plots' not in result
  assert os.path.isfile(os.path.join(wd, 'metrics_train.json'))
  assert not os.path.exists(os.path.join(wd, 'plots'))
  monkeypatch.setattr(evaluate, 'is_main_process', lambda: False)
  os.remove(os.path.join(wd, 'metrics_train.json'))
  evaluate.evaluate_latest(None, wd, 'train', plots_on=True, mesh=one_device_mesh)
  assert not os.path.exists(os.path.join(wd, 'plots'))
  assert not os.path.exists(os.path.join(wd, 'metrics_train.json'))


def test_reid_cmc_plot(trained_workdir, tmp_path, one_device_mesh):
  wd = _copy(trained_workdir, tmp_path)
  config = _config_with(wd, protocol='reid')
  result = evaluate.evaluate_latest(config, wd, plots_on=True, mesh=one_device_mesh)
  assert result['split'] == 'query->gallery'
  _png(os.path.join(wd, 'plots', 'query_to_gallery', 'cmc.png'), plots.SIZES['cmc'])
  # The plotted curve is the one the metrics come from: rank 1..min(50, gallery size = 32).
  exp, state, _ = run.restore(config, wd, one_device_mesh)
  _, gathered = protocols.evaluate_with_outputs(exp, state)
  cmc = evaluate.reid_cmc(exp, gathered['query'], gathered['gallery'])
  assert len(cmc) == 32 and np.all(np.diff(cmc) >= 0) and cmc[-1] == 1.0
  for k in (1, 5, 10):
    assert cmc[k - 1] == result[f'cmc_rank{k}']


def test_retrieval_examples_plot(trained_workdir, tmp_path, one_device_mesh):
  wd = _copy(trained_workdir, tmp_path)
  config = _config_with(wd, protocol='retrieval')
  result = evaluate.evaluate_latest(config, wd, 'retrieval_test', plots_on=True,
                                    retrieval_queries=4, mesh=one_device_mesh)
  assert os.path.isfile(os.path.join(wd, 'metrics_retrieval_test.json'))
  img = _png(os.path.join(wd, 'plots', 'retrieval_test', 'retrieval_examples.png'),
             plots.retrieval_grid_size(4, evaluate.RETRIEVAL_TOP_K))
  # Frames: green for same-class neighbours, red for different-class ones, as many as there are.
  exp, state, _ = run.restore(config, wd, one_device_mesh)
  _, gathered = protocols.evaluate_with_outputs(exp, state, 'retrieval_test')
  emb, labels = gathered['eval']['features'], gathered['eval']['label']
  queries, nbrs = evaluate.retrieval_neighbours(emb, 4, evaluate.RETRIEVAL_TOP_K)
  assert nbrs.shape == (4, 8)
  same = (labels[nbrs] == labels[queries, None]).sum()
  for colour, count in ((plots.SAME, same), (plots.DIFFERENT, 32 - same)):
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], np.float64)
    found = np.all(np.abs(img - rgb) < 2, -1).sum()
    assert (found > 0) == (count > 0), (colour, count, found)
  # The neighbour ranking is metrics.recall_at_k's: over all queries, R@1 is reproduced.
  all_q, all_nbrs = evaluate.retrieval_neighbours(emb, len(emb), 1)
  assert len(all_q) == len(emb)
  assert np.mean(labels[all_nbrs[:, 0]] == labels) == result['recall_at_1']


def test_plotted_quantities_against_loops(tmp_path):
  rng = np.random.default_rng(0)
  n, c = 400, 60
  labels = rng.integers(0, c - 1, n)  # class 59 has no example
  pred = np.where(rng.random(n) < 0.6, labels, rng.integers(0, c, n))
  acc, counts = plots.class_accuracies(pred, labels, c)
  conf = plots.confusion_counts(pred, labels, c)
  for k in range(c):
    idx = [i for i in range(n) if labels[i] == k]
    assert counts[k] == len(idx)
    if idx:
      assert acc[k] == sum(pred[i] == k for i in idx) / len(idx)
    else:
      assert np.isnan(acc[k])
    for j in range(c):
      assert conf[k, j] == sum(1 for i in range(n) if labels[i] == k and pred[i] == j)
  off = [sum(1 for i in range(n) if pred[i] != labels[i] and k in (pred[i], labels[i]))
         for k in range(c)]
  chosen = plots.most_confused(conf, 50)
  assert len(chosen) == 50 and min(off[k] for k in chosen) >= max(
      off[k] for k in set(range(c)) - set(chosen))
  _png(plots.confusion_matrix(pred, labels, c, str(tmp_path / 'cm.png')),
       plots.SIZES['confusion_matrix'])
  _png(plots.per_class_accuracy(pred, labels, c, str(tmp_path / 'pc.png')),
       plots.SIZES['per_class_accuracy'])
  assert np.mean(acc[counts > 0]) == pytest.approx(
      metrics.mean_per_class_accuracy(np.eye(c)[pred], labels))


@pytest.mark.slow
def test_cli_without_config(trained_workdir, tmp_path):
  wd = _copy(trained_workdir, tmp_path)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, '-m', 'fgjax.evaluate', f'--workdir={wd}', '--svm'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  assert f'wrote plots to {os.path.join(wd, "plots", "test")}' in lines
  printed = json.loads(lines[-1])
  assert printed == json.load(open(os.path.join(wd, 'metrics.json')))
  assert 0 <= printed['svm_top1'] <= 1 and printed['svm_train_examples'] == 96
  assert len(os.listdir(os.path.join(wd, 'plots', 'test'))) == 2
  out = subprocess.run([sys.executable, '-m', 'fgjax.evaluate', f'--workdir={tmp_path}/none'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 2 and 'config.json does not exist' in out.stderr
