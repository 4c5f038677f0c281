"""Evaluate the latest checkpoint of a run, write its metrics and plots.

python -m fgjax.evaluate --workdir=DIR [--config=configs/X.py] [--split=test] [--noplots]
    [--svm [--svm_c=1.0] [--svm_loss=hinge] [--svm_normalize=l2] [--svm_train_splits=train]]

Without --config the run's own config (WORKDIR/config.json, written by fgjax.train) is used.
Writes WORKDIR/metrics.json for the config's eval split (the same file training ends with), or
WORKDIR/metrics_<split>.json for another split, and prints the metrics as JSON (the last line of
stdout). Plots (process 0 only; see fgjax/evaluation/plots.py) go to WORKDIR/plots/<split>/
('query->gallery' is written query_to_gallery):
- 'classification' protocol: per_class_accuracy.png, confusion_matrix.png;
- 'reid': cmc.png (rank 1..50, or the gallery size if smaller);
- 'retrieval': retrieval_examples.png (--retrieval_queries queries, each with its top-8).
--svm trains one-vs-all linear SVMs on the embeddings of the training split(s) and reports
svm_top1 / svm_mean_per_class on the evaluated split (fgjax/evaluation/svm.py; needs scikit-learn:
pip install 'fgjax[svm]').

Exit codes: 0 done; 2 a config, workdir, split or option problem: one line `ERROR: ...` says what
to do (the traceback too with --verbosity=1 or FGJAX_TRACEBACK=1).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
import jax
import numpy as np

from fgjax import cli, metrics, run
from fgjax.evaluation import protocols
from fgjax.evaluation import plots
from fgjax.evaluation import svm as svm_lib

RETRIEVAL_TOP_K = 8

_PLOTS = flags.DEFINE_boolean('plots', True, 'Write plots into WORKDIR/plots/<split>/ '
                             '(--noplots: no).')
_RETRIEVAL_QUERIES = flags.DEFINE_integer('retrieval_queries', 6,
                                          'Queries shown in retrieval_examples.png.')
_SVM = flags.DEFINE_boolean('svm', False, 'Also train one-vs-all linear SVMs on the training '
                            'split\'s embeddings and report svm_top1 (needs pip install '
                            '\'fgjax[svm]\').')
_SVM_C = flags.DEFINE_float('svm_c', 1.0, 'SVM regularisation C (LIBLINEAR; paper: not stated).')
_SVM_LOSS = flags.DEFINE_enum('svm_loss', 'hinge', list(svm_lib.LOSSES), 'SVM loss.')
_SVM_NORMALIZE = flags.DEFINE_enum('svm_normalize', 'l2', list(svm_lib.NORMALIZATIONS),
                                   'Feature normalisation before the SVM.')
_SVM_TRAIN_SPLITS = flags.DEFINE_list('svm_train_splits', None, 'Splits whose embeddings train '
                                      'the SVMs, concatenated (default: '
                                      'config.dataset.train_split).')
_SVM_EMBEDDING = flags.DEFINE_string('svm_embedding', None, 'Method output fed to the SVMs '
                                     '(default: config.eval.embedding).')


def is_main_process() -> bool:
  """Process 0 writes the metrics file and the plots."""
  return jax.process_index() == 0


def plot_dir(workdir: str, split: str) -> str:
  return os.path.join(workdir, 'plots', split.replace('->', '_to_'))


def write_plots(exp, result: dict, gathered: dict, out_dir: str,
                retrieval_queries: int = 6) -> list[str]:
  """The protocol's plots (see the module docstring) into `out_dir`; returns the paths."""
  cfg = exp.config.eval
  name = f'{exp.method.name} on {exp.meta.name} {result["split"]}'
  if cfg.protocol == 'classification':
    out = gathered['eval']
    pred = np.argmax(out['logits'], -1)
    names = exp.class_names
    return [plots.per_class_accuracy(pred, out['label'], exp.meta.num_classes,
                                     os.path.join(out_dir, 'per_class_accuracy.png'), names,
                                     title=f'per-class accuracy, {name}'),
            plots.confusion_matrix(pred, out['label'], exp.meta.num_classes,
                                   os.path.join(out_dir, 'confusion_matrix.png'), names,
                                   title=name)]
  if cfg.protocol == 'reid':
    return [plots.cmc_curve(reid_cmc(exp, gathered['query'], gathered['gallery']),
                            os.path.join(out_dir, 'cmc.png'),
                            title=f'CMC ({cfg.reid_protocol}), {name}, mAP {result["map"]:.3f}')]
  out = gathered['eval']
  queries, neighbours = retrieval_neighbours(out[cfg.embedding], retrieval_queries,
                                             RETRIEVAL_TOP_K)
  source, labels, index = exp.source(result['split']), out['label'], out['index']
  image = lambda i: np.asarray(source[int(index[i])]['image'])
  return [plots.retrieval_examples(
      [image(q) for q in queries], [[image(j) for j in row] for row in neighbours],
      [labels[row] == labels[q] for q, row in zip(queries, neighbours)],
      os.path.join(out_dir, 'retrieval_examples.png'),
      title=f'retrieval ({cfg.embedding}, cosine), {name}: query + top-{RETRIEVAL_TOP_K}')]


def reid_cmc(exp, q: dict, g: dict, max_rank: int = 50) -> np.ndarray:
  """The CMC curve (cmc[r] = rank r+1) with the distances and protocol of metrics.reid_metrics."""
  cfg = exp.config.eval
  emb = cfg.embedding
  dist = metrics.distance_matrix(q[emb], g[emb], cfg.distance, True)
  if cfg.rerank:
    dist = metrics.re_ranking(dist, metrics.distance_matrix(q[emb], q[emb], cfg.distance, True),
                              metrics.distance_matrix(g[emb], g[emb], cfg.distance, True))
  args = (dist, q['identity'], g['identity'], q['camera'], g['camera'], max_rank)
  if cfg.reid_protocol == 'cuhk03':
    return metrics.reid_cmc_map_cuhk03(*args, seed=exp.config.seed)[0]
  return metrics.reid_cmc_map(*args)[0]


def retrieval_neighbours(embeddings: np.ndarray, num_queries: int,
                         k: int) -> tuple[np.ndarray, np.ndarray]:
  """(query positions evenly spread over the split, (Q, k) nearest others by cosine similarity,
  ties by position: the ranking of metrics.recall_at_k)."""
  n = len(embeddings)
  queries = np.unique(np.linspace(0, n - 1, min(num_queries, n)).round().astype(np.int64))
  f = np.asarray(embeddings, np.float64)
  f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  sim = f[queries] @ f.T
  sim[np.arange(len(queries)), queries] = -np.inf
  return queries, np.argsort(-sim, axis=1, kind='stable')[:, :min(k, n - 1)]


def check_svm(exp, train_splits=None, embedding=None, **options) -> dict:
  """Validates the `--svm` options before anything is computed; returns them completed."""
  if exp.config.eval.protocol != 'classification':
    raise ValueError("--svm scores classes of the evaluated split and needs "
                     "config.eval.protocol='classification', got "
                     f'{exp.config.eval.protocol!r}')
  svm_lib.linear_svc()  # fails first, with the install line, if scikit-learn is missing
  svm_lib.OneVsAllSVM(exp.meta.num_classes, **options)  # option values
  embedding = embedding or exp.config.eval.embedding
  protocols.check_embedding(exp, embedding, '--svm_embedding')
  train_splits = list(train_splits or [exp.config.dataset.train_split])
  for s in train_splits:
    exp.meta.check_split(s, '--svm_train_splits')
  return {'train_splits': train_splits, 'embedding': embedding, **options}


def svm_metrics(exp, state, split: str, gathered: dict, *, train_splits, embedding,
                **opts) -> dict:
  """One-vs-all linear SVMs (fgjax.evaluation.svm) trained on `train_splits` and scored on
  `split`, on the method output `embedding`; other options (C, loss, normalize, max_iter) go to
  fgjax.evaluation.svm. The options are those `check_svm` returned (validated, defaults filled
  in)."""
  step = protocols.make_eval_step(exp, outputs=(embedding,), batch_keys=('label',))
  train = [protocols.collect(exp, state, s, step, batch_keys=('label',)) for s in train_splits]
  test = gathered.get('eval', {})
  if embedding not in test:
    test = protocols.collect(exp, state, split, step, batch_keys=('label',))
  return svm_lib.svm_metrics(np.concatenate([t[embedding] for t in train]),
                             np.concatenate([t['label'] for t in train]),
                             test[embedding], test['label'], exp.meta.num_classes,
                             settings={'embedding': embedding, 'train_splits': train_splits},
                             seed=exp.config.seed, **opts)


def evaluate_latest(config, workdir: str, split: str | None = None, *, plots_on: bool = False,
                    svm: dict | None = None, retrieval_queries: int = 6, mesh=None,
                    log=lambda m: None) -> dict:
  """Evaluate the latest checkpoint; write the metrics file (and plots with `plots_on`).

  `config` None = the run's own config. `svm`: None, or the options of `check_svm` (e.g.
  {'C': 1.0, 'train_splits': ['train']}). The returned dict has 'plots': the plot directory,
  when plots were written (not in the metrics file).
  """
  exp, state, step = run.restore(config, workdir, mesh, log)
  if svm is not None:
    svm = check_svm(exp, **svm)  # before anything is computed
  result, gathered = protocols.evaluate_with_outputs(exp, state, split)
  result['step'] = step
  if svm is not None:
    result.update(svm_metrics(exp, state, result['split'], gathered, **svm))
  split = result['split']
  cfg = exp.config
  default = split in (cfg.dataset.eval_split, f'{cfg.eval.query_split}->{cfg.eval.gallery_split}')
  name = 'metrics.json' if default else f'metrics_{split}.json'
  out = dict(result)
  if is_main_process():
    with open(os.path.join(workdir, name), 'w') as f:
      json.dump(result, f, indent=2)
    if plots_on:
      out['plots'] = plot_dir(workdir, split)
      write_plots(exp, result, gathered, out['plots'], retrieval_queries)
  for warning in exp.method.diagnose(result):
    log(f'WARNING: {warning}')
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} (flags take the form '
                         '--name=value; --help lists them)')
  cli.start()
  log = lambda m: print(m, file=sys.stderr, flush=True)
  config = cli.CONFIG.value
  if config is not None:
    config = run.resolve_config(config, cli.overridden_fields(), log)
  svm = None
  if _SVM.value:
    svm = {'C': _SVM_C.value, 'loss': _SVM_LOSS.value, 'normalize': _SVM_NORMALIZE.value,
           'train_splits': _SVM_TRAIN_SPLITS.value, 'embedding': _SVM_EMBEDDING.value}
  result = evaluate_latest(config, run.expand_path(cli.WORKDIR.value), cli.SPLIT.value,
                           plots_on=_PLOTS.value, svm=svm,
                           retrieval_queries=_RETRIEVAL_QUERIES.value, log=log)
  where = result.pop('plots', None)
  if where:
    print(f'wrote plots to {where}', flush=True)
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  # Required here, not at import: fgjax.cli's flags are shared with the other commands.
  cli.run(main, shared=('config', 'workdir', 'split'), required=('workdir',),
          user_errors=(FileNotFoundError, ValueError, ImportError))
