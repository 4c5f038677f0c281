"""Evaluation plots as PNG files (written by `python -m fgjax.evaluate`, see fgjax/evaluate.py).

Every function draws on its own `matplotlib.figure.Figure` with the Agg canvas (no pyplot, no
global state, no display needed), saves one PNG of a fixed pixel size (`SIZES`, width x height)
and returns its path; the `*_figure` functions return the figure itself. The size does not depend
on the labels: matplotlib's constrained layout shrinks the axes until every label (rotated class
names, axis labels, colour-bar labels, titles) fits inside the figure, instead of a tight bounding
box that would change the PNG's size. Class names longer than `MAX_NAME` characters are shortened
with an ellipsis and long titles are wrapped.

- `per_class_accuracy`: accuracy of every class, sorted from best to worst (bar chart);
- `confusion_matrix`: rows = true class, columns = predicted class, each row divided by the
  number of examples of its true class (a row sums to 1 when every class is shown); with more than
  `max_classes` classes only the `max_classes` most-confused classes are shown (ranked by their
  off-diagonal count, as true plus as predicted class), as the title says;
- `cmc_curve`: re-id CMC, matching rate at rank 1..len(cmc);
- `retrieval_examples`: a grid, one row per query: the query, then its nearest neighbours, each
  framed green (same class as the query) or red (different class).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 100
# name -> (width, height) inches at DPI; the PNG is exactly (width * DPI, height * DPI) pixels.
SIZES = {'per_class_accuracy': (10.0, 5.0), 'confusion_matrix': (9.0, 8.0),
         'cmc': (6.0, 4.5)}
RETRIEVAL_CELL = 1.2  # inches per image cell of the retrieval grid
SAME, DIFFERENT, QUERY = '#1a9641', '#d7191c', '#2b83ba'
MAX_NAME = 40  # characters of a class name shown on an axis


def _figure(size) -> Figure:
  """A figure with the Agg canvas and constrained layout (labels kept inside, size fixed)."""
  fig = Figure(figsize=size, dpi=DPI, layout='constrained')
  fig.get_layout_engine().set(w_pad=4 / 72, h_pad=4 / 72)  # 4 points around the edges
  FigureCanvasAgg(fig)
  return fig


def _wrap(text: str, width_inches: float, fontsize: float) -> str:
  """`text` wrapped to lines that fit in `width_inches` at `fontsize` points (an average glyph is
  taken as 0.6 em wide)."""
  chars = max(8, int(width_inches * 72 / (0.6 * fontsize)))
  return '\n'.join(textwrap.fill(line, chars) for line in text.split('\n'))


def _save(fig: Figure, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=DPI, format='png', facecolor='white')
  return path


def _names(class_names: Sequence[str] | None, classes) -> list[str]:
  if class_names is None:
    return [str(int(c)) for c in classes]
  short = lambda n: n if len(n) <= MAX_NAME else n[:MAX_NAME - 1] + '\u2026'
  return [short(str(class_names[int(c)])) for c in classes]


def class_accuracies(predictions: np.ndarray, labels: np.ndarray,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """(accuracy per class (nan where the class has no example), number of examples per class)."""
  counts = np.bincount(labels, minlength=num_classes)
  correct = np.bincount(labels[predictions == labels], minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    acc = np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)
  return acc, counts


def confusion_counts(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(num_classes, num_classes) counts: [true, predicted]."""
  m = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(m, (labels, predictions), 1)
  return m


def most_confused(counts: np.ndarray, k: int) -> np.ndarray:
  """The `k` classes with the most off-diagonal entries (as true + as predicted class), ties by
  class id; returned in class-id order."""
  off = counts - np.diag(np.diag(counts))
  score = off.sum(0) + off.sum(1)
  order = np.argsort(-score, kind='stable')[:k]
  return np.sort(order)


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int, path: str,
                       class_names: Sequence[str] | None = None, title: str = '') -> str:
  """Bar chart of every class's accuracy, best first (the class names under the bars when there
  are at most 50 classes), written to `path`."""
  return _save(per_class_accuracy_figure(predictions, labels, num_classes, class_names, title),
               path)


def per_class_accuracy_figure(predictions: np.ndarray, labels: np.ndarray, num_classes: int,
                              class_names: Sequence[str] | None = None, title: str = '') -> Figure:
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  acc, counts = class_accuracies(predictions, labels, num_classes)
  present = np.flatnonzero(counts > 0)
  order = present[np.argsort(-acc[present], kind='stable')]
  fig = _figure(SIZES['per_class_accuracy'])
  ax = fig.add_subplot()
  x = np.arange(len(order))
  ax.bar(x, acc[order], width=0.85 if len(order) <= 100 else 1.0, color='#3182bd')
  mean = float(np.mean(acc[present])) if len(present) else float('nan')
  ax.axhline(mean, color='k', linestyle='--', linewidth=1,
             label=f'mean per-class {mean:.3f}')
  ax.set_ylim(0, 1.02)
  ax.set_xlim(-0.6, max(len(order), 1) - 0.4)
  ax.set_ylabel('accuracy')
  ax.set_xlabel(f'class (sorted by accuracy; {len(present)} classes with test examples)')
  if len(order) <= 50:
    ax.set_xticks(x, _names(class_names, order), rotation=90,
                  fontsize=7 if len(order) <= 20 else 5)
  else:
    ax.set_xticks([])
  ax.legend(loc='lower left', fontsize=8)
  ax.set_title(_wrap(title or 'per-class accuracy', SIZES['per_class_accuracy'][0] - 0.5, 12))
  return fig


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int, path: str,
                     class_names: Sequence[str] | None = None, max_classes: int = 50,
                     title: str = '') -> str:
  """The row-normalised confusion matrix (see the module docstring), written to `path`."""
  return _save(confusion_matrix_figure(predictions, labels, num_classes, class_names,
                                       max_classes, title), path)


def confusion_matrix_figure(predictions: np.ndarray, labels: np.ndarray, num_classes: int,
                            class_names: Sequence[str] | None = None, max_classes: int = 50,
                            title: str = '') -> Figure:
  counts = confusion_counts(np.asarray(predictions), np.asarray(labels), num_classes)
  if num_classes <= max_classes:
    classes = np.arange(num_classes)
    what = f'all {num_classes} classes'
  else:
    classes = most_confused(counts, max_classes)
    what = f'the {max_classes} most-confused of {num_classes} classes'
  sub = counts[np.ix_(classes, classes)].astype(np.float64)
  rows = counts[classes].sum(1, keepdims=True)  # all predictions of the class, shown or not
  norm = sub / np.maximum(rows, 1)
  fig = _figure(SIZES['confusion_matrix'])
  ax = fig.add_subplot()
  im = ax.imshow(norm, cmap='Blues', vmin=0, vmax=1, interpolation='nearest')
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label='fraction of the true class')
  names = _names(class_names, classes)
  fs = 7 if len(classes) <= 20 else 4
  ax.set_xticks(np.arange(len(classes)), names, rotation=90, fontsize=fs)
  ax.set_yticks(np.arange(len(classes)), names, fontsize=fs)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(_wrap((title + ': ' if title else '') + f'confusion matrix, {what}',
                     SIZES['confusion_matrix'][0] - 2.0, 10), fontsize=10)
  return fig


def cmc_curve(cmc: np.ndarray, path: str, title: str = '') -> str:
  """The CMC curve (matching rate at rank 1..len(cmc)), written to `path`."""
  return _save(cmc_figure(cmc, title), path)


def cmc_figure(cmc: np.ndarray, title: str = '') -> Figure:
  cmc = np.asarray(cmc, np.float64)
  ranks = np.arange(1, len(cmc) + 1)
  fig = _figure(SIZES['cmc'])
  ax = fig.add_subplot()
  ax.plot(ranks, cmc, marker='o' if len(cmc) <= 20 else None, markersize=3, color='#3182bd')
  for r in (1, 5, 10):
    if r <= len(cmc):
      ax.annotate(f'R{r} {cmc[r - 1]:.3f}', (r, cmc[r - 1]), textcoords='offset points',
                  xytext=(4, -12), fontsize=7)
  ax.set_xlim(0.5, len(cmc) + 0.5)
  ax.set_ylim(0, 1.02)
  ax.set_xlabel('rank')
  ax.set_ylabel('matching rate')
  ax.grid(alpha=0.3)
  ax.set_title(_wrap(title or f'CMC (rank 1-{len(cmc)})', SIZES['cmc'][0] - 0.5, 10),
               fontsize=10)
  return fig


def retrieval_grid_size(num_queries: int, k: int) -> tuple[float, float]:
  """(width, height) inches of `retrieval_examples`' figure: a cell per image, the title above
  and the legend below."""
  return (RETRIEVAL_CELL * (k + 1), RETRIEVAL_CELL * num_queries + 0.7)


def retrieval_examples(query_images: Sequence[np.ndarray], neighbour_images, same_class,
                       path: str, title: str = '') -> str:
  """`neighbour_images[i][j]`: the j-th neighbour of query i; `same_class[i][j]`: bool."""
  return _save(retrieval_figure(query_images, neighbour_images, same_class, title), path)


def retrieval_figure(query_images: Sequence[np.ndarray], neighbour_images, same_class,
                     title: str = '') -> Figure:
  n = len(query_images)
  k = max((len(r) for r in neighbour_images), default=0)
  size = retrieval_grid_size(n, k)
  fig = _figure(size)
  fig.get_layout_engine().set(wspace=0.02, hspace=0.02)
  axes = fig.subplots(n, k + 1, squeeze=False)
  for i in range(n):
    cells = [(query_images[i], QUERY)] + [
        (img, SAME if same else DIFFERENT)
        for img, same in zip(neighbour_images[i], same_class[i])]
    for j, ax in enumerate(axes[i]):
      ax.set_xticks([])
      ax.set_yticks([])
      if j >= len(cells):
        ax.set_axis_off()
        continue
      img, colour = cells[j]
      ax.imshow(np.asarray(img), interpolation='nearest', aspect='auto')
      for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)
  handles = [Patch(color=QUERY, label='query'), Patch(color=SAME, label='same class'),
             Patch(color=DIFFERENT, label='different class')]
  fig.legend(handles=handles, loc='outside lower center', ncol=3 if k >= 2 else 1, fontsize=7,
             frameon=False)
  fig.suptitle(_wrap(title or f'retrieval: queries and their top-{k}', size[0] - 0.1, 9),
               fontsize=9)
  return fig
