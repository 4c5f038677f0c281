"""Evaluation: a jitted eval step and the protocols that turn its outputs into metrics.

`config.eval.protocol` picks how a run is scored (independently of the method):
- 'classification': top-1, mean per-class accuracy and loss on `dataset.eval_split`;
- 'reid': CMC rank-k and mAP (Market-1501 protocol) between `eval.query_split` and
  `eval.gallery_split`, on the method's `eval.embedding` output;
- 'retrieval': Recall@K and NMI (k-means with as many clusters as classes, seeded by config.seed)
  within `dataset.eval_split` (class-disjoint retrieval, e.g. CUB 101-200).
Under every protocol the method's `eval_metrics` (its diagnostics, e.g. where the attention goes)
are added, computed on the evaluated split (reid: the query split) from the method's
`eval_outputs` and the `eval_batch_keys` the dataset has.
Splits are read in order with padded, masked last batches, so every example counts exactly once.

`evaluate` returns the metrics; `evaluate_with_outputs` also returns the gathered per-example
arrays the metrics were computed from (for plots, fgjax.evaluate); `make_eval_step` / `collect`
take explicit output names and dataset fields for other consumers (fgjax.export, `--svm`).
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np

from fgjax import methods, metrics, sharding
from fgjax.data import pipeline

PROTOCOL_KEYS = {'classification': ('label',), 'reid': ('identity', 'camera'),
                 'retrieval': ('label',)}


def outputs_needed(config, method=None) -> tuple[str, ...]:
  """Which predict_fn outputs the protocol and the method's eval_metrics read (only these leave
  the devices)."""
  first = 'logits' if config.eval.protocol == 'classification' else config.eval.embedding
  return tuple(dict.fromkeys((first,) + (method.eval_outputs if method else ())))


def batch_keys_needed(config, method=None, features=None) -> tuple[str, ...]:
  """Dataset fields gathered beside the predictions: the protocol's, and the method's eval extras
  that the dataset has (`features`: the dataset's field names; a method's eval_metrics sees only
  the extras present, e.g. no 'bbox' on a dataset without boxes)."""
  extra = methods.resolve_keys(method.eval_batch_keys, config) if method else ()
  extra = tuple(k for k in extra if features is None or k in features)
  return tuple(dict.fromkeys(PROTOCOL_KEYS[config.eval.protocol] + extra))


def flip_averaged(name: str, config) -> bool:
  """Whether flip test-time augmentation averages output `name` over the image and its mirror:
  class scores and embeddings (`*logits*`, `features`, `config.eval.embedding`). Spatial outputs
  (boxes, attention maps, regions) are in image coordinates, which the mirror flips; averaging
  them would describe neither image, so they come from the image itself."""
  return 'logits' in name or name in ('features', config.eval.embedding)


def make_eval_step(exp, outputs=None, batch_keys=None):
  """`(state, batch) -> per-example outputs` (selected predictions + batch ids), jitted.

  `outputs`: predict_fn outputs to return (default: `outputs_needed`); `batch_keys`: dataset
  fields passed through (default: `batch_keys_needed`; give `collect` the same `batch_keys`).
  Only the model variables (params, batch_stats) enter the jitted function, so it is traced once
  per run: the optimizer state, whose structure changes between training stages, stays out.
  """
  names = tuple(outputs) if outputs is not None else outputs_needed(exp.config, exp.method)
  keys = _data_keys(exp, batch_keys) + ('mask', 'index')

  def predict(params, batch_stats, images):
    variables = {'params': params}
    if batch_stats:
      variables['batch_stats'] = batch_stats
    outputs = exp.method.predict_fn(exp.model.apply(variables, images, train=False))
    return {k: outputs[k].astype(jnp.float32) for k in names}

  def step(params, batch_stats, batch: dict):
    preds = predict(params, batch_stats, batch['image'])
    if exp.config.eval.flip_tta:  # average with the horizontally flipped image's predictions
      flipped = predict(params, batch_stats, batch['image'][:, :, ::-1])
      preds = {k: (v + flipped[k]) / 2 if flip_averaged(k, exp.config) else v
               for k, v in preds.items()}
    return {**preds, **{k: batch[k] for k in keys}}

  rep, data = sharding.replicated(exp.mesh), sharding.batch_sharded(exp.mesh)
  jitted = jax.jit(step, in_shardings=(rep, rep, data), out_shardings=data)

  def eval_step(state, batch: dict):
    return jitted(state.params, state.batch_stats, batch)
  return eval_step


def _data_keys(exp, batch_keys=None) -> tuple[str, ...]:
  if batch_keys is None:
    return batch_keys_needed(exp.config, exp.method, exp.meta.features)
  return tuple(dict.fromkeys(batch_keys))


def collect(exp, state, split: str, eval_step, batch_keys=None,
            progress=None) -> dict[str, np.ndarray]:
  """Every example of `split` once, in order: {output or batch key: array}.

  `batch_keys`: the dataset fields `eval_step` was made with (default: `batch_keys_needed`).
  `progress(done, total)` is called after every global batch (examples of the split done).
  """
  exp.meta.check_split(split, 'evaluation split')
  keys = tuple(dict.fromkeys(('image',) + _data_keys(exp, batch_keys)))
  total = exp.meta.split_sizes[split]
  parts = collections.defaultdict(list)
  done = 0
  for batch in pipeline.eval_batches(exp.source(split), exp.config.dataset, keys=keys,
                                     global_batch=exp.config.eval.batch_size, mesh=exp.mesh):
    out = {k: sharding.to_host(v) for k, v in eval_step(state, batch).items()}
    keep = out.pop('mask')
    for k, v in out.items():
      parts[k].append(v[keep])
    done += int(keep.sum())
    if progress is not None:
      progress(done, total)
  out = {k: np.concatenate(v) for k, v in parts.items()}
  if len(out['index']) != exp.meta.split_sizes[split]:
    raise RuntimeError(f'evaluation of {split!r} saw {len(out["index"])} examples, expected '
                       f'{exp.meta.split_sizes[split]}')
  return out


def evaluate(exp, state, split: str | None = None, eval_step=None) -> dict:
  """The protocol's metrics, as a flat dict (with 'split')."""
  return evaluate_with_outputs(exp, state, split, eval_step)[0]


def evaluate_with_outputs(exp, state, split: str | None = None,
                          eval_step=None) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
  """(metrics as `evaluate` returns them, the gathered arrays they were computed from).

  The arrays (the `collect` dicts, in split order) are keyed by role: {'query': ..., 'gallery':
  ...} for 'reid', {'eval': ...} otherwise.
  """
  eval_step = eval_step or make_eval_step(exp)
  cfg = exp.config.eval
  if cfg.protocol == 'reid':
    q = collect(exp, state, cfg.query_split, eval_step)
    g = collect(exp, state, cfg.gallery_split, eval_step)
    result = metrics.reid_metrics(q[cfg.embedding], q['identity'], q['camera'],
                                  g[cfg.embedding], g['identity'], g['camera'],
                                  ranks=tuple(cfg.ranks), metric=cfg.distance,
                                  protocol=cfg.reid_protocol,
                                  rerank=cfg.rerank, seed=exp.config.seed)
    result = {'split': f'{cfg.query_split}->{cfg.gallery_split}', **result}
    return _with_method_metrics(exp, result, q), {'query': q, 'gallery': g}
  split = split or exp.config.dataset.eval_split
  out = collect(exp, state, split, eval_step)
  if cfg.protocol == 'retrieval':
    result = metrics.recall_at_k(out[cfg.embedding], out['label'], ks=tuple(cfg.recall_ks))
    result['nmi'] = metrics.nmi(out[cfg.embedding], out['label'], seed=exp.config.seed)
    result = {'split': split, **result, 'num_examples': int(len(out['label']))}
    return _with_method_metrics(exp, result, out), {'eval': out}
  result = {'split': split, **metrics.classification_metrics(out['logits'], out['label'])}
  return _with_method_metrics(exp, result, out), {'eval': out}


def _with_method_metrics(exp, result: dict, gathered: dict) -> dict:
  """`result` plus the method's `eval_metrics` on `gathered` (a key clash is an error)."""
  if exp.method.eval_metrics is None:
    return result
  extra = exp.method.eval_metrics(gathered, exp.config)
  clash = sorted(set(extra) & set(result))
  if clash:
    raise ValueError(f'method {exp.method.name!r} eval_metrics returned keys {clash} that the '
                     f'{exp.config.eval.protocol} protocol already reports')
  return {**result, **extra}


def check_config(config, meta, method=None) -> None:
  """Protocol name, splits and dataset fields exist (called before compiling)."""
  cfg = config.eval
  if cfg.protocol not in PROTOCOL_KEYS:
    raise ValueError(f'config.eval.protocol must be one of {", ".join(PROTOCOL_KEYS)}, got '
                     f'{cfg.protocol!r}')
  missing = [k for k in PROTOCOL_KEYS[cfg.protocol] if k not in meta.features]
  if missing:
    raise ValueError(f'config.eval.protocol={cfg.protocol!r} needs dataset fields {missing}, '
                     f'which dataset {meta.name!r} does not have')
  if cfg.protocol == 'reid':
    for field, valid in (('distance', ('euclidean', 'cosine')),
                         ('reid_protocol', ('market1501', 'cuhk03'))):
      if cfg[field] not in valid:
        raise ValueError(f'config.eval.{field} must be one of {", ".join(valid)}, got '
                         f'{cfg[field]!r}')
    meta.check_split(cfg.query_split, 'config.eval.query_split')
    meta.check_split(cfg.gallery_split, 'config.eval.gallery_split')


def output_shapes(exp) -> dict[str, tuple[int, ...]]:
  """Per-example shape of every predict_fn output (traced abstractly, nothing computed)."""
  def predict(variables, images):
    return exp.method.predict_fn(exp.model.apply(variables, images, train=False))
  out = jax.eval_shape(predict, exp.abstract_variables, exp.dummy_images(1))
  return {k: tuple(v.shape[1:]) for k, v in out.items() if hasattr(v, 'shape')}


def check_embedding(exp, name: str, field: str = '--embedding') -> None:
  """`name` is a per-example vector output of the method (valid names listed otherwise)."""
  valid = sorted(k for k, s in output_shapes(exp).items() if len(s) == 1)
  if name not in valid:
    raise ValueError(f'{field}={name!r} is not a vector output of method {exp.method.name!r}; '
                     f'valid: {", ".join(valid)}')
