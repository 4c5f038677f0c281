"""Spatially recurrent bilinear attention network (Wu & Wang 2017, "Where to Focus"), Linen module.

Source: seed 000 (/work/shared/seeds/000_*.txt), sections 3.1-3.4 and 4.2. Data flow:

  images -> stream A (VGG-D relu5_4) and stream B (VGG-M relu5), cropped to a common K x K grid
         -> [optional 1x1 projections to d_A, d_B channels + ReLU]
         -> per-location bilinear features B_uv = a_uv b_uv^T (eq. 1), never materialised:
            X_uv = W_x vec(B_uv) by einsum (full kernel or low rank, `BilinearGateInput`)
         -> layer 1: spatial LSTM with causal soft location attention (eq. 2-4), hidden 512,
            initial state from eq. (7)
         -> layer 2: spatial LSTM over layer 1's hidden states (eq. 2 without attention)
         -> readout ("flattening", sec. 4.2) -> dropout -> linear k-way softmax layer (eq. 6).

Memory: full bilinear inputs are d_A*d_B per location (512*512 = 262,144), so the full W_x is
d_A*d_B*5*hidden = 671M parameters at hidden 512: use `proj_dim_a/b` (e.g. 64x64 -> 21M) or
`rank` (W_x = ((a P) * (b Q)) R, rank r: (d_A + d_B + 5*hidden) * r parameters).

Choices the paper leaves open (all config options, module docstring of `spatial_lstm` for the
cell itself):
- `input_norm`: 'sqrt_l2' (default) applies B-CNN's signed square root and l2 normalisation to each
  B_uv. Both factor through the outer product (sign(a_i b_j) sqrt|a_i b_j| = s(a_i) s(b_j) with
  s(x) = sign(x) sqrt|x|, and |s(a) s(b)^T| = |s(a)| |s(b)|), so it is applied to a_uv and b_uv
  separately, exactly. 'none' feeds raw products (relu5 magnitudes make the gates saturate).
- `init_source` for eq. (7): 'gate_inputs' (default) feeds f_init the mean of X_uv = W_x vec(B_uv),
  which is W_x vec(mean_uv B_uv): eq. (7)'s argument through the (shared) input projection, a
  5*hidden-wide factorisation of f_init's first layer; 'bilinear' is literal (mean_uv vec(B_uv),
  d_A*d_B wide: use with projections); 'zeros' gives no initial state. Layer 2 gets its own
  (h0, c0) from f_init of the mean of layer 1's hidden states ('zeros' turns this off too).
- Dropout 0.5 "at all non-recurrent connections": on the bilinear factors a_uv, b_uv (dropping an
  entry of a drops a row of B_uv; elementwise dropout on B_uv would need B materialised), on layer
  1's hidden states entering layer 2, and on the readout entering the classifier.
- `readout`: 'flatten' (default, "followed by ... flattening": K*K*hidden features), 'mean' (over
  cells), 'last' (cell (K-1, K-1), the only one whose causal region is the whole grid).
Outputs: `logits`, `features` (the readout), `attention` (B, K, K, K, K): L at every cell, and
`attention_mass` (B, K, K): sum over cells of L_uv, the quantity of eq. (5)'s penalty.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgjax.models import bilinear, fields
from fgjax.models import spatial_lstm as slstm
from fgjax.ops import bilinear as bops

READOUTS = ('flatten', 'mean', 'last')
INPUT_NORMS = ('sqrt_l2', 'none')
INIT_SOURCES = ('gate_inputs', 'bilinear', 'zeros')


def normalise_factor(x: jax.Array, eps: float = 1e-5, l2_eps: float = 1e-12) -> jax.Array:
  """s(x) / |s(x)| with s(x) = sign(x) sqrt(|x| + eps), over the channel axis, float32.

  For two factors, normalise_factor(a) (outer) normalise_factor(b) is the per-location B-CNN
  normalisation of a b^T (signed sqrt, then l2), up to the eps placement.
  """
  x = x.astype(jnp.float32)
  s = jnp.sign(x) * jnp.sqrt(jnp.abs(x) + eps)
  return s / jnp.maximum(jnp.linalg.norm(s, axis=-1, keepdims=True), l2_eps)


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
    window: -1 = attention over the whole causal rectangle u <= i, v <= j; r >= 0 = at most r
      rows/columns back (0: no attention, the plain cell). None is read as -1.
    query: attention query from the cell's predecessors: 'mean' | 'up' | 'left' | 'concat'
      (`AttentiveSpatialLSTM`).
    output: 'paper' (h = tanh(c * o), eq. 2 as printed) or 'standard' (o * tanh(c)).
    init_source: eq. (7)'s initial states: 'gate_inputs' | 'bilinear' | 'zeros' (module docstring).
    input_norm: per-location signed sqrt + l2 of B_uv: 'sqrt_l2' | 'none' (module docstring).
    readout: 'flatten' | 'mean' | 'last' (module docstring).
    dropout_rate: on the non-recurrent connections (paper: 0.5), in [0, 1).
    scan: 'wavefront' (default) or 'per_cell' (reference; slow).
    scan_groups: wavefront scans per LSTM; 0 = auto (1 for the plain layer, 2 for the attentive
      one; `SpatialLSTM`). None is read as 0.
    attention_penalty: lambda of eq. (5), >= 0 (paper: 1). Read by the loss
      (`fgjax.methods.bilinear_lstm.loss_fn`), not by __call__.
    attention_tau: tau of eq. (5), >= 0 (default 1: every cell spreads one unit of attention over
      the K*K locations, so equal total attention per location is 1). Read by the loss.
    label_smoothing: of the cross-entropy. Read by the loss.
    dtype: compute dtype of projections and LSTM matmuls; states, softmax, params are float32.
  """
  num_classes: int
  hidden: int = 512
  num_layers: int = 2
  rank: int | None = 0
  window: int | None = -1
  query: str = 'mean'
  output: str = 'paper'
  init_source: str = 'gate_inputs'
  input_norm: str = 'sqrt_l2'
  readout: str = 'flatten'
  dropout_rate: float = 0.5
  scan: str = 'wavefront'
  scan_groups: int | None = 0
  attention_penalty: float = 1.0
  attention_tau: float = 1.0
  label_smoothing: float = 0.0
  dtype: Any = jnp.float32

  def __post_init__(self):
    fields.check_choices(self, {'readout': READOUTS, 'input_norm': INPUT_NORMS,
                                'init_source': INIT_SOURCES, 'query': slstm.QUERIES,
                                'output': slstm.OUTPUTS, 'scan': tuple(slstm.SCANS)})
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
    """`window` as the cell takes it: None for the whole causal rectangle."""
    return None if self.window is None or self.window < 0 else self.window

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    a, b = bilinear.two_stream_maps(self, images, train)
    b = a if b is None else b  # symmetric [D,D]: the same (projected) map on both sides
    if self.input_norm == 'sqrt_l2':
      a, b = normalise_factor(a), normalise_factor(b)
    drop = lambda x: nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    a, b = drop(a), drop(b)
    n, k_h, k_w = a.shape[:3]

    gates_x = slstm.BilinearGateInput(self.hidden, self.rank or None, dtype=self.dtype,
                                      name='gate_input')(a, b)
    init1 = init2 = None
    if self.init_source == 'gate_inputs':
      init1 = slstm.InitialState(self.hidden, dtype=self.dtype, name='init_1')(gates_x)
    elif self.init_source == 'bilinear':
      mean_b = bops.bilinear_pool(a, b).reshape(n, -1)
      init1 = slstm.InitialState(self.hidden, dtype=self.dtype, name='init_1')(mean_b)
    h, att = slstm.AttentiveSpatialLSTM(
        self.hidden, output=self.output, dtype=self.dtype, scan=self.scan,
        scan_groups=self.scan_groups or None, window=self.attention_window, query=self.query,
        name='lstm_1')(gates_x, init1)
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
