"""Spatially recurrent bilinear attention network (Wu & Wang 2017, "Where to Focus"), Linen module.

Source: Wu & Wang 2017, "Where to Focus: Deep Attention-based Spatially Recurrent Bilinear
Networks for Fine-Grained Visual Recognition", sections 3.1-3.4 and 4.2. Data flow:

  images -> stream A (VGG-D relu5_4) and stream B (VGG-M relu5), cropped to a common K x K grid
         -> [optional 1x1 projections to d_A, d_B channels + ReLU]
         -> per-location bilinear features B_uv = a_uv b_uv^T (eq. 1), never materialised:
            X_uv = W_x vec(B_uv) by einsum (full kernel or low rank, `BilinearGateInput`)
         -> layer 1: spatial LSTM with soft location attention (eq. 2-4) over the whole grid or
            the causal rectangle, hidden 512, initial state from eq. (7)
         -> layer 2: spatial LSTM over layer 1's hidden states (eq. 2 without attention)
         -> readout ("flattening", sec. 4.2) -> dropout -> linear k-way softmax layer (eq. 6).

Memory: full bilinear inputs are d_A*d_B per location (512*512 = 262,144), so the full W_x is
d_A*d_B*5*hidden = 671M parameters at hidden 512: use `proj_dim_a/b` (e.g. 64x64 -> 21M) or
`rank` (W_x = ((a P) * (b Q)) R, rank r: (d_A + d_B + 5*hidden) * r parameters).

Choices the paper leaves open (all config options, module docstring of `spatial_lstm` for the
cell itself):
- `attention_region` (eq. 3-4): 'grid' (default) attends over all K x K locations, as the text
  reads ("a softmax over K x K locations", "1-of-K^2 values"); 'causal' is the rectangle
  u <= i, v <= j of the equations' sums. The attended values are B (CNN outputs, known before the
  recurrence) and the logits need only the cell's predecessors, so neither touches the 2-D
  recurrence. Under 'causal', eq. (5)'s literal penalty with tau = 1 has a single zero, every cell
  attending only to itself: see `attention_target`.
- `input_norm`: 'sqrt_l2' (default) applies B-CNN's signed square root and l2 normalisation to each
  B_uv. Both factor through the outer product (sign(a_i b_j) sqrt|a_i b_j| = s(a_i) s(b_j) with
  s(x) = sign(x) sqrt|x|, and |s(a) s(b)^T| = |s(a)| |s(b)|), so it is applied to a_uv and b_uv
  separately, exactly. Every location then has unit norm: B-CNN's magnitude cue (how strongly a
  location responds) is gone. 'sqrt_l2_image' keeps it: signed sqrt, then one l2 scale per image,
  chosen so that the locations' mean squared norm is 1 (sum_uv |B_uv|^2 = K^2; each factor is
  divided by the square root of that scale). 'none' feeds raw products (relu5 magnitudes make the
  gates saturate).
- `gate_init`: 'unit' (default) initialises W_x so that a unit-norm vec(B_uv) gives gate inputs of
  unit variance; 'fan_in' (LeCun over the D_A*D_B inputs) gives them standard deviation
  1 / sqrt(D_A*D_B) (0.0019 at 512x512), which leaves the gates at their biases and the attention
  without gradient (`fgjax.models.spatial_lstm.BilinearGateInput`).
- `init_source` for eq. (7): 'gate_inputs' (default) feeds f_init the mean of X_uv = W_x vec(B_uv),
  which is W_x vec(mean_uv B_uv): eq. (7)'s argument through the (shared) input projection, a
  5*hidden-wide factorisation of f_init's first layer; 'bilinear' is literal (mean_uv vec(B_uv),
  d_A*d_B wide: use with projections); 'zeros' gives no initial state. Layer 2 gets its own
  (h0, c0) from f_init of the mean of layer 1's hidden states ('zeros' turns this off too).
- Dropout 0.5 "at all non-recurrent connections": on the LSTM's input B, on layer 1's hidden
  states entering layer 2, and on the readout entering the classifier. `dropout_mask` 'bilinear'
  (default) drops each entry of B_uv with probability p: B is never materialised, so the mask is
  the outer product m n^T of masks on a_uv and b_uv that keep with probability sqrt(1 - p) each
  (rescaled by 1 / sqrt(1 - p) each), so an entry of B is kept with probability 1 - p and
  rescaled by 1 / (1 - p); entries of one row or column are dropped together. 'factors' drops a
  and b with rate p each, which keeps an entry of B with probability (1 - p)^2 (25% at p = 0.5).
- `readout`: 'flatten' (default, "followed by ... flattening": K*K*hidden features), 'mean' (over
  cells), 'last' (cell (K-1, K-1), the only one whose recurrence reads the whole grid).
Outputs: `logits`, `features` (the readout), `attention` (B, K, K, K, K): L at every cell, and
`attention_mass` (B, K, K): sum over cells of L_uv, the quantity of eq. (5)'s penalty.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgjax.models import bilinear, fields
from fgjax.models import spatial_lstm as slstm
from fgjax.ops import bilinear as bops

READOUTS = ('flatten', 'mean', 'last')
INPUT_NORMS = ('sqrt_l2', 'sqrt_l2_image', 'none')
INIT_SOURCES = ('gate_inputs', 'bilinear', 'zeros')
DROPOUT_MASKS = ('bilinear', 'factors')
ATTENTION_TARGETS = ('uniform', 'constant')


def _signed_sqrt(x: jax.Array, eps: float) -> jax.Array:
  x = x.astype(jnp.float32)
  return jnp.sign(x) * jnp.sqrt(jnp.abs(x) + eps)


def _root(squared: jax.Array, l2_eps: float, power: float = 0.5) -> jax.Array:
  """max(squared, l2_eps^2) ** power: the norm (power 1/2) floored at l2_eps, with a finite
  gradient at 0 (the gradient of |s| at s = 0 is 0 / 0)."""
  return jnp.maximum(squared, l2_eps ** 2) ** power


def normalise_factor(x: jax.Array, eps: float = 1e-5, l2_eps: float = 1e-12) -> jax.Array:
  """s(x) / |s(x)| with s(x) = sign(x) sqrt(|x| + eps), over the channel axis, float32.

  For two factors, normalise_factor(a) (outer) normalise_factor(b) is the per-location B-CNN
  normalisation of a b^T (signed sqrt, then l2), up to the eps placement. An all-zero location
  stays zero, with a finite gradient.
  """
  s = _signed_sqrt(x, eps)
  return s / _root(jnp.sum(s * s, axis=-1, keepdims=True), l2_eps)


def normalise_image(a: jax.Array, b: jax.Array, eps: float = 1e-5,
                    l2_eps: float = 1e-12) -> tuple[jax.Array, jax.Array]:
  """Signed sqrt of both factors (B, H, W, C), then one scale per image: B_uv = a_uv b_uv^T with
  mean_uv |B_uv|^2 = 1, so locations keep their relative magnitudes (`input_norm='sqrt_l2_image'`).
  Each factor is divided by the fourth root of mean_uv |s(a_uv)|^2 |s(b_uv)|^2."""
  sa, sb = _signed_sqrt(a, eps), _signed_sqrt(b, eps)
  squared = jnp.mean(jnp.sum(sa * sa, -1) * jnp.sum(sb * sb, -1), axis=(1, 2))[:, None, None, None]
  scale = _root(squared, l2_eps, 0.25)
  return sa / scale, sb / scale


def _at_least(model, field: str, low: int) -> None:
  value = getattr(model, field)
  if value is not None and value < low:
    raise ValueError(f'config.model.{field} must be >= {low}, got {value}')


class BilinearLSTM(bilinear.TwoStreamFields, kw_only=True):
  """Two-stream bilinear features -> 2-layer spatial LSTM with attention -> classifier.

  The fields are the method's settings (`config.model` of method bilinear_lstm), checked on
  construction. Streams: the fields of `fgjax.models.bilinear.TwoStreamFields` (backbone_a /
  layer_a / backbone_a_kwargs / backbone_a_pretrained, the same for stream B, allow_random_init,
  proj_dim_a / proj_dim_b); the maps come from `fgjax.models.bilinear.two_stream_maps` (one shared
  backbone when backbone_b is '', cropped to their common grid when the two differ).

  Attributes (besides the stream fields):
    num_classes: classifier outputs.
    hidden: LSTM hidden and cell size (paper: 512), both layers.
    num_layers: 1 or 2 (paper: 2); only layer 1 attends.
    rank: 0 for the full W_x (d_A*d_B*5*hidden parameters), r > 0 for the low-rank factorisation
      W_x = ((a P) * (b Q)) R of rank r (`BilinearGateInput`). None is read as 0.
    attention_region: 'grid' (every location) | 'causal' (the rectangle u <= i, v <= j); module
      docstring. Configs written before this field read as 'causal'.
    window: -1 = attention over the whole region; r >= 0 = at most r rows/columns away (back, for
      'causal'; either side, for 'grid'; 0: no attention, the plain cell). None is read as -1.
    query: attention query from the cell's predecessors: 'mean' | 'up' | 'left' | 'concat'
      (`AttentiveSpatialLSTM`).
    output: 'paper' (h = tanh(c * o), eq. 2 as printed) or 'standard' (o * tanh(c)).
    init_source: eq. (7)'s initial states: 'gate_inputs' | 'bilinear' | 'zeros' (module docstring).
    input_norm: signed sqrt + l2 of B_uv per location 'sqrt_l2', per image 'sqrt_l2_image', or
      'none' (module docstring).
    gate_init: W_x's initialisation, 'unit' | 'fan_in' (module docstring). Configs written before
      this field read as 'fan_in'.
    readout: 'flatten' | 'mean' | 'last' (module docstring).
    dropout_rate: on the non-recurrent connections (paper: 0.5), in [0, 1).
    dropout_mask: how dropout reaches B: 'bilinear' (each entry kept with 1 - p) | 'factors' (a and
      b each at rate p: (1 - p)^2); module docstring. Configs written before it read as 'factors'.
    scan: 'wavefront' (default) or 'per_cell' (reference; slow).
    scan_groups: wavefront scans per LSTM; 0 = auto (2 for causal attention, else 1;
      `SpatialLSTM`). None is read as 0.
    attention_penalty: lambda of eq. (5), >= 0 (paper: 1). Read by the loss
      (`fgjax.methods.bilinear_lstm.loss_fn`), not by __call__.
    attention_tau: tau of eq. (5), >= 0 (default 1: every cell spreads one unit of attention over
      the K*K locations, so equal total attention per location is 1). Read by the loss.
    attention_target: what eq. (5) asks of location (u, v)'s total attention: 'uniform' (tau times
      the total that uniform attention over every cell's region gives it: tau on the whole grid,
      tau (H_K - H_u)(H_K - H_v) on the causal rectangle) | 'constant' (tau, the literal reading,
      whose only zero under 'causal' is self-only attention). Read by the loss
      (`fgjax.methods.bilinear_lstm.location_targets`). Configs written before it read as
      'constant'.
    label_smoothing: of the cross-entropy. Read by the loss.
    dtype: compute dtype of projections and LSTM matmuls; states, softmax, params are float32.
  """
  num_classes: int
  hidden: int = 512
  num_layers: int = 2
  rank: int | None = 0
  attention_region: str = 'grid'
  window: int | None = -1
  query: str = 'mean'
  output: str = 'paper'
  init_source: str = 'gate_inputs'
  input_norm: str = 'sqrt_l2'
  gate_init: str = 'unit'
  readout: str = 'flatten'
  dropout_rate: float = 0.5
  dropout_mask: str = 'bilinear'
  scan: str = 'wavefront'
  scan_groups: int | None = 0
  attention_penalty: float = 1.0
  attention_tau: float = 1.0
  attention_target: str = 'uniform'
  label_smoothing: float = 0.0
  dtype: Any = jnp.float32

  def __post_init__(self):
    fields.check_choices(self, {'readout': READOUTS, 'input_norm': INPUT_NORMS,
                                'init_source': INIT_SOURCES, 'query': slstm.QUERIES,
                                'output': slstm.OUTPUTS, 'scan': tuple(slstm.SCANS),
                                'attention_region': slstm.REGIONS, 'gate_init': slstm.GATE_INITS,
                                'dropout_mask': DROPOUT_MASKS,
                                'attention_target': ATTENTION_TARGETS})
    for field, low in (('hidden', 1), ('rank', 0), ('proj_dim_a', 0), ('proj_dim_b', 0),
                       ('window', -1), ('scan_groups', 0)):
      _at_least(self, field, low)
    if self.num_layers not in (1, 2):
      raise ValueError(f'config.model.num_layers must be 1 or 2, got {self.num_layers}')
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'config.model.dropout_rate must be in [0, 1), got {self.dropout_rate}')
    for field in ('attention_penalty', 'attention_tau'):
      if getattr(self, field) < 0:
        raise ValueError(f'config.model.{field} must be >= 0, got {getattr(self, field)}')
    super().__post_init__()

  @property
  def attention_window(self) -> int | None:
    """`window` as the cell takes it: None for the whole region."""
    return None if self.window is None or self.window < 0 else self.window

  def _normalise(self, a, b):
    if self.input_norm == 'sqrt_l2':
      return normalise_factor(a), normalise_factor(b)
    if self.input_norm == 'sqrt_l2_image':
      return normalise_image(a, b)
    return a, b

  @property
  def factor_dropout_rate(self) -> float:
    """The rate of the masks on a and b: p ('factors'), or 1 - sqrt(1 - p) ('bilinear', so that
    an entry of B = a b^T is kept with probability 1 - p)."""
    if self.dropout_mask == 'factors':
      return self.dropout_rate
    return 1.0 - math.sqrt(1.0 - self.dropout_rate)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    a, b = bilinear.two_stream_maps(self, images, train)
    b = a if b is None else b  # symmetric [D,D]: the same (projected) map on both sides
    a, b = self._normalise(a, b)
    drop_factor = lambda x: nn.Dropout(self.factor_dropout_rate, deterministic=not train)(x)
    a, b = drop_factor(a), drop_factor(b)  # B = a b^T: the LSTM input's mask (`dropout_mask`)
    drop = lambda x: nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    n = a.shape[0]

    gates_x = slstm.BilinearGateInput(self.hidden, self.rank or None, dtype=self.dtype,
                                      gate_init=self.gate_init, name='gate_input')(a, b)
    init1 = init2 = None
    if self.init_source == 'gate_inputs':
      init1 = slstm.InitialState(self.hidden, dtype=self.dtype, name='init_1')(gates_x)
    elif self.init_source == 'bilinear':
      mean_b = bops.bilinear_pool(a, b).reshape(n, -1)
      init1 = slstm.InitialState(self.hidden, dtype=self.dtype, name='init_1')(mean_b)
    h, att = slstm.AttentiveSpatialLSTM(
        self.hidden, output=self.output, dtype=self.dtype, scan=self.scan,
        scan_groups=self.scan_groups or None, window=self.attention_window, query=self.query,
        region=self.attention_region, name='lstm_1')(gates_x, init1)
    if self.num_layers == 2:
      h = drop(h)
      if self.init_source != 'zeros':
        init2 = slstm.InitialState(self.hidden, dtype=self.dtype, name='init_2')(h)
      h = slstm.SpatialLSTM(self.hidden, output=self.output, dtype=self.dtype, scan=self.scan,
                            scan_groups=self.scan_groups or None, name='lstm_2')(h, init2)

    if self.readout == 'flatten':
      features = h.reshape(n, -1)
    elif self.readout == 'mean':
      features = h.mean(axis=(1, 2))
    else:
      features = h[:, -1, -1]
    logits = nn.Dense(self.num_classes, dtype=jnp.float32, name='classifier')(drop(features))
    return {'logits': logits.astype(jnp.float32), 'features': features,
            'attention': att, 'attention_mass': att.sum(axis=(1, 2))}
