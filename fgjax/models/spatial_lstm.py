"""2-D spatial LSTM with causal soft location attention (Wu & Wang 2017, sec. 3.3), Linen modules.

Source: Wu & Wang 2017, "Where to Focus" (seed 000, /work/shared/seeds/000_*.txt): spatial LSTM
eq. (2), location softmax eq. (3), attended input eq. (4), initial states eq. (7); the attention
penalty of eq. (5) reads the `attention` returned here (it lives in `fgjax.losses`).

Public API:
- `SpatialLSTM(hidden, output)`: x (B,H,W,D) -> h (B,H,W,hidden), the plain cell of eq. (2).
- `AttentiveSpatialLSTM(hidden, output, window, query)`: per-location gate pre-activations
  X (B,H,W,5*hidden) -> (h (B,H,W,hidden), attention (B,H,W,H,W)), eq. (2)-(4).
- `BilinearGateInput(hidden, rank)`: X_uv = W_x vec(a_uv b_uv^T) from two streams (eq. 1 + the W_x
  of eq. 2); `InitialState(hidden)`: (h0, c0) from MLPs of a mean feature, eq. (7).
- Pure functions: `lstm_cell`, `recurrent_terms`, `bilinear_gate_inputs`, `low_rank_gate_inputs`,
  `wavefront_schedule`, `attention_mask`, `wavefront_scan`, `per_cell_scan`, `take`.

Choices (the paper is silent or ambiguous where marked *):
- Gates, in this order on the 5*hidden axis (`GATES`): i, f_up, f_left, o, g. Eq. (2) pairs f^l with
  h_{i-1,j}, c_{i-1,j} ("up") and f^r with h_{i,j-1}, c_{i,j-1} ("left"); c = g*i + c_left*f_left +
  c_up*f_up. Recurrent weights are separate per direction, as in eq. (2): `w_up` (hidden, 4*hidden)
  acts on h_up and `w_left` on h_left, each with columns [i, f, o, g]; f_up sees only h_up and
  f_left only h_left, exactly as printed (`recurrent_terms`). The input weights W_x are one
  (D, 5*hidden) matrix.
  *Biases: eq. (2) has none; one bias per gate (`bias`, zeros) is added, as every LSTM does. The
  plain input projection has no bias of its own (the cell's covers it).
- Output: `output='paper'` is h = tanh(c * o) as printed in eq. (2); `'standard'` is o * tanh(c).
- *Outside the grid: predecessors of the top row (up) and left column (left) are zero, or, with
  `init=(h0, c0)` (each (B, hidden)), h0/c0 for every outside predecessor: the 2-D reading of the
  eq. (7) initial state, which the paper says feeds "the first location matrix L".
- *Attention query: eq. (3) conditions L on h_{i,j}, which eq. (2) computes from I_{i,j} = E_L[B]:
  circular. As in Xu et al. 2015 (whose soft attention the paper follows) the query is the previous
  state, here the cell's predecessors: `query='mean'` (h_up + h_left)/2 (default), `'up'`,
  `'left'`, or `'concat'` [h_up, h_left]. U maps the query to H*W logits (U_{u,v} of eq. 3, with a
  bias), one U shared by all cells (eq. 3 indexes it by (u,v) only); its shape depends on the grid.
- *Eq. (3)'s denominator lacks the exp (a typo); L is the softmax of the masked logits.
- *Causal region: eq. (3)-(4) sum over u <= i, v <= j: the rectangle, (i,j) included, so cell
  (0,0) attends only to itself. The text of eq. (2) also defines I_{<i,j} as the raster-order
  predecessors "limited to a smaller neighborhood": `window=r` keeps u >= i-r, v >= j-r inside the
  rectangle (window=0: no attention, the plain cell on X). The raster-order set (which would see
  (i-1, j+1)) is not implemented: it breaks the 2-D causality the recurrence has.
- Attention commutes with the linear input projection: W_x vec(sum_uv L_uv B_uv) = sum_uv L_uv
  X_uv with X_uv = W_x vec(B_uv), so X is computed once per image (`BilinearGateInput`) and a cell
  mixes rows of X, never forming the D_A x D_B matrix I_ij: H*W*H*W*(5*hidden + q) multiply-adds
  per image when every cell scores every location (`per_cell_scan`).
- Wavefront (`wavefront_scan`): cell (i,j) needs only (i-1,j) and (i,j-1), both on anti-diagonal
  d-1, so a `lax.scan` step computes a whole diagonal (H+W-1 steps). The carry is the previous
  diagonal in slots = rows (of the grid transposed when H > W): up is a one-slot shift, left the
  same slot; no gather in the loop. Keys are put in diagonal-major order, so the locations that
  the causal rectangles of diagonal d's cells can see are a prefix (diagonals <= d); the diagonals
  are cut into `scan_groups` consecutive scans (`wavefront_schedule`, chosen to minimise the padded
  work), each with only its rows as slots and its key prefix. Cell-key pairs per image at 14x14:
  per-cell scan 38.4k (every key of every cell, masked), one scan 74.1k, 2 scans (the attentive
  default) 51.9k, 4 scans 35.1k; more scans cost compile time (plain default: 1 scan).
  Measured fwd+bwd speed-ups over `per_cell_scan`: docs/methods/bilinear_lstm.md.
- Precision: matmuls in `dtype` (e.g. bfloat16), accumulated in float32; gates, states, softmax,
  outputs and parameters are float32.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

GATES = ('i', 'f_up', 'f_left', 'o', 'g')
OUTPUTS = ('paper', 'standard')
QUERIES = ('mean', 'up', 'left', 'concat')


def _dot(x, w, dtype=jnp.float32, precision=None):
  """x @ w in `dtype`, accumulated and returned in float32."""
  return jnp.matmul(x.astype(dtype), w.astype(dtype), precision=precision,
                    preferred_element_type=jnp.float32)


# ------------------------------------------------------------------------------------ pure math
def lstm_cell(pre: jax.Array, c_up: jax.Array, c_left: jax.Array, output: str = 'paper'):
  """Eq. (2) from the gate pre-activations `pre` (..., 5*hidden, order `GATES`) -> (h, c)."""
  i, f_up, f_left, o, g = jnp.split(pre, 5, axis=-1)
  i, f_up, f_left, o = (jax.nn.sigmoid(t) for t in (i, f_up, f_left, o))
  c = jnp.tanh(g) * i + c_left * f_left + c_up * f_up
  h = jnp.tanh(c * o) if output == 'paper' else o * jnp.tanh(c)
  return h, c


def recurrent_terms(r_up: jax.Array, r_left: jax.Array) -> jax.Array:
  """Per-direction terms (..., 4*hidden) [i, f, o, g] = h_dir @ w_dir -> (..., 5*hidden) in `GATES`
  order: i, o, g get both directions; f_up only the up term, f_left only the left one (eq. 2)."""
  ui, uf, uo, ug = jnp.split(r_up, 4, axis=-1)
  li, lf, lo, lg = jnp.split(r_left, 4, axis=-1)
  return jnp.concatenate([ui + li, uf, lf, uo + lo, ug + lg], axis=-1)


def bilinear_gate_inputs(a: jax.Array, b: jax.Array, kernel: jax.Array, *, dtype=jnp.float32,
                         precision=None) -> jax.Array:
  """X[n,h,w,g] = sum_{a,b} a[n,h,w,a] b[n,h,w,b] W[a,b,g]: W_x vec(B_uv) at every location.

  One einsum; `jnp.einsum` picks the pairwise order by cost, so it may form (N,H,W,Cb,G) (a with W
  first) rather than the (N,H,W,Ca,Cb) outer products. Either way K^2*Ca*Cb*G multiply-adds per
  image and a Ca*Cb*G kernel: 0.35 TFLOP and 2.7 GB float32 at the paper's 27x27, 512x512, 5*512.
  Use `low_rank_gate_inputs` for real sizes.
  """
  return jnp.einsum('nhwa,nhwb,abg->nhwg', a.astype(dtype), b.astype(dtype),
                    kernel.astype(dtype), precision=precision, preferred_element_type=jnp.float32)


def low_rank_gate_inputs(a: jax.Array, b: jax.Array, p: jax.Array, q: jax.Array, r: jax.Array, *,
                         dtype=jnp.float32, precision=None) -> jax.Array:
  """X = ((a @ P) * (b @ Q)) @ R: the kernel W[a,b,g] = sum_k P[a,k] Q[b,k] R[k,g] of rank k.

  K^2*(Ca + Cb + G)*rank multiply-adds per image, no D_A x D_B tensor anywhere.
  """
  return _dot(_dot(a, p, dtype, precision) * _dot(b, q, dtype, precision), r, dtype, precision)


def take(x: jax.Array, idx: np.ndarray, axis: int, valid: np.ndarray | None = None) -> jax.Array:
  """`jnp.take(x, idx, axis)` for a static `idx` whose `valid` entries (default all) are distinct;
  entries not valid get no gradient (their values must not reach the loss). The transpose is a
  gather too, not XLA's scatter-add (slow on CPU: it was most of the attentive backward)."""
  idx = np.asarray(idx)
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


# ------------------------------------------------------------------------------------ modules
class _CellParams(nn.Module):
  """Shared fields and the recurrent parameters (`w_up`, `w_left`, `bias`) of both LSTMs."""
  hidden: int
  output: str = 'paper'
  dtype: Any = jnp.float32
  precision: Any = None
  scan: str = 'wavefront'
  scan_groups: int | None = None

  def _check(self):
    if self.output not in OUTPUTS:
      raise ValueError(f'unknown output {self.output!r}; valid: {", ".join(OUTPUTS)}')
    if self.scan not in SCANS:
      raise ValueError(f'unknown scan {self.scan!r}; valid: {", ".join(SCANS)}')
    if self.scan_groups is not None and self.scan_groups < 1:
      raise ValueError(f'scan_groups must be None or >= 1, got {self.scan_groups}')

  def _recurrent(self):
    h = self.hidden
    w_up = self.param('w_up', nn.initializers.orthogonal(), (h, 4 * h), jnp.float32)
    w_left = self.param('w_left', nn.initializers.orthogonal(), (h, 4 * h), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (5 * h,), jnp.float32)
    return w_up, w_left, bias

  def _scan(self, cell, per_cell, height, width, batch, w_up, w_left, init, key_mask=None):
    dot = functools.partial(_dot, dtype=self.dtype, precision=self.precision)
    args = (cell, per_cell, height, width, batch, w_up, w_left, init, dot)
    if self.scan == 'per_cell':
      return per_cell_scan(*args)
    groups = self.scan_groups or (1 if key_mask is None else 2)
    return wavefront_scan(*args, key_mask=key_mask, groups=groups)


class SpatialLSTM(_CellParams):
  """Spatial LSTM of eq. (2) on a feature map: x (B,H,W,D) -> h (B,H,W,hidden) float32.

  Attributes: hidden; output 'paper' (tanh(c*o)) or 'standard' (o*tanh(c)); dtype of the matmuls;
  precision; scan 'wavefront' (default) or 'per_cell' (reference); scan_groups (wavefront scans,
  None: 1 plain, 2 attentive; more trade compile time for less padding). Parameters: `input` (Dense
  D -> 5*hidden, no bias), `w_up`, `w_left`, `bias` (see the module docstring).
  `__call__(x, init=None)`: init = (h0, c0), each (B, hidden), the state outside the grid.
  """

  @nn.compact
  def __call__(self, x: jax.Array, init: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    self._check()
    n, height, width, _ = x.shape
    gx = nn.Dense(5 * self.hidden, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                  precision=self.precision, name='input')(x).astype(jnp.float32)
    w_up, w_left, bias = self._recurrent()

    def cell(gx_slot, up, left, span):
      pre = jnp.swapaxes(gx_slot, 0, 1) + recurrent_terms(up[2], left[2]) + bias
      h, c = lstm_cell(pre, up[1], left[1], self.output)
      return h, c, ()

    per_cell = jnp.moveaxis(gx.reshape(n, height * width, -1), 1, 0)
    h, _ = self._scan(cell, per_cell, height, width, n, w_up, w_left, init)
    return h.reshape(n, height, width, self.hidden)


class AttentiveSpatialLSTM(_CellParams):
  """Spatial LSTM with causal soft location attention, eq. (2)-(4).

  `__call__(gates_x, init=None)`: gates_x (B,H,W,5*hidden) = W_x vec(B_uv) per location (see
  `BilinearGateInput`), init = (h0, c0) or None. Returns (h (B,H,W,hidden), attention (B,H,W,H,W))
  with attention[n,i,j,u,v] = L_{u,v} at cell (i,j): softmax over (u,v) of U h_prev, zero outside
  the causal rectangle u <= i, v <= j (and the window). The cell input is sum_uv L_uv gates_x[u,v].
  Extra attributes: window (None: the whole rectangle; r: at most r rows/columns back), query
  ('mean', 'up', 'left', 'concat'). Parameters: `attention_kernel` (q, H*W), `attention_bias`
  (H*W,), `w_up`, `w_left`, `bias`.
  """
  window: int | None = None
  query: str = 'mean'

  @nn.compact
  def __call__(self, gates_x: jax.Array, init: tuple[jax.Array, jax.Array] | None = None):
    self._check()
    if self.query not in QUERIES:
      raise ValueError(f'unknown query {self.query!r}; valid: {", ".join(QUERIES)}')
    if self.window is not None and self.window < 0:
      raise ValueError(f'window must be None or >= 0, got {self.window}')
    n, height, width, g = gates_x.shape
    if g != 5 * self.hidden:
      raise ValueError(f'gates_x has {g} channels, expected 5*hidden = {5 * self.hidden}')
    k = height * width
    q_dim = 2 * self.hidden if self.query == 'concat' else self.hidden
    u_kernel = self.param('attention_kernel', nn.initializers.lecun_normal(), (q_dim, k),
                          jnp.float32)
    u_bias = self.param('attention_bias', nn.initializers.zeros, (k,), jnp.float32)
    w_up, w_left, bias = self._recurrent()
    xg = gates_x.reshape(n, k, g).astype(self.dtype)
    mask = attention_mask(height, width, self.window)
    keys = None
    if self.scan == 'wavefront':  # keys in diagonal-major order: those of diagonals <= d a prefix
      keys = wavefront_schedule(height, width).order
      u_kernel, u_bias, xg, mask = (take(u_kernel, keys, 1), take(u_bias, keys, 0),
                                    take(xg, keys, 1), mask[:, keys])

    def cell(mask_rows, up, left, span):
      (h_up, c_up, r_up), (h_left, c_left, r_left) = up, left
      lo, hi = span
      q = {'mean': lambda: 0.5 * (h_up + h_left), 'up': lambda: h_up, 'left': lambda: h_left,
           'concat': lambda: jnp.concatenate([h_up, h_left], -1)}[self.query]()
      logits = _dot(q, u_kernel[:, lo:hi], self.dtype, self.precision) + u_bias[lo:hi]
      att = jax.nn.softmax(jnp.where(mask_rows[None, :, lo:hi], logits, -jnp.inf), axis=-1)
      x = jnp.einsum('bsk,bkg->bsg', att.astype(self.dtype), xg[:, lo:hi],
                     precision=self.precision, preferred_element_type=jnp.float32)
      h, c = lstm_cell(x + recurrent_terms(r_up, r_left) + bias, c_up, c_left, self.output)
      return h, c, jnp.pad(att, ((0, 0), (0, 0), (lo, k - hi)))   # (B, cells, H*W keys)

    h, att = self._scan(cell, mask, height, width, n, w_up, w_left, init, key_mask=mask)
    if keys is not None:
      att = take(att, np.argsort(keys), 2)
    return h.reshape(n, height, width, self.hidden), att.reshape(n, height, width, height, width)


class BilinearGateInput(nn.Module):
  """X_uv = W_x vec(a_uv b_uv^T): (B,H,W,Ca), (B,H,W,Cb) -> (B,H,W,5*hidden) float32.

  rank None: full kernel `kernel` (Ca, Cb, 5*hidden) (`bilinear_gate_inputs`); rank r: factors
  `p` (Ca, r), `q` (Cb, r), `r` (r, 5*hidden) (`low_rank_gate_inputs`). No bias (the LSTM's).
  """
  hidden: int
  rank: int | None = None
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    ca, cb, g = a.shape[-1], b.shape[-1], 5 * self.hidden
    kw = dict(dtype=self.dtype, precision=self.precision)
    if self.rank is None:
      init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal', in_axis=(0, 1),
                                              out_axis=2)
      return bilinear_gate_inputs(a, b, self.param('kernel', init, (ca, cb, g), jnp.float32), **kw)
    lecun = nn.initializers.lecun_normal()
    p = self.param('p', lecun, (ca, self.rank), jnp.float32)
    q = self.param('q', lecun, (cb, self.rank), jnp.float32)
    r = self.param('r', lecun, (self.rank, g), jnp.float32)
    return low_rank_gate_inputs(a, b, p, q, r, **kw)


class InitialState(nn.Module):
  """Eq. (7): (h0, c0) = (f_init_h(m), f_init_c(m)), m the mean over locations of a feature.

  `__call__(features)`: (B, F) already pooled, or (B, ..., F) averaged over the middle axes. For
  the paper's m = mean_uv vec(B_uv) pass `fgjax.ops.bilinear.bilinear_pool(a, b).reshape(B, -1)`
  (Ca*Cb wide); the mean of the gate inputs X is a cheaper choice. *Each f_init is `layers`
  tanh Dense layers then a tanh Dense to `hidden` (Xu et al. 2015's code: one tanh layer, the
  default). Returns two (B, hidden) float32 arrays, `init` for the LSTMs.
  """
  hidden: int
  layers: Sequence[int] = ()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
    m = features.reshape(features.shape[0], -1, features.shape[-1]).mean(axis=1)
    states = []
    for which in ('h', 'c'):
      y = m
      for k, width in enumerate(tuple(self.layers) + (self.hidden,)):
        y = jnp.tanh(nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32,
                              name=f'{which}_{k}')(y).astype(jnp.float32))
      states.append(y)
    return states[0], states[1]
