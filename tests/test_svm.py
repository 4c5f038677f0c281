"""--svm: one-vs-all linear SVMs on embeddings (fgjax.evaluation.svm, fgjax.evaluate.svm_metrics).

Checks that do not rely on scikit-learn: on trivially separable features the SVMs classify the
test set exactly as a nearest-class-mean rule computed here (accuracy 1.0); the decision values
are those of the stored hyperplanes computed here; a missing scikit-learn names the install line.
"""

import json
import os
import shutil
import sys

import numpy as np
import pytest

from fgjax import evaluate
from fgjax.evaluation import svm


def _separable(rng, n_per_class, num_classes=5, dim=16, noise=0.05):
  centres = np.eye(dim)[:num_classes] * 3.0 + 1.0
  y = np.repeat(np.arange(num_classes), n_per_class)
  return centres[y] + noise * rng.standard_normal((len(y), dim)), y


def _nearest_class_mean(train_x, train_y, test_x):
  means = np.stack([train_x[train_y == c].mean(0) for c in np.unique(train_y)])
  d = ((test_x[:, None, :] - means[None]) ** 2).sum(-1)
  return np.unique(train_y)[d.argmin(1)]


def test_separable_features_are_classified_like_nearest_class_mean():
  rng = np.random.default_rng(0)
  train_x, train_y = _separable(rng, 20)
  test_x, test_y = _separable(rng, 10)
  ncm = _nearest_class_mean(train_x, train_y, test_x)
  assert np.mean(ncm == test_y) == 1.0  # the set really is trivially separable
  for loss in svm.LOSSES:
    for norm in svm.NORMALIZATIONS:
      result = svm.svm_metrics(train_x, train_y, test_x, test_y, 5, loss=loss, normalize=norm)
      assert result['svm_top1'] == 1.0 and result['svm_mean_per_class'] == 1.0, (loss, norm)
      assert result['svm_train_examples'] == 100
      assert result['svm_settings'] == {'C': 1.0, 'loss': loss, 'normalize': norm,
                                        'max_iter': 10000, 'seed': 0}


def test_decision_values_are_the_hyperplanes_and_untrained_classes_never_win():
  rng = np.random.default_rng(1)
  x, y = _separable(rng, 10, num_classes=3)
  y = np.array([0, 2, 3])[y]  # classes 1 and 4 of 5 have no training example
  model = svm.OneVsAllSVM(5, C=0.5).fit(x, y)
  assert model.coef_.shape == (3, 16) and list(model.classes_) == [0, 2, 3]
  test = rng.standard_normal((7, 16))
  unit = test / np.linalg.norm(test, axis=1, keepdims=True)
  scores = model.decision(test)
  np.testing.assert_allclose(scores[:, [0, 2, 3]], unit @ model.coef_.T + model.intercept_,
                             rtol=1e-12, atol=1e-12)
  assert np.all(np.isneginf(scores[:, [1, 4]]))
  # Two classes: sklearn keeps one hyperplane; both one-vs-rest scores are kept, opposite.
  two = svm.OneVsAllSVM(2).fit(x[y != 3], (y[y != 3] == 2).astype(int))
  s = two.decision(x[y != 3])
  np.testing.assert_allclose(s[:, 0], -s[:, 1])
  assert np.mean(s.argmax(1) == (y[y != 3] == 2)) == 1.0


def test_bad_options():
  with pytest.raises(ValueError, match='loss must be one of hinge, squared_hinge'):
    svm.OneVsAllSVM(3, loss='log')
  with pytest.raises(ValueError, match='normalisation must be one of l2, none'):
    svm.OneVsAllSVM(3, normalize='l1')
  with pytest.raises(ValueError, match='C must be > 0'):
    svm.OneVsAllSVM(3, C=0.0)


def test_missing_scikit_learn_names_the_extra(monkeypatch, trained_workdir, tmp_path,
                                              one_device_mesh):
  for name in [m for m in sys.modules if m == 'sklearn' or m.startswith('sklearn.')]:
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setitem(sys.modules, 'sklearn', None)  # import sklearn -> ImportError
  with pytest.raises(ImportError, match=r"pip install 'fgjax\[svm\]'"):
    svm.linear_svc()
  wd = str(tmp_path / 'run')
  shutil.copytree(trained_workdir('bcnn'), wd)
  os.remove(os.path.join(wd, 'metrics.json'))
  with pytest.raises(ImportError, match=r"pip install 'fgjax\[svm\]'"):
    evaluate.evaluate_latest(None, wd, svm={}, mesh=one_device_mesh)
  assert not os.path.exists(os.path.join(wd, 'metrics.json'))  # refused before evaluating


def test_svm_on_a_tiny_run(trained_workdir, tmp_path, one_device_mesh):
  wd = str(tmp_path / 'run')
  shutil.copytree(trained_workdir('bcnn'), wd)
  result = evaluate.evaluate_latest(None, wd, svm={'C': 10.0, 'loss': 'squared_hinge'},
                                    mesh=one_device_mesh)
  written = json.load(open(os.path.join(wd, 'metrics.json')))
  assert written == result
  assert 0 <= result['svm_top1'] <= 1 and 0 <= result['svm_mean_per_class'] <= 1
  assert result['svm_train_examples'] == 96  # the tiny dataset's train split
  assert result['svm_settings'] == {'embedding': 'features', 'train_splits': ['train'],
                                    'C': 10.0, 'loss': 'squared_hinge', 'normalize': 'l2',
                                    'max_iter': 10000, 'seed': 0}
  # Several training splits are concatenated (the paper combines training and validation).
  again = evaluate.evaluate_latest(None, wd, svm={'train_splits': ['test', 'train']},
                                   mesh=one_device_mesh)
  assert again['svm_train_examples'] == 144
  with pytest.raises(ValueError, match="split 'nope'.*valid: "):
    evaluate.evaluate_latest(None, wd, svm={'train_splits': ['nope']}, mesh=one_device_mesh)
  with pytest.raises(ValueError, match="--svm_embedding='bad'.*valid: features, logits"):
    evaluate.evaluate_latest(None, wd, svm={'embedding': 'bad'}, mesh=one_device_mesh)
