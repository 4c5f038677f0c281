"""Input pipeline: tfds data source -> decode -> augment -> host-local batches -> global arrays.

Determinism and resumption: the training stream is a function of (seed, position) only.
`grain.MapDataset` shuffles record indices with a fresh permutation per epoch and repeats forever;
the global batch `i` is stream positions [i*B, (i+1)*B). Process `p` of `P` reads the contiguous
rows [p*B/P, (p+1)*B/P) of every global batch, and each example is augmented with an RNG seeded by
its *global* stream position, so the pixels do not depend on how many processes read them. The
pipeline position is the number of global batches consumed; it is stored in every checkpoint and
a resumed run restarts the stream exactly there (`start_position`).

Evaluation reads a split in order; the last global batch is padded with copies of the last
example and carries `mask` = 0 on padding, so no example is dropped or counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import grain
import jax
import numpy as np

from fgjax import sharding
from fgjax.data import augment

_AUGMENT_STREAM = 1  # separates augmentation randomness from other uses of the seed


class _ProcessRows(grain.MapDataset):
  """Local element j of this process -> (global position g, parent[g]) (see module docstring)."""

  def __init__(self, parent: grain.MapDataset, global_batch: int, local_batch: int,
               process_index: int):
    super().__init__(parent)
    self._gb, self._lb, self._pid = global_batch, local_batch, process_index

  def __len__(self) -> int:
    return len(self._parent) // self._gb * self._lb

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    g = (index // self._lb) * self._gb + self._pid * self._lb + index % self._lb
    return g, self._parent[g]


def _select(example: dict, keys: Sequence[str]) -> dict:
  out = {}
  for k in keys:
    v = np.asarray(example[k])
    if k == 'label' or v.dtype == np.int64:
      v = v.astype(np.int32)
    out[k] = v
  return out


def _iterate(ds: grain.MapDataset, cfg, mesh) -> Iterator[dict[str, jax.Array]]:
  read = grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch)
  for local in ds.to_iter_dataset(read):
    yield sharding.to_global(local, mesh)


def train_batches(source, cfg, *, keys: Sequence[str], global_batch: int, mesh, seed: int,
                  start_position: int = 0) -> Iterator[dict[str, jax.Array]]:
  """Endless global training batches, starting at global batch `start_position`."""
  local_batch = sharding.local_batch_size(global_batch, mesh)
  order = grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat()
  rows = _ProcessRows(order, global_batch, local_batch, jax.process_index())

  def load(item):
    g, record = item
    rng = np.random.default_rng([seed, _AUGMENT_STREAM, g])
    return _select(augment.preprocess(source[int(record)], cfg, rng), keys)

  ds = rows.map(load).batch(local_batch, drop_remainder=True)
  return _iterate(ds.slice(slice(start_position, None)), cfg, mesh)


def num_eval_batches(num_examples: int, global_batch: int) -> int:
  return math.ceil(num_examples / global_batch)


def eval_batches(source, cfg, *, keys: Sequence[str], global_batch: int,
                 mesh) -> Iterator[dict[str, jax.Array]]:
  """One pass over a split in order, padded to whole global batches, with a `mask` key."""
  local_batch = sharding.local_batch_size(global_batch, mesh)
  n = len(source)
  padded = num_eval_batches(n, global_batch) * global_batch
  rows = _ProcessRows(grain.MapDataset.range(padded), global_batch, local_batch,
                      jax.process_index())

  def load(item):
    g, _ = item
    out = _select(augment.preprocess(source[min(g, n - 1)], cfg, None), keys)
    out['mask'] = np.asarray(g < n, np.bool_)
    out['index'] = np.asarray(g, np.int32)
    return out

  return _iterate(rows.map(load).batch(local_batch), cfg, mesh)
