"""The anti-diagonal wavefront schedule and scans of a 2-D recurrence (the spatial LSTM's loop).

A 2-D recurrence where cell (i,j) reads (i-1,j) and (i,j-1) can compute every cell of anti-diagonal
d = i+j at once. `wavefront_schedule` lays the grid out on min(H, W) working rows (slot s of step d
holds cell (row, d-row)), so the up predecessor is the previous slot and the left one the same slot:
no gather inside the loop. `wavefront_scan` runs a cell function over the schedule with
`jax.lax.scan` (a few scans over consecutive runs of diagonals, each with only its own slots and,
for attention, only the key prefix its cells may see); `per_cell_scan` is the raster-order,
one-cell-per-step reference. `take` is a static gather whose backward is a gather too.
`attention_mask` is the causal (rectangle, optional window) mask of the attention over cells.
Used by `fgjax.models.spatial_lstm` (the Linen modules, and the cell maths).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def _dot(x, w):
  """x @ w accumulated and returned in float32 (the default `dot` of the scans)."""
  return jnp.matmul(x, w, preferred_element_type=jnp.float32)


def take(x: jax.Array, idx: np.ndarray, axis: int, valid: np.ndarray | None = None) -> jax.Array:
  """`jnp.take(x, idx, axis)` for a static `idx` whose `valid` entries (default all) are distinct;
  entries not valid get no gradient (their values must not reach the loss). The transpose is a
  gather too, not XLA's scatter-add (slow on CPU: it was most of the attentive backward)."""
  x, idx = jnp.asarray(x), np.asarray(idx)
  keep = np.ones(idx.shape, bool) if valid is None else np.asarray(valid)
  inverse = np.full(x.shape[axis], idx.size, np.int32)
  inverse[idx[keep]] = np.flatnonzero(keep)

  @jax.custom_vjp
  def fn(x):
    return jnp.take(x, idx.reshape(-1), axis=axis).reshape(
        x.shape[:axis] + idx.shape + x.shape[axis + 1:])

  def bwd(_, ct):
    ct = ct.reshape(ct.shape[:axis] + (idx.size,) + ct.shape[axis + idx.ndim:])
    pad = [(0, 0)] * ct.ndim
    pad[axis] = (0, 1)
    return (jnp.take(jnp.pad(ct, pad), inverse, axis=axis),)

  fn.defvjp(lambda x: (fn(x), None), bwd)
  return fn(x)


class Group(NamedTuple):
  """Diagonals first .. first+steps-1, one `lax.scan`; slot s = working row row0 + s."""
  first: int
  row0: int
  cells: np.ndarray  # (steps, slots) raster index of the cell in each slot; padded: a valid one's
  valid: np.ndarray  # (steps, slots) bool, the slot holds a cell


class Schedule(NamedTuple):
  """Anti-diagonal schedule of an H x W grid on min(H, W) working rows (transposed if H > W): slot
  s holds cell (row, d - row) of diagonal d, so up is the slot before and left the same slot."""
  order: np.ndarray   # (H*W,) raster index of the cells in diagonal-major order (d = i+j, then i)
  groups: tuple[Group, ...]
  out: np.ndarray     # (H*W,) position of each raster cell in the groups' concatenated slots
  transposed: bool    # H > W: working rows are the grid's columns (up and left swap roles)


def _split(rows, prefix, groups, attention):
  """Cut points of at most `groups` runs of diagonals minimising the padded work: sum over runs
  of steps * slots * (keys on diagonals <= the run's last if `attention`, else 1)."""
  num = len(prefix)
  best = {num: (0, ())}
  for _ in range(groups):
    new = {num: (0, ())}
    for d0 in range(num):
      slots = lambda d1: rows[d1 - 1][1] - max(rows[d0][0] - 1, 0)
      new[d0] = min(((d1 - d0) * slots(d1) * (prefix[d1 - 1] if attention else 1) + best[d1][0],
                     (d1,) + best[d1][1]) for d1 in range(d0 + 1, num + 1) if d1 in best)
    best = new
  return (0,) + best[0][1]


@functools.lru_cache(maxsize=None)
def wavefront_schedule(height: int, width: int, groups: int = 1,
                       attention: bool = False) -> Schedule:
  transposed = height > width
  n, m = (width, height) if transposed else (height, width)
  i, j = np.divmod(np.arange(height * width), width)
  order = np.lexsort((i, i + j)).astype(np.int32)
  steps = n + m - 1
  rows = [(max(0, d - m + 1), min(d, n - 1) + 1) for d in range(steps)]  # working rows of d
  prefix = np.cumsum(np.bincount(i + j, minlength=steps))
  bounds = _split(rows, tuple(prefix), groups, attention)
  out, offset, runs = np.zeros(height * width, np.int32), 0, []
  for d0, d1 in zip(bounds[:-1], bounds[1:]):
    row0 = max(rows[d0][0] - 1, 0)  # the row before: up predecessor of the first step's row
    cells = np.zeros((d1 - d0, rows[d1 - 1][1] - row0), np.int32)
    valid = np.zeros(cells.shape, bool)
    for s, d in enumerate(range(d0, d1)):
      r = np.arange(*rows[d])
      raster = (d - r) * width + r if transposed else r * width + d - r
      cells[s], valid[s, r - row0] = raster[0], True
      cells[s, r - row0] = raster
      out[raster] = offset + s * cells.shape[1] + r - row0
    runs.append(Group(d0, row0, cells, valid))
    offset += cells.size
  return Schedule(order, tuple(runs), out, transposed)


@functools.lru_cache(maxsize=None)
def attention_mask(height: int, width: int, window: int | None = None) -> np.ndarray:
  """(H*W, H*W) bool: row i*W+j allows column u*W+v iff u <= i, v <= j (and i-u, j-v <= window)."""
  i, j, u, v = np.ix_(*(np.arange(s) for s in (height, width, height, width)))
  m = (u <= i) & (v <= j)
  if window is not None:
    m &= (i - u <= window) & (j - v <= window)
  return m.reshape(height * width, height * width)


# A cell function: cell(per-cell data with leading cell axis n, up, left, span) -> (h, c, extra),
# where up = (h_up, c_up, h_up @ w_up) and left = (h_left, c_left, h_left @ w_left), each
# (B, n, ...), extra is a pytree of (B, n, ...) outputs and span = (lo, hi) the static range of
# key columns (of `key_mask`) that the cells may attend to ((0, H*W) without a key mask).
CellFn = Callable[..., tuple[jax.Array, jax.Array, Any]]


def _outside(h0, batch, hidden):
  s = jnp.zeros((batch, hidden), jnp.float32) if h0 is None else h0.astype(jnp.float32)
  return s[:, None]


def wavefront_scan(cell: CellFn, per_cell: Any, height: int, width: int, batch: int,
                   w_up: jax.Array, w_left: jax.Array, init=None, dot: Callable = _dot, *,
                   key_mask: np.ndarray | None = None, groups: int = 1):
  """Runs `cell` over the grid, one `lax.scan` step per anti-diagonal (`groups` scans at most).

  `per_cell`: pytree, leading axis H*W (raster), gathered per group to (steps, slots, ...) by
  static tables. Carry: the previous diagonal's (h, c), (B, slots, hidden), padded slots reset to
  (h0, c0), so up is a one-slot shift (the outside state entering at slot 0) and left the same
  slot: no gather in a step; one matmul h_prev @ [w_up | w_left] gives both directions' terms.
  `key_mask` (H*W, H*W): a group's cells get the span of key columns their rows allow. Returns
  (h (B, H*W, hidden), extra (B, H*W, ...)).
  """
  t = wavefront_schedule(height, width, groups, key_mask is not None)
  w_up, w_left = jnp.asarray(w_up), jnp.asarray(w_left)
  hidden = w_up.shape[0]
  h0, c0 = (None, None) if init is None else init
  h0, c0 = _outside(h0, batch, hidden), _outside(c0, batch, hidden)
  w_shift, w_keep = (w_left, w_up) if t.transposed else (w_up, w_left)  # shifted = working up
  w_both, r0 = jnp.concatenate([w_shift, w_keep], axis=1), dot(h0, w_shift)
  shift = lambda s, s0: jnp.concatenate([s0, s[:, :-1]], axis=1)
  carry, row0, outs = (h0, c0), 0, []
  for g in t.groups:
    steps, n = g.cells.shape
    span = (0, height * width)
    if key_mask is not None:
      allowed = np.flatnonzero(key_mask[g.cells[g.valid]].any(axis=0))
      span = (int(allowed[0]), int(allowed[-1]) + 1)
    carry = tuple(jnp.concatenate([s[:, g.row0 - row0:], jnp.broadcast_to(
        s0, (batch, n, hidden))], axis=1)[:, :n] for s, s0 in zip(carry, (h0, c0)))
    row0 = g.row0

    def step(carry, x, span=span):
      (h_prev, c_prev), (data, valid) = carry, x
      r_shift, r_keep = jnp.split(dot(h_prev, w_both), 2, axis=-1)
      work_up = (shift(h_prev, h0), shift(c_prev, c0), shift(r_shift, r0))
      work_left = (h_prev, c_prev, r_keep)
      up, left = (work_left, work_up) if t.transposed else (work_up, work_left)
      h, c, extra = cell(data, up, left, span)
      valid = valid[None, :, None]
      h, c = jnp.where(valid, h, h0), jnp.where(valid, c, c0)
      return (h, c), (h, extra)

    data = jax.tree.map(lambda a: a[g.cells] if isinstance(a, np.ndarray) else take(
        a, g.cells, 0, g.valid), per_cell)
    carry, ys = jax.lax.scan(step, carry, (data, g.valid))
    outs.append(jax.tree.map(lambda y: jnp.moveaxis(y, 0, 1).reshape(
        (batch, steps * n) + y.shape[3:]), ys))
  return jax.tree.map(lambda *ys: take(jnp.concatenate(ys, axis=1), t.out, 1), *outs)


def per_cell_scan(cell: CellFn, per_cell: Any, height: int, width: int, batch: int,
                  w_up: jax.Array, w_left: jax.Array, init=None, dot: Callable = _dot):
  """Same contract as `wavefront_scan`, one `lax.scan` step per raster-order cell (H*W steps).
  The carry is a row buffer (W, B, hidden): before cell (i,j), slot j holds (i-1,j) and slot j-1
  holds (i,j-1). Every cell scores all H*W keys (masked). Reference and benchmark baseline."""
  w_up, w_left = jnp.asarray(w_up), jnp.asarray(w_left)
  hidden = w_up.shape[0]
  h0, c0 = (None, None) if init is None else init
  h0, c0 = _outside(h0, batch, hidden)[:, 0], _outside(c0, batch, hidden)[:, 0]
  ii, jj = np.divmod(np.arange(height * width, dtype=np.int32), width)
  xs = (jax.tree.map(lambda a: a[:, None], per_cell), ii, jj)
  get = lambda buf, k: jax.lax.dynamic_index_in_dim(buf, k, keepdims=False)

  def step(carry, x):
    hb, cb = carry
    data, i, j = x
    jl = jnp.maximum(j - 1, 0)
    h_up, c_up = jnp.where(i > 0, get(hb, j), h0), jnp.where(i > 0, get(cb, j), c0)
    h_left, c_left = jnp.where(j > 0, get(hb, jl), h0), jnp.where(j > 0, get(cb, jl), c0)
    up = (h_up[:, None], c_up[:, None], dot(h_up, w_up)[:, None])
    left = (h_left[:, None], c_left[:, None], dot(h_left, w_left)[:, None])
    h, c, extra = cell(data, up, left, (0, height * width))
    hb = jax.lax.dynamic_update_index_in_dim(hb, h[:, 0], j, 0)
    cb = jax.lax.dynamic_update_index_in_dim(cb, c[:, 0], j, 0)
    return (hb, cb), (h[:, 0], jax.tree.map(lambda e: e[:, 0], extra))

  zeros = jnp.zeros((width, batch, hidden), jnp.float32)
  _, ys = jax.lax.scan(step, (zeros, zeros), xs)
  return jax.tree.map(lambda y: jnp.moveaxis(y, 0, 1), ys)


SCANS = {'wavefront': wavefront_scan, 'per_cell': per_cell_scan}
