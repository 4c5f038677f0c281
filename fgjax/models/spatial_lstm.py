"""2-D spatial LSTM with soft location attention (Wu & Wang 2017, sec. 3.3), Linen modules.

Source: Wu & Wang 2017, "Where to Focus: Deep Attention-based Spatially Recurrent Bilinear
Networks for Fine-Grained Visual Recognition": spatial LSTM eq. (2), location softmax eq. (3),
attended input eq. (4), initial states eq. (7); the attention penalty of eq. (5) reads the
`attention` returned here (it lives in `fgjax.losses`).

Public API:
- `SpatialLSTM(hidden, output)`: x (B,H,W,D) -> h (B,H,W,hidden), the plain cell of eq. (2).
- `AttentiveSpatialLSTM(hidden, output, window, query, region)`: per-location gate
  pre-activations X (B,H,W,5*hidden) -> (h (B,H,W,hidden), attention (B,H,W,H,W)), eq. (2)-(4).
- `BilinearGateInput(hidden, rank, gate_init)`: X_uv = W_x vec(a_uv b_uv^T) from two streams
  (eq. 1 + the W_x of eq. 2); `InitialState(hidden)`: (h0, c0) from MLPs of a mean feature, eq. (7).
- Pure functions: `lstm_cell`, `recurrent_terms`, `bilinear_gate_inputs`, `low_rank_gate_inputs`;
  where attention may look and what it did: `region_mask`, `region_sizes`, `uniform_mass`,
  `cell_statistics`; the loop itself (`wavefront_schedule`, `attention_mask`, `wavefront_scan`,
  `per_cell_scan`, `take`) lives in `fgjax.ops.wavefront` and is re-exported here.

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
- *Attention region (`region`, `region_mask`): eq. (3)-(4) sum over u <= i,
  v <= j ('causal': the rectangle, (i,j) included, so cell (0,0) attends only to itself), while
  the text calls L "a softmax over K x K locations" that "can take 1-of-K^2 values" ('grid').
  The attended values are the bilinear features B (CNN outputs, all known before the recurrence
  starts) and the logits U h_prev need only the cell's predecessors, so either region leaves the
  2-D recurrence as it is: h_ij reads the hidden states of (i-1,j) and (i,j-1) only, whatever
  locations its input mixes. The module's default is 'causal' (the equations as printed);
  `fgjax.models.bilinear_lstm` defaults to 'grid'. The text of eq. (2) also defines I_{<i,j} as
  the raster-order predecessors "limited to a smaller neighborhood": `window=r` keeps locations at
  most r rows/columns away (back, for 'causal'; either side, for 'grid'); window=0 is no
  attention, the plain cell on X. The raster-order set itself (which would also see (i-1, j+1)) is
  a third region, not implemented.
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
  per-cell scan 38.4k (every key of every cell, masked), one scan 74.1k, 2 scans (the causal
  attentive default) 51.9k, 4 scans 35.1k; more scans cost compile time (plain and whole-grid
  default: 1 scan; on the whole grid every cell scores every key, so scans only cut padding).
  Measured fwd+bwd speed-ups over `per_cell_scan`: docs/methods/bilinear_lstm.md.
- Precision: matmuls in `dtype` (e.g. bfloat16), accumulated in float32; gates, states, softmax,
  outputs and parameters are float32.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fgjax.ops.wavefront import (  # noqa: F401  (re-exported: public API of this module)
    SCANS, CellFn, Group, Schedule, attention_mask, per_cell_scan, take, wavefront_scan,
    wavefront_schedule)

GATES = ('i', 'f_up', 'f_left', 'o', 'g')
OUTPUTS = ('paper', 'standard')
QUERIES = ('mean', 'up', 'left', 'concat')
GATE_INITS = ('unit', 'fan_in')
REGIONS = ('grid', 'causal')


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


@functools.lru_cache(maxsize=None)
def region_mask(height: int, width: int, region: str = 'causal',
                window: int | None = None) -> np.ndarray:
  """(H*W, H*W) bool: row i*W+j (a cell) allows column u*W+v (a location). 'causal': u <= i,
  v <= j and, with a window, i-u, j-v <= window (`attention_mask`); 'grid': every location, or
  |i-u|, |j-v| <= window."""
  if region == 'causal':
    return attention_mask(height, width, window)
  if region != 'grid':
    raise ValueError(f'unknown region {region!r}; valid: {", ".join(REGIONS)}')
  i, j, u, v = np.ix_(*(np.arange(s) for s in (height, width, height, width)))
  m = np.ones((height, width, height, width), bool)
  if window is not None:
    m = (np.abs(i - u) <= window) & (np.abs(j - v) <= window)
  return m.reshape(height * width, height * width)


def region_sizes(height: int, width: int, region: str = 'causal',
                 window: int | None = None) -> np.ndarray:
  """(H, W) int: how many locations cell (i, j) may attend to."""
  return region_mask(height, width, region, window).sum(1).reshape(height, width)


def uniform_mass(height: int, width: int, region: str = 'causal',
                 window: int | None = None) -> np.ndarray:
  """(H, W) float64: sum over cells of uniform attention over each cell's region, the total
  attention each location gets when no cell prefers any location: 1 on the whole grid,
  (H_H - H_u)(H_W - H_v) on the causal rectangles (H_n the n-th harmonic number)."""
  m = region_mask(height, width, region, window).astype(np.float64)
  return (m / m.sum(1, keepdims=True)).sum(0).reshape(height, width)


def cell_statistics(attention: jax.Array) -> tuple[jax.Array, jax.Array]:
  """attention (B, H, W, H, W) -> (own (B, H, W): L at the cell's own location, entropy
  (B, H, W): -sum L log L in nats, 0 log 0 = 0), float32."""
  n, height, width = attention.shape[:3]
  att = attention.astype(jnp.float32).reshape(n, height * width, height * width)
  own = jnp.diagonal(att, axis1=1, axis2=2).reshape(n, height, width)
  logs = jnp.log(jnp.where(att > 0, att, 1.0))
  entropy = -jnp.sum(jnp.where(att > 0, att * logs, 0.0), axis=-1)
  return own, entropy.reshape(n, height, width)


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

  def _scan(self, cell, per_cell, height, width, batch, w_up, w_left, init, key_mask=None,
            auto_groups=1):
    dot = functools.partial(_dot, dtype=self.dtype, precision=self.precision)
    args = (cell, per_cell, height, width, batch, w_up, w_left, init, dot)
    if self.scan == 'per_cell':
      return per_cell_scan(*args)
    groups = self.scan_groups or auto_groups
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
  """Spatial LSTM with soft location attention, eq. (2)-(4).

  `__call__(gates_x, init=None)`: gates_x (B,H,W,5*hidden) = W_x vec(B_uv) per location (see
  `BilinearGateInput`), init = (h0, c0) or None. Returns (h (B,H,W,hidden), attention (B,H,W,H,W))
  with attention[n,i,j,u,v] = L_{u,v} at cell (i,j): softmax over (u,v) of U h_prev, zero outside
  the cell's region (`region_mask`). The cell input is sum_uv L_uv gates_x[u,v].
  Extra attributes: region ('causal': the rectangle u <= i, v <= j, default; 'grid': every
  location), window (None: the whole region; r: at most r rows/columns away), query ('mean',
  'up', 'left', 'concat'). Parameters: `attention_kernel` (q, H*W), `attention_bias` (H*W,),
  `w_up`, `w_left`, `bias`.
  """
  window: int | None = None
  query: str = 'mean'
  region: str = 'causal'

  @nn.compact
  def __call__(self, gates_x: jax.Array, init: tuple[jax.Array, jax.Array] | None = None):
    self._check()
    if self.query not in QUERIES:
      raise ValueError(f'unknown query {self.query!r}; valid: {", ".join(QUERIES)}')
    if self.region not in REGIONS:
      raise ValueError(f'unknown region {self.region!r}; valid: {", ".join(REGIONS)}')
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
    mask = region_mask(height, width, self.region, self.window)
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

    h, att = self._scan(cell, mask, height, width, n, w_up, w_left, init, key_mask=mask,
                        auto_groups=2 if self.region == 'causal' else 1)
    if keys is not None:
      att = take(att, np.argsort(keys), 2)
    return h.reshape(n, height, width, self.hidden), att.reshape(n, height, width, height, width)


class BilinearGateInput(nn.Module):
  """X_uv = W_x vec(a_uv b_uv^T): (B,H,W,Ca), (B,H,W,Cb) -> (B,H,W,5*hidden) float32.

  rank None: full kernel `kernel` (Ca, Cb, 5*hidden) (`bilinear_gate_inputs`); rank r: factors
  `p` (Ca, r), `q` (Cb, r), `r` (r, 5*hidden) (`low_rank_gate_inputs`). No bias (the LSTM's).
  `gate_init`: 'fan_in' (default) is LeCun's fan-in scaling of W_x (variance 1 / (Ca*Cb), of P and Q
  1 / Ca, 1 / Cb), under which a unit-norm vec(a b^T) gives gate inputs of standard deviation
  1 / sqrt(Ca*Cb) (0.0156 at 64x64, 0.0019 at 512x512); 'unit' gives W_x (and P, Q) unit
  variance, R fan-in, so a unit-norm vec(a b^T) gives gate inputs of variance 1 (the l2-normalised
  bilinear features of `fgjax.models.bilinear_lstm` have unit norm).
  """
  hidden: int
  rank: int | None = None
  dtype: Any = jnp.float32
  precision: Any = None
  gate_init: str = 'fan_in'

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    if self.gate_init not in GATE_INITS:
      raise ValueError(f'unknown gate_init {self.gate_init!r}; valid: {", ".join(GATE_INITS)}')
    ca, cb, g = a.shape[-1], b.shape[-1], 5 * self.hidden
    kw = dict(dtype=self.dtype, precision=self.precision)
    unit = self.gate_init == 'unit'
    if self.rank is None:
      init = nn.initializers.variance_scaling(float(ca * cb) if unit else 1.0, 'fan_in',
                                              'truncated_normal', in_axis=(0, 1), out_axis=2)
      return bilinear_gate_inputs(a, b, self.param('kernel', init, (ca, cb, g), jnp.float32), **kw)
    lecun = nn.initializers.lecun_normal()
    factor = lambda fan: nn.initializers.variance_scaling(float(fan), 'fan_in', 'truncated_normal')
    p = self.param('p', factor(ca) if unit else lecun, (ca, self.rank), jnp.float32)
    q = self.param('q', factor(cb) if unit else lecun, (cb, self.rank), jnp.float32)
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
