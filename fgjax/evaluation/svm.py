"""One-vs-all linear SVMs on a run's embeddings (`python -m fgjax.evaluate --svm`).

Wu & Wang 2017, "Where to Focus", Sec. 4.2: "Once the fine-tuning is done, training and
validation sets are combined to train one-vs-all linear SVMs on the extracted features." Readings
(all options):
- features: the method output `config.eval.embedding` (default 'features': for bcnn the signed-
  sqrt + l2-normalised bilinear vector the classifier reads, for bilinear_lstm the flattened
  attended LSTM features), extracted in evaluation mode (centre crop, `eval.flip_tta` applies);
- training set: `config.dataset.train_split`, or several splits concatenated (`train_splits`,
  e.g. 'train,validation' for "training and validation sets are combined");
- normalisation: not stated for the SVM; default 'l2' (each vector scaled to unit length, which
  leaves B-CNN's already l2-normalised features unchanged and makes C comparable across
  embeddings), or 'none';
- C: not stated; default 1.0 (LIBLINEAR's default); loss: the standard (L1) hinge loss of a
  linear SVM by default, or LIBLINEAR's default squared hinge; a bias term (LIBLINEAR -B 1);
- one-vs-all: one binary SVM per class (class vs the rest); a test vector is given the class
  with the highest decision value.
scikit-learn's LinearSVC (LIBLINEAR) solves it; scikit-learn is an optional extra
(pip install 'fgjax[svm]').
"""

from __future__ import annotations

import warnings

import numpy as np

from fgjax import metrics

INSTALL_HINT = "pip install 'fgjax[svm]'"
NORMALIZATIONS = ('l2', 'none')
LOSSES = ('hinge', 'squared_hinge')


def linear_svc():
  """sklearn.svm.LinearSVC, or an ImportError that says how to install it."""
  try:
    # scikit-learn is an optional extra (fgjax[svm]): imported only when --svm is used.
    from sklearn.exceptions import ConvergenceWarning  # pylint: disable=g-import-not-at-top
    from sklearn.svm import LinearSVC  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('--svm trains linear SVMs with scikit-learn, which is not installed; '
                      f'install it with: {INSTALL_HINT}') from e
  return LinearSVC, ConvergenceWarning


def normalise(x: np.ndarray, how: str) -> np.ndarray:
  if how not in NORMALIZATIONS:
    raise ValueError(f'svm normalisation must be one of {", ".join(NORMALIZATIONS)}, got {how!r}')
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  if how == 'l2':
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  return x


class OneVsAllSVM:
  """One binary linear SVM per class; `decision(x)` -> (N, num_classes) scores."""

  def __init__(self, num_classes: int, C: float = 1.0, loss: str = 'hinge',
               normalize: str = 'l2', max_iter: int = 10000, seed: int = 0):
    if loss not in LOSSES:
      raise ValueError(f'svm loss must be one of {", ".join(LOSSES)}, got {loss!r}')
    if not C > 0:
      raise ValueError(f'svm C must be > 0, got {C}')
    normalise(np.zeros((1, 1)), normalize)  # validates the name
    self.num_classes, self.C, self.loss, self.normalize = num_classes, float(C), loss, normalize
    self.max_iter, self.seed = max_iter, seed
    self.converged = None

  def fit(self, x: np.ndarray, y: np.ndarray) -> OneVsAllSVM:
    LinearSVC, ConvergenceWarning = linear_svc()  # pylint: disable=invalid-name
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
      raise ValueError('svm: the training split has fewer than 2 classes')
    clf = LinearSVC(C=self.C, loss=self.loss, dual=True if self.loss == 'hinge' else 'auto',
                    multi_class='ovr', fit_intercept=True, max_iter=self.max_iter,
                    random_state=self.seed)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always', ConvergenceWarning)
      clf.fit(normalise(x, self.normalize), y)
    self.converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    self.classes_ = clf.classes_.astype(np.int64)
    coef, intercept = clf.coef_, clf.intercept_
    if len(self.classes_) == 2:  # sklearn keeps one hyperplane for 2 classes: +w for classes_[1]
      coef, intercept = np.concatenate([-coef, coef]), np.concatenate([-intercept, intercept])
    self.coef_, self.intercept_ = coef, intercept
    return self

  def decision(self, x: np.ndarray) -> np.ndarray:
    s = normalise(x, self.normalize) @ self.coef_.T + self.intercept_
    out = np.full((len(s), self.num_classes), -np.inf)  # classes never trained: never predicted
    out[:, self.classes_] = s
    return out


def svm_metrics(train_x, train_y, test_x, test_y, num_classes: int, settings=None,
                **options) -> dict:
  """{'svm_top1', 'svm_mean_per_class', 'svm_train_examples', 'svm_converged', 'svm_settings'}
  (`settings`: more entries for 'svm_settings', which records every option used)."""
  svm = OneVsAllSVM(num_classes, **options).fit(train_x, train_y)
  scores = svm.decision(test_x)
  test_y = np.asarray(test_y)
  return {'svm_top1': metrics.top1(scores, test_y),
          'svm_mean_per_class': metrics.mean_per_class_accuracy(scores, test_y),
          'svm_train_examples': int(len(train_y)), 'svm_converged': bool(svm.converged),
          'svm_settings': {**(settings or {}), 'C': svm.C, 'loss': svm.loss,
                           'normalize': svm.normalize, 'max_iter': svm.max_iter,
                           'seed': svm.seed}}
