"""bilinear_lstm: Wu & Wang 2017, "Where to Focus". Model and settings: fgjax.models.bilinear_lstm.

Loss, eq. (5): cross-entropy + lambda * sum_uv (tau_uv - sum_cells L_uv)^2 (+ gamma * sum Theta^2,
which is optax weight decay: `add_decayed_weights(w)` adds w * Theta to the gradient, the gradient
of (w/2) * sum Theta^2, so gamma = 1e-5 in eq. (5) is `config.optim.weight_decay = 2e-5`; the
recipe decays every weight matrix, `DECAY_PATTERN`, not only those named `kernel`).
- lambda = `config.model.attention_penalty` (paper: 1), averaged over the batch.
- tau = `config.model.attention_tau`. The paper asks tau >= K^2 / D^ (D^ undefined). In Xu et al.
  2015, "Show, Attend and Tell" (the penalty's source) the bound is (number of locations) /
  (number of steps); here every one of the K*K cells spreads a unit of attention over the K*K
  locations, so the bound is 1 and tau = 1 (the default) asks for equal total attention per
  location. tau_uv: `config.model.attention_target` ('uniform': tau times the total that uniform
  attention over the cells' regions gives location uv, tau on the whole grid; 'constant': tau).
Diagnostics (`eval_metrics`, `diagnose`): how much of each cell's attention stays on its own
location, how far from uniform it is, and how much of it lands on the object box.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from fgjax import losses
from fgjax.methods import bcnn
from fgjax.methods.common import Method
from fgjax.methods.two_stream import check_two_streams, two_stream_pretrained
from fgjax.models import spatial_lstm as slstm
from fgjax.models.bilinear_lstm import BilinearLSTM
from fgjax.visualisation import panels

# Weight decay on every weight matrix of the model (eq. 5 decays "all the model parameters"; biases
# and normalisation scales are left out, as usual): kernels, the recurrent matrices of the spatial
# LSTMs and the low-rank factors of W_x. The schema's 'kernel$' misses the last two.
DECAY_PATTERN = r'(kernel|/w_up|/w_left|gate_input/[pqr])$'

# What fgjax did before these fields existed: a config.json without them is read with these values
# (`migrate_model_config`), so an older run resumes and evaluates as it was trained.
LEGACY_FIELDS = {'attention_region': 'causal', 'attention_target': 'constant',
                 'gate_init': 'fan_in', 'dropout_mask': 'factors'}

# `diagnose` thresholds. Uniform attention puts 1/n on a cell's own location (n: the locations it
# may see; 1/64 on an 8x8 grid, 0.10 on average over the 8x8 causal rectangles of more than one
# location); above 0.9 nearly every cell's input is its own location and eq. (4)'s expectation
# does nothing: the attention is off.
SELF_ONLY_MASS = 0.9
# Entropy as a fraction of log n. Small logits (initialisation) give > 0.99; 2.5x the weight on an
# eighth of 64 locations gives 0.983, 3x gives 0.974: above 0.98 the attention prefers no location
# more than that, i.e. it is uniform and eq. (4) is a mean over the region.
UNIFORM_ENTROPY = 0.98


def check_config(config) -> None:
  """The streams' backbones, layers and weight directories (`check_two_streams`); the other
  fields are checked by `BilinearLSTM` itself."""
  check_two_streams(config, min_grid=1)


def attention_penalty(attention_mass, tau):
  """sum_uv (tau_uv - sum_cells L_uv)^2 per image: (B, K, K) -> (B,), float32 (eq. 5); tau a
  scalar or (K, K) targets (`penalty_targets`)."""
  return jnp.sum((tau - attention_mass.astype(jnp.float32)) ** 2, axis=(1, 2))


def _window(model) -> int | None:
  """config.model.window as the cell takes it (None: the whole region)."""
  return None if model.window is None or model.window < 0 else int(model.window)


def _region(model) -> str:
  """config.model.attention_region; a model section without it is an older run's: 'causal'."""
  return getattr(model, 'attention_region', LEGACY_FIELDS['attention_region'])


def location_targets(grid: tuple[int, int], region: str, window: int | None, tau: float,
                     target: str):
  """tau_uv of eq. (5): 'constant' the scalar tau (the literal reading); 'uniform' (K_h, K_w)
  float32, tau times the total that uniform attention over every cell's region gives each
  location (`slstm.uniform_mass`): tau on the whole grid, Xu et al.'s penalty; on the causal
  rectangles tau (H_{K_h} - H_u)(H_{K_w} - H_v) (H_n the n-th harmonic number), for which uniform
  attention has penalty 0 and self-only attention (the literal reading's only zero) does not."""
  if target == 'constant':
    return tau
  return (tau * slstm.uniform_mass(*grid, region, window)).astype(np.float32)


def penalty_targets(model, grid: tuple[int, int]):
  """`location_targets` of config.model `model` on a grid."""
  return location_targets(tuple(grid), _region(model), _window(model), model.attention_tau,
                          model.attention_target)


def loss_fn(outputs, batch, config):
  m = config.model
  ce = losses.cross_entropy(outputs['logits'], batch['label'], m.label_smoothing)
  tau = penalty_targets(m, outputs['attention_mass'].shape[1:])
  penalty = attention_penalty(outputs['attention_mass'], tau).mean()
  loss = ce + m.attention_penalty * penalty
  return loss, {'accuracy': losses.accuracy(outputs['logits'], batch['label']),
                'cross_entropy': ce, 'attention_penalty': penalty}


def predict_fn(outputs):
  att = outputs['attention']
  own, entropy = slstm.cell_statistics(att)
  return {'logits': outputs['logits'], 'features': outputs['features'],
          'attention_mass': outputs['attention_mass'], 'last_cell_attention': att[:, -1, -1],
          'attention_self': own, 'attention_entropy': entropy}


def cells_in_box(bbox: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """(N, K_h, K_w) bool: grid cells whose centre ((u + 0.5) / K_h, (v + 0.5) / K_w) lies in the
  box; bbox (N, 4) = (ymin, xmin, ymax, xmax) normalised. The grid is taken to tile the image,
  exact for stride-aligned maps."""
  cy, cx = (np.arange(grid[0]) + 0.5) / grid[0], (np.arange(grid[1]) + 0.5) / grid[1]
  y = (cy[None, :, None] >= bbox[:, 0, None, None]) & (cy[None, :, None] <= bbox[:, 2, None, None])
  x = (cx[None, None, :] >= bbox[:, 1, None, None]) & (cx[None, None, :] <= bbox[:, 3, None, None])
  return y & x


def attention_in_box(attention: np.ndarray, bbox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Fraction of each map's mass on grid cells inside the box (`cells_in_box`), and the fraction
  of cells that are (the box's area on the grid). attention (N, K_h, K_w) >= 0."""
  n = attention.shape[0]
  inside = cells_in_box(bbox, attention.shape[1:])
  att = attention.astype(np.float64)
  mass = (att * inside).sum((1, 2)) / np.maximum(att.sum((1, 2)), 1e-30)
  return mass, inside.reshape(n, -1).mean(1)


def causal_chance_in_box(bbox: np.ndarray, grid: tuple[int, int], window: int | None,
                        region: str = 'causal'):
  """The in-box fraction of the aggregated mass if every cell attended uniformly over its region
  (causal: rectangle u <= i, v <= j; grid: every location; cut to `window`): mean over cells of
  |box & region| / |region|, per image (N,). The fair 'no preference' level of `attention_mass`:
  under causal masking the top-left cells cannot see a box in the bottom-right, so the box's area
  fraction is not it (on the whole grid without a window, it is)."""
  inside = cells_in_box(bbox, grid).reshape(len(bbox), -1).astype(np.float64)
  mask = slstm.region_mask(*grid, region, window).astype(np.float64)  # (cells, keys)
  seen = inside @ mask.T  # (N, cells): in-box keys each cell may attend to
  return (seen / mask.sum(1)).mean(1)


def _mean_ratio(num: np.ndarray, den: np.ndarray) -> float:
  """Mean of num / den over the images with den > 0 (NaN when there are none)."""
  ok = den > 0
  return float((num[ok] / den[ok]).mean()) if ok.any() else float('nan')


def cell_diagnostics(own: np.ndarray, entropy: np.ndarray, sizes: np.ndarray) -> dict:
  """`attention_self_mass` (mean L at the cell's own location) and `attention_entropy` (mean of
  entropy / log(locations the cell may see), 1 = uniform), over images and the cells that may see
  more than one location (`sizes` (K_h, K_w)); {} when none may."""
  free = sizes > 1
  if not free.any():  # window 0: no cell attends, nothing to diagnose
    return {}
  own, entropy = np.asarray(own, np.float64), np.asarray(entropy, np.float64)
  fraction = entropy[:, free] / np.log(sizes[free])
  return {'attention_self_mass': float(own[:, free].mean()),
          'attention_entropy': float(fraction.mean())}


def eval_metrics(gathered, config) -> dict:
  """Layer 1's attention: on its own location or spread (`cell_diagnostics`), and where it goes
  against the object box (datasets with 'bbox': synthetic_parts, CUB)."""
  region, window = _region(config.model), _window(config.model)
  grid = tuple(np.shape(gathered['attention_mass'])[1:])
  out = {}
  if 'attention_self' in gathered:
    out.update(cell_diagnostics(gathered['attention_self'], gathered['attention_entropy'],
                                slstm.region_sizes(*grid, region, window)))
  if 'bbox' not in gathered:  # the dataset has no object boxes
    return out
  bbox = np.asarray(gathered['bbox'], np.float64)
  in_box = {name: attention_in_box(gathered[name], bbox)
            for name in ('attention_mass', 'last_cell_attention')}
  for name, (mass, area) in in_box.items():
    out[f'{name}_in_box'] = float(mass.mean())
    out[f'{name}_in_box_ratio'] = _mean_ratio(mass, area)
  chance = causal_chance_in_box(bbox, grid, window, region)
  out['attention_mass_causal_chance'] = float(chance.mean())
  out['attention_mass_causal_ratio'] = _mean_ratio(in_box['attention_mass'][0], chance)
  out['box_area_fraction'] = float(area.mean())
  return out


def chosen_cell(cell, grid: tuple[int, int]) -> tuple[int, int]:
  """(u, v) of the `cell` option (None: the last cell, whose causal region is the whole grid);
  negative indices count from the end, as in Python."""
  u, v = (-1, -1) if cell is None else (int(cell[0]), int(cell[1]))
  if not (-grid[0] <= u < grid[0] and -grid[1] <= v < grid[1]):
    raise ValueError(f'--cell={u},{v} is outside the {grid[0]}x{grid[1]} attention grid (rows '
                     f'0..{grid[0] - 1}, columns 0..{grid[1] - 1}; negative counts from the end)')
  return u % grid[0], v % grid[1]


def attention_panels(outputs, index, config, options):
  """Layer 1's location attention: the mass sum_uv L_uv that eq. (5) penalises (aggregated over
  cells), and the attention L_uv of one cell (options['cell'], default the last cell) over the
  grid. The grid is drawn as tiling the input, as `attention_in_box` scores it."""
  mass = np.asarray(outputs['attention_mass'][index], np.float64)
  att = np.asarray(outputs['attention'][index], np.float64)
  grid = mass.shape
  u, v = chosen_cell(options.get('cell'), grid)
  where = (f'causal: rows <= {u}, cols <= {v}' if _region(config.model) == 'causal'
           else 'whole grid')
  return [
      panels.Panel(title='attention mass: sum over cells of L_uv\n(layer 1, aggregated)',
                     heatmap=mass, vmin=0.0, colorbar_label='mass'),
      panels.Panel(title=f'attention of cell ({u},{v}) over the grid\n({where})',
                     heatmap=att[u, v], vmin=0.0,
                     marker=((u + 0.5) / grid[0], (v + 0.5) / grid[1]),
                     colorbar_label='L_uv')]


def migrate_model_config(model: dict) -> list[str]:
  """`Method.migrate_model_config`: a config.json written before `LEGACY_FIELDS` existed gets the
  values fgjax used then (its defaults differ from today's)."""
  messages = []
  for field, value in LEGACY_FIELDS.items():
    if field not in model:
      model[field] = value
      messages.append(f'config.model.{field} absent (written before fgjax had it): {value!r}, '
                      'the behaviour it was trained with')
  return messages


def diagnose(metrics: dict) -> list[str]:
  """`Method.diagnose`: the location attention switched off (every cell attends to itself) or
  doing nothing (uniform), from `cell_diagnostics`' keys."""
  out = []
  own, entropy = metrics.get('attention_self_mass'), metrics.get('attention_entropy')
  if own is not None and own > SELF_ONLY_MASS:
    out.append(f'attention_self_mass = {own:.3f} > {SELF_ONLY_MASS}: layer 1\'s cells attend '
               'almost only to their own location, so the location attention (eq. 3-4) is off '
               '(with attention_region=causal, eq. 5\'s penalty with attention_target=constant '
               'pulls it there)')
  if entropy is not None and entropy > UNIFORM_ENTROPY:
    out.append(f'attention_entropy = {entropy:.3f} > {UNIFORM_ENTROPY}: layer 1\'s attention is '
               'uniform over the locations each cell may see, so eq. (4) is a plain mean and the '
               'attention selects nothing')
  return out


METHOD = Method(
    name='bilinear_lstm', model=BilinearLSTM, loss_fn=loss_fn, predict_fn=predict_fn,
    check_config=check_config, pretrained=two_stream_pretrained,
    description='two-stream bilinear features -> 2-layer 2-D spatial LSTM with soft location '
                'attention (Wu & Wang 2017)',
    eval_outputs=('attention_mass', 'last_cell_attention', 'attention_self',
                  'attention_entropy'),
    eval_batch_keys=('bbox',), eval_metrics=eval_metrics, attention_panels=attention_panels,
    migrate_model_config=migrate_model_config, diagnose=diagnose, readings_before=LEGACY_FIELDS)


def bilinear_lstm_recipe(c: ml_collections.ConfigDict, runlocal: bool = False
                         ) -> ml_collections.ConfigDict:
  """bilinear_lstm as Wu & Wang 2017 (sec. 4.2) run it on CUB / Aircraft / Cars.

  The B-CNN [D,M] data recipe (`bcnn_dm_recipe`: 448 input, flip and +-5/+-3 px shifts) with
  D = VGG-19 conv5_4+relu (the paper's D-Net, 28x28) and M = VGG-M conv5+relu (27x27), cropped to
  27x27. A 2-layer spatial LSTM, hidden 512, attention over the whole grid, dropout 0.5 (one mask
  on B), lambda = 1, tau = 1, gamma = 1e-5 (optax weight_decay 2e-5 on every weight matrix,
  `DECAY_PATTERN`; see fgjax.methods.bilinear_lstm).
  The paper does not say how the 512x512 bilinear input reaches the LSTM (a full W_x would hold
  671M parameters): this recipe uses the rank-512 factorisation (1.8M; config.model.rank), which
  keeps both streams' 512 channels. Two-step training (sec. 4.2): new layers with the backbones
  frozen, then everything at lr 0.001; epoch counts are this recipe's choice (not in the paper).

  `runlocal` shrinks it to a CPU smoke run on the real data: 112x112 input (7x7 grid),
  hidden 64, rank 64, batch 8, 2% of an epoch per stage.
  """
  c = bcnn.bcnn_dm_recipe(c)
  c.method = 'bilinear_lstm'
  c.model = METHOD.default_model_config()
  c.model.backbone_a, c.model.layer_a = 'vgg19', 'relu5_4'
  c.model.backbone_b, c.model.layer_b = 'vggm', 'relu5'
  c.model.hidden = 512
  c.model.rank = 512
  c.optim.weight_decay = 2e-5
  c.optim.weight_decay_pattern = DECAY_PATTERN
  c.stages = (
      ml_collections.ConfigDict({'name': 'new_layers', 'num_epochs': 10.0,
                                 'frozen': '^backbone', 'learning_rate': 0.01}),
      ml_collections.ConfigDict({'name': 'all', 'num_epochs': 30.0, 'learning_rate': 0.001}))
  if runlocal:
    c.dataset.resize_size, c.dataset.resize_width = 118, 122
    c.dataset.image_size = 112
    c.model.hidden = c.model.rank = 64
    c.train.global_batch_size = c.eval.batch_size = 8
    c.train.log_every_steps = 5
    for stage in c.stages:
      stage.num_epochs = 0.02
  return c


def bilinear_lstm_reid_recipe(c: ml_collections.ConfigDict, query_split: str, gallery_split: str,
                              runlocal: bool = False) -> ml_collections.ConfigDict:
  """`bilinear_lstm_recipe` for re-identification (Wu & Wang 2017, table 3): identity
  classification in training, CMC and mAP between `query_split` and `gallery_split`
  (eval.protocol='reid').

  The ranking feature is the mean of the last layer's hidden states over the grid (readout 'mean',
  512-d): the paper's flattened readout would be 27*13*512 = 180k dimensions per image at 448x224.
  """
  c = bilinear_lstm_recipe(c, runlocal)
  c.model.readout = 'mean'
  c.dataset.eval_split = query_split
  c.eval.protocol = 'reid'
  c.eval.query_split, c.eval.gallery_split = query_split, gallery_split
  return c
