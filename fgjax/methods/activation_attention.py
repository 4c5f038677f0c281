"""activation_attention: attention from classifier activations (Shen & Liu 2018, "Generating
Attention from Classifier Activations for Fine-grained Recognition").

Model: fgjax.models.activation_attention (eq. 1, Otsu mask, object features, multi-scale crops).
Losses here, per scale s and image (A = aggregated activations, M_b = Otsu mask, t = label,
background = the last of the L + 1 channels, h x w = the feature grid, W H in the paper):
  l1 = sum over M_b = 1 of -log p_t          (eq. 4, per-location softmax over L + 1)
  l0 = sum over M_b = 0 of -log p_bg          (eq. 3)
  w  = mean(M_b)                              (the attended area ratio)
  loss_loc = ((1 - w) l1 + w l0) / (h w)      (eq. 2; M_b and w carry no gradient)
  loss_obj = -log softmax(object logits)_t    (eq. 5)
  loss_s = loss_loc + loss_obj                (eq. 6), batch means
Training objective: sum over the computed scales of loss_s. Scale s + 1's input is cropped with
boxes from a mask without gradient, so no loss reaches another scale's parameters; stage s of
`scale_stages()` freezes every scale but s (fgjax.optim frozen groups), which is the paper's
"trained sequentially, each scale optimised independently" (section 4.4.2). `stage_inputs` tells
the model which scale a stage trains (`train_scale`): with `frozen_scales='inference'` (default)
the stage runs scales 1..s - 1 forward in inference mode (their loss is logged, without gradient),
scale s in training mode, and no later scale.

Config: `config.model` is the fields of fgjax.models.activation_attention.ActivationAttention
(their defaults and meanings are documented there): `losses` = 'both' | 'local' | 'object' is the
Table 5 ablation, `num_local` = n (Figure 8: 1, 2, 4, 8, 16), `num_scales`, the readings of the
paper's ambiguities, and `sequential_stages` / `first_trained_scale` / `frozen_scales`, which
`check_config` and `stage_inputs` read.

Evaluation (classification protocol; every scale computed): `logits` is the final multi-scale
prediction; eval_metrics adds Table 6 (acc_loc / acc_obj / acc_avg for every scale and 'ms' =
multi-scale), the attention-box IoU of every scale's (composed) box with the dataset's `bbox`
(section 5.5: 0.54 on CUB for scale 1), the mean box area in the original image
(`box_area_scale{s}`) and the box diagnostics `diagnose` reads: `box_area_frac_scale{s}` (the box
as a fraction of the input scale s sees) and `box_degenerate_frac_scale{s}` (boxes at most one
feature cell high or wide).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fgjax import default_config, losses
from fgjax.methods.common import Method, check_backbone
from fgjax.models import backbones as backbones_lib
from fgjax.models.activation_attention import ActivationAttention
from fgjax.visualisation import panels

# `diagnose` thresholds. A box covering > 90% of the input its scale sees on average crops
# (almost) nothing away: the next scale sees the same image and the object features are a global
# max-pool (the embedded fgvc benchmark's first runs: 93-95%, at chance accuracy). A box that
# localises an object stays well below unless the objects fill the images.
WHOLE_INPUT_AREA_FRAC = 0.9
# A box at most one feature cell (one backbone stride) high or wide means M_b collapsed to a line
# or a point; flagged when it is the case for most images (> half), not for a few small objects.
DEGENERATE_IMAGES_FRAC = 0.5
_ONE_CELL = 1.0 + 1e-3  # box sides are whole cells; the slack absorbs float32 box composition


def scale_stages(num_scales: int, epochs_per_scale: float, first: int = 1,
                 **optim_overrides) -> tuple:
  """config.stages training scale s (first..num_scales) in turn, every other scale frozen."""
  return tuple(ml_collections.ConfigDict({
      'name': f'scale{s}', 'num_epochs': float(epochs_per_scale),
      'frozen': rf'^scale(?!{s}/)\d+/', **optim_overrides}) for s in range(first, num_scales + 1))


def stage_inputs(config, stage) -> dict:
  """`Method.stage_inputs`: the `model.apply` keywords of the training steps of `stage` (an
  `fgjax.optim.Stage`). A sequential stage (`config.model.sequential_stages`, a non-empty
  `config.stages`, checked by `check_config` to train scale first_trained_scale + stage.index
  alone) with `frozen_scales='inference'` gives `train_scale`; otherwise nothing (every scale in
  training mode)."""
  m = config.model
  if not (m.sequential_stages and len(config.stages)) or m.frozen_scales != 'inference':
    return {}
  return {'train_scale': m.first_trained_scale + stage.index}


# The reading fgjax used before 2026-12 (`Method.readings_before`).
READINGS_BEFORE = {'frozen_scales': 'training'}


def migrate_model_config(model: dict) -> list[str]:
  """`Method.migrate_model_config`: a config.json of fgjax before 2026-12 has no
  `frozen_scales`; its stages ran every scale in training mode ('training')."""
  if 'frozen_scales' in model:
    return []
  model.update(READINGS_BEFORE)
  return ["config.model.frozen_scales: absent (fgjax before 2026-12 ran every scale in training "
          "mode in every stage) -> 'training'"]


def local_loss(activations: jax.Array, mask: jax.Array, labels: jax.Array) -> jax.Array:
  """Eq. 2-4 per image: activations (N, h, w, L + 1), mask (N, h, w) in {0, 1} -> (N,)."""
  logp = jax.nn.log_softmax(activations.astype(jnp.float32), axis=-1)
  nll_t = -jnp.take_along_axis(logp, labels[:, None, None, None].astype(jnp.int32), -1)[..., 0]
  nll_bg = -logp[..., -1]
  m = jax.lax.stop_gradient(mask.astype(jnp.float32))
  l1 = jnp.sum(m * nll_t, axis=(1, 2))
  l0 = jnp.sum((1.0 - m) * nll_bg, axis=(1, 2))
  w = jnp.mean(m, axis=(1, 2))
  return ((1.0 - w) * l1 + w * l0) / (m.shape[1] * m.shape[2])


def object_loss(object_logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Eq. 5 per image: -log p_t of the object classifier -> (N,)."""
  logp = jax.nn.log_softmax(object_logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), -1)[:, 0]


def loss_fn(outputs, batch, config):
  """Sum over scales of eq. 6 (or of the one loss the `losses` ablation keeps)."""
  which, labels = config.model.losses, batch['label']
  total, metrics = jnp.zeros((), jnp.float32), {}
  for s in range(outputs['activations'].shape[1]):
    loc = jnp.mean(local_loss(outputs['activations'][:, s], outputs['mask'][:, s], labels))
    obj = jnp.mean(object_loss(outputs['object_logits'][:, s], labels))
    total = total + (loc if which in ('both', 'local') else 0.0) + (
        obj if which in ('both', 'object') else 0.0)
    metrics.update({f'loss_loc_scale{s + 1}': loc, f'loss_obj_scale{s + 1}': obj,
                    f'mask_area_scale{s + 1}': jnp.mean(outputs['mask'][:, s]),
                    f'accuracy_scale{s + 1}': losses.accuracy(
                        jnp.log(outputs['scale_probs'][:, s] + 1e-30), labels)})
  metrics['accuracy'] = losses.accuracy(outputs['logits'], labels)
  return total, metrics


def predict_fn(outputs):
  out = {k: outputs[k] for k in ('logits', 'features', 'local_probs', 'object_probs', 'boxes')}
  grid = jnp.asarray(outputs['mask'].shape[2:4], jnp.float32)
  return {**out, 'box_cells': scale_box_sides(outputs['boxes']) * grid}


def scale_box_sides(boxes: jax.Array) -> jax.Array:
  """(..., S, 2): height and width of every scale's box as a fraction of the input that scale
  saw (scale 1: the image; scale s: the crop of scale s - 1's box), from `boxes` (..., S, 4),
  the model's boxes composed into the original image."""
  boxes = jnp.asarray(boxes, jnp.float32)
  sides = jnp.stack([boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]], axis=-1)
  outer = jnp.concatenate([jnp.ones_like(sides[..., :1, :]), sides[..., :-1, :]], axis=-2)
  return sides / jnp.maximum(outer, 1e-12)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of (y0, x0, y1, x1) boxes, row by row."""
  ih = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
  iw = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
  inter = ih * iw
  area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
  return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def box_metrics(boxes: np.ndarray, cells: np.ndarray | None = None) -> dict:
  """Per scale s (boxes (M, S, 4) in the original frame, cells (M, S, 2) the box sides in
  feature cells of the scale's input): `box_area_scale{s}` (mean area, fraction of the original
  image), `box_area_frac_scale{s}` (mean area, fraction of the input scale s sees) and
  `box_degenerate_frac_scale{s}` (fraction of images whose box is at most one cell high or wide)."""
  sides = np.asarray(scale_box_sides(boxes), np.float64)
  out = {}
  for s in range(boxes.shape[1]):
    b = boxes[:, s]
    out[f'box_area_scale{s + 1}'] = float(np.mean((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
    out[f'box_area_frac_scale{s + 1}'] = float(np.mean(sides[:, s, 0] * sides[:, s, 1]))
    if cells is not None:
      out[f'box_degenerate_frac_scale{s + 1}'] = float(np.mean(
          np.min(cells[:, s], axis=-1) <= _ONE_CELL))
  return out


def diagnose(metrics: dict) -> list[str]:
  """`Method.diagnose`: attention boxes that select (almost) the whole input, or collapse to
  one feature cell, at any scale."""
  warnings = []
  for key in sorted(k for k in metrics if k.startswith('box_area_frac_scale')):
    v, s = metrics[key], key[len('box_area_frac_scale'):]
    if v > WHOLE_INPUT_AREA_FRAC:
      warnings.append(
          f'{key} = {v:.3f}: the Otsu box of scale {s} covers {v:.0%} of its input on average '
          f'(> {WHOLE_INPUT_AREA_FRAC}): its attention selects almost nothing, so its '
          'crop-and-zoom is inert (the next scale sees about the same image) and its object '
          'features are a global max-pool')
  for key in sorted(k for k in metrics if k.startswith('box_degenerate_frac_scale')):
    v, s = metrics[key], key[len('box_degenerate_frac_scale'):]
    if v > DEGENERATE_IMAGES_FRAC:
      warnings.append(
          f'{key} = {v:.3f}: for {v:.0%} of the images the box of scale {s} is at most one '
          'feature cell (one backbone stride) high or wide: its Otsu mask collapsed to a line '
          'or a point, and the next scale zooms a single cell')
  return warnings


def eval_metrics(gathered, config) -> dict:
  """Table 6 (per scale and multi-scale 'ms') + attention-box IoU (where the dataset has
  `bbox`) and the box metrics (`box_metrics`) per scale. The accuracies need the classification
  protocol (a re-id or retrieval split's labels are not the classifier's classes)."""
  classify = config.eval.protocol == 'classification'
  loc, obj = gathered['local_probs'], gathered['object_probs']  # (M, S, L)
  which = config.model.losses
  avg = {'both': (loc + obj) / 2, 'local': loc, 'object': obj}[which]
  acc = lambda p: float(np.mean(np.argmax(p, -1) == gathered['label']))
  out = {}
  for s in range(loc.shape[1]):
    tag = f'scale{s + 1}'
    if classify:
      out[f'acc_loc_{tag}'] = acc(loc[:, s])
      out[f'acc_obj_{tag}'] = acc(obj[:, s])
      out[f'acc_avg_{tag}'] = acc(avg[:, s])
    if 'bbox' in gathered:
      iou = box_iou(gathered['boxes'][:, s], gathered['bbox'])
      out[f'attention_iou_{tag}'] = float(np.mean(iou))
      out[f'attention_iou_ge_0.5_{tag}'] = float(np.mean(iou >= 0.5))
  out.update(box_metrics(np.asarray(gathered['boxes']), gathered.get('box_cells')))
  if classify:
    out['acc_loc_ms'] = acc(loc.mean(1))
    out['acc_obj_ms'] = acc(obj.mean(1))
    out['acc_avg_ms'] = acc(avg.mean(1))
  return out


def check_config(config):
  """What needs more than the model's fields: the backbone's grid at the input size and its
  weights, evaluation options, and the stages (`sequential_stages`)."""
  check_backbone(config, min_grid=1)
  if config.eval.flip_tta:
    raise ValueError('config.eval.flip_tta must be False for activation_attention: averaging the '
                     'attention boxes of an image and of its mirror image is meaningless')
  if config.model.sequential_stages and len(config.stages):
    _check_stages(config)


def _check_stages(config):
  """Stage s trains scale s only (config.model.sequential_stages)."""
  n, first = config.model.num_scales, config.model.first_trained_scale
  if first > 1 and not config.init_from.path:
    raise ValueError(f'config.model.first_trained_scale={first} needs the trained scales '
                     f'1..{first - 1} from config.init_from.path (a run of this method)')
  hint = (f'use config.stages = fgjax.methods.activation_attention.scale_stages({n}, '
          f'epochs_per_scale, first={first}), or set config.model.sequential_stages=False to '
          'train otherwise')
  if len(config.stages) != n - first + 1:
    raise ValueError(f'config.stages has {len(config.stages)} stage(s) but config.model.num_scales'
                     f' is {n} (first_trained_scale {first}): the paper trains one scale per '
                     f'stage; {hint}')
  probes = _probe_names(config)
  for i, spec in enumerate(config.stages):
    frozen = spec.get('frozen', config.optim.frozen)
    pattern = re.compile(frozen) if frozen else None
    for s in range(1, n + 1):
      is_frozen = [bool(pattern and pattern.search(f'scale{s}/{p}')) for p in probes]
      if (s == i + first and any(is_frozen)) or (s != i + first and not all(is_frozen)):
        name = probes[is_frozen.index(s == i + first)]
        raise ValueError(f'config.stages[{i}].frozen={frozen!r} must freeze every scale except '
                         f'scale{i + first}, all of it (scale{s}/{name} is '
                         f'{"" if s == i + first else "not "}frozen); {hint}')


def _probe_names(config) -> list[str]:
  """Parameter names in every part of a scale (heads, and backbone names at each of its
  feature maps), on which `_check_stages` tests the stages' frozen patterns without tracing."""
  kwargs = config.model.get('backbone_kwargs', {})
  layers = backbones_lib.get_backbone(config.model.backbone, **kwargs).feature_strides
  return (['local/kernel', 'local/bias', 'object/kernel', 'object/bias']
          + [f'backbone/{layer}/kernel' for layer in dict(layers)])


def pretrained(config):
  d = config.model.backbone_pretrained
  return [(d, f'scale{s}/backbone/') for s in range(1, config.model.num_scales + 1)] if d else []


def attention_panels(outputs, index, config, options):
  """One panel per scale s: its attention M (max over the non-background channels of A) over the
  input it saw (scale 1: the whole input; scale s > 1: the crop = the box of scale s - 1, drawn
  dashed), the Otsu mask M_b as a white outline and the box of M_b (green, `boxes[:, s]`, composed
  into the frame of the original input, the frame drawn here)."""
  del config, options
  att = np.asarray(outputs['attention'][index], np.float64)  # (S, h, w), each in its own frame
  mask = np.asarray(outputs['mask'][index])
  boxes = np.asarray(outputs['boxes'][index], np.float64)  # (S, 4) normalised, original frame
  probs = np.asarray(outputs['scale_probs'][index], np.float64)
  out = []
  for s in range(att.shape[0]):
    frame = (0.0, 0.0, 1.0, 1.0) if s == 0 else tuple(float(x) for x in boxes[s - 1])
    area = (boxes[s, 2] - boxes[s, 0]) * (boxes[s, 3] - boxes[s, 1])
    out.append(panels.Panel(
        title=f'scale {s + 1}: attention M, Otsu mask, box\n(box area {area:.2f}, scale top-1 '
              f'p={probs[s].max():.2f})',
        heatmap=att[s], extent=frame, contour=mask[s], boxes=boxes[s:s + 1],
        colorbar_label='M'))
  return out


METHOD = Method(
    name='activation_attention', model=ActivationAttention, loss_fn=loss_fn,
    predict_fn=predict_fn, check_config=check_config, batch_keys=('image', 'label'),
    pretrained=pretrained,
    description='local classifiers -> max-aggregated activations -> Otsu attention mask; local + '
                'object losses; 3 scales of crop-and-zoom trained in sequence',
    eval_outputs=('local_probs', 'object_probs', 'boxes', 'box_cells'), eval_batch_keys=('bbox',),
    eval_metrics=eval_metrics, attention_panels=attention_panels,
    migrate_model_config=migrate_model_config, diagnose=diagnose, stage_inputs=stage_inputs,
    readings_before=READINGS_BEFORE)


def paper_recipe(c: ml_collections.ConfigDict, runlocal: bool = False,
                 single: bool = False) -> ml_collections.ConfigDict:
  """Section 5.2 on a real dataset: ResNet-50 (ImageNet) layer4, n = 16, 3 scales, fine-tuning
  rate 1e-4, 40 epochs per scale (stage s trains scale s). Short edge resized to 448 (the paper
  feeds whole images; batches need one size, so a 448 x 448 crop: random in training, centre in
  evaluation) + horizontal flip. The paper gives no optimiser, batch size or weight decay: SGD
  momentum 0.9, constant rate, batch 16, weight decay 1e-4 are this recipe's choices; ResNet
  BatchNorm runs on its ImageNet statistics (bn_frozen: batches of 16 are too small, and frozen
  scales then stay exactly frozen).

  runlocal: the same pipeline shrunk to run on CPU (small_cnn at 64x64, batch 8, 0.02 epochs per
  scale); for smoke tests on the real data only. single: scale 1 alone (the 1-scale baseline).
  """
  c.method = 'activation_attention'
  c.model = METHOD.default_model_config()
  c.model.backbone, c.model.layer = 'resnet50', 'layer4'
  c.model.backbone_kwargs = ml_collections.ConfigDict({'bn_frozen': True})
  c.dataset.resize = 'short_edge'
  c.dataset.resize_size = 448
  c.dataset.image_size = 448
  c.dataset.random_crop = True
  c.dataset.hflip = True
  default_config.sgd(c, 1e-4, weight_decay=1e-4, schedule='constant')
  epochs = 40.0
  default_config.loop(c, 16, log_every=50, checkpoint_every=1000)
  if runlocal:
    c.model.backbone, c.model.layer = 'small_cnn', 'conv4'
    c.model.backbone_kwargs = ml_collections.ConfigDict()
    c.dataset.resize, c.dataset.resize_size, c.dataset.image_size = 'fixed', 72, 64
    c.train.global_batch_size = c.eval.batch_size = 8
    epochs = 0.02
  if single:  # the 1-scale model: scale 1 alone, trained as scale 1 of the 3-scale model
    c.model.num_scales = 1
  c.stages = scale_stages(c.model.num_scales, epochs)
  c.train.num_epochs = epochs * c.model.num_scales
  return c
