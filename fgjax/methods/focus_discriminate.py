"""focus_discriminate (Feng, Fu & Zhao 2019, "Learning to Focus and Discriminate"): CAM attention,
NTS-Net anchors + NMS, zoomed regions through the shared backbone, hybrid classifier (model and its
settings, `config.model.*`: fgjax.models.focus_discriminate.FocusDiscriminate).

Loss (section 3.3, "softmax losses for all the classification modules"):
  L = CE(image logits) + mean_r CE(region r logits) + CE(hybrid logits), every region labelled with
  the image's class. `use_hybrid=False` drops the last term (the paper's "image level only"
  ablation), `use_regions=False` the last two (plain GAP+FC baseline).

Geometry: the paper's 448 input / 224 zoomed regions / padding 224 / anchors at 448 scale
proportionally when `geometry_scale`, `pad` and `region_size` are 0 (auto; the rule is
`FocusDiscriminate.geometry`): s = min(H, W) / 448, anchors = the 448 set times s
(fgjax.ops.anchors), pad = region_size = round(224 s). At 448 this is exactly NTS-Net; at the
CPU-sized 64x64 it is s = 1/7, 32-px regions and padding.

Evaluation extra (classification protocol): with the dataset's `bbox` (normalised ymin, xmin,
ymax, xmax of the object in the evaluated image), the top-1 region (first NMS pick) clipped to the
image is compared with the object box:
  - `top1_region_on_object`: fraction of images where intersection / (clipped region area) >=
    `config.model.overlap_threshold` (0.5: at least half of the region lies on the object);
  - `top1_region_touches_object`: fraction with IoU > 0;
  - `top1_region_iou`: mean IoU;
  - `anchor_on_object_chance`: the first fraction for a candidate region (anchor, or fixed-centre
    box) drawn uniformly (averaged over candidates and images), the level a region picker without
    information reaches.

Region diagnostics (`region_diagnostics`; `diagnose` turns them into warnings):
  - `region_side_frac_mean`: mean over all m picked regions of sqrt(region area / image area),
    the region's side as a fraction of the image side (unclipped box: what is zoomed);
  - `attention_stride_frac`: the backbone's stride at `layer` / sqrt(H W), one cell of M as a
    fraction of the image side;
  - `regions_on_object` [bbox]: fraction of the m picked regions whose centre lies inside the object
    box (edges included); `regions_on_object_chance`: the same for every candidate region
    (averaged over candidates and images);
  - `hybrid_slot_roll_agreement` / `hybrid_slot_roll_top1` [use_hybrid]: fraction of images whose
    hybrid prediction is unchanged, and the top-1, when the l region slots of the hybrid feature are
    shifted by one (F^R_2 .. F^R_l, F^R_1): 1.0 means the slot order does not matter.

Old runs: `migrate_model_config` writes the behaviour of fgjax before 2026-12 into a config.json
without `region_scoring` / `hybrid_fusion` (anchors by mean attention, slots in NMS order;
today's default region scoring is 'fixed_centre').
"""

from __future__ import annotations

import types

import jax.numpy as jnp
import ml_collections
import numpy as np

from fgjax import default_config, losses
from fgjax.data import augment
from fgjax.methods.common import Method, check_backbone
from fgjax.models import backbones as backbones_lib
from fgjax.models.focus_discriminate import FocusDiscriminate
from fgjax.visualisation import panels


def configured_model(config) -> FocusDiscriminate:
  """The FocusDiscriminate of `config` (one class: for its geometry and anchors, not to train);
  constructing it runs the module's value checks."""
  return METHOD.build_model(config, types.SimpleNamespace(num_classes=1))


def loss_fn(outputs, batch, config):
  labels, ls = batch['label'], config.model.label_smoothing
  image = losses.cross_entropy(outputs['image_logits'], labels, ls)
  loss, metrics = image, {'image_loss': image,
                          'image_accuracy': losses.accuracy(outputs['image_logits'], labels)}
  if 'region_logits' in outputs:
    r = outputs['region_logits']
    # Rows are (image, region) image-major, so each label repeats once per region.
    region = losses.cross_entropy(r.reshape(-1, r.shape[-1]), jnp.repeat(labels, r.shape[1]), ls)
    loss = loss + region
    metrics['region_loss'] = region
  if 'hybrid_logits' in outputs:
    hybrid = losses.cross_entropy(outputs['hybrid_logits'], labels, ls)
    loss = loss + hybrid
    metrics['hybrid_loss'] = hybrid
  metrics['accuracy'] = losses.accuracy(outputs['logits'], labels)
  return loss, metrics


# Warnings of `diagnose`. A region narrower than one cell of M is ranked below the attention's
# resolution: M holds one value per cell, so the score of such a box is an interpolation of at most
# four cells, and the picks among the small boxes inside a cell are arbitrary.
MIN_REGION_CELLS = 1.0
# "Never on the object": fewer than 1 in 20 picked regions centred inside the object box. A picker
# without information reaches `regions_on_object_chance`, far above this on datasets whose objects
# are more than specks.
MIN_REGIONS_ON_OBJECT = 0.05

# Fields added in 2026-12 and the behaviour fgjax had before them (`migrate_model_config`).
PRE_2026_12 = {'region_scoring': 'anchor_mean', 'hybrid_fusion': 'concat'}


def migrate_model_config(model: dict) -> list[str]:
  """`Method.migrate_model_config`: a config.json written before 2026-12 has no `region_scoring`
  or `hybrid_fusion`; its run scored NTS-Net anchors by mean attention and concatenated the region
  features in NMS order, which this writes explicitly (so a later change of the defaults does not
  change what an old run means)."""
  messages = []
  for field, value in PRE_2026_12.items():
    if field not in model:
      model[field] = value
      messages.append(f'config.model.{field} absent (written by fgjax before 2026-12): set to '
                      f'{value!r}, what that run computed')
  return messages


def predict_fn(outputs):
  image = outputs['image_logits']
  n, c = image.shape
  regions = outputs.get('region_logits', jnp.zeros((n, 0, c), image.dtype))  # no regions
  rolled = outputs.get('hybrid_logits_rolled', jnp.zeros((n, 0), image.dtype))  # no hybrid
  boxes = outputs.get('boxes', jnp.zeros((n, 0, 4), jnp.float32))  # none: propose_regions=False
  return {'logits': outputs['logits'], 'features': outputs['features'], 'boxes': boxes,
          'image_logits': image, 'region_logits': regions, 'hybrid_logits_rolled': rolled}


def branch_accuracies(gathered: dict) -> dict:
  """Test top-1 of each classifier of the model on the same images: `image_top1` (the image-level
  module, the prediction of the 'image level only' ablation), `region_top1` (the shared region
  classifier, averaged over the m regions) and `top1_region_top1` (the first NMS region alone)."""
  labels = np.asarray(gathered['label'])
  out = {'image_top1': float(np.mean(np.argmax(gathered['image_logits'], -1) == labels))}
  regions = np.asarray(gathered['region_logits'])
  if regions.shape[1]:
    hits = np.argmax(regions, -1) == labels[:, None]
    out.update(region_top1=float(hits.mean()), top1_region_top1=float(hits[:, 0].mean()))
  return out


def _overlaps(regions: np.ndarray, objects: np.ndarray):
  """regions (N, K, 4), objects (N, 4) in pixels -> (inter / region area, IoU), each (N, K)."""
  o = objects[:, None, :]
  ih = np.clip(np.minimum(regions[..., 2], o[..., 2]) - np.maximum(regions[..., 0], o[..., 0]),
               0, None)
  iw = np.clip(np.minimum(regions[..., 3], o[..., 3]) - np.maximum(regions[..., 1], o[..., 1]),
               0, None)
  inter = ih * iw
  area_r = (regions[..., 2] - regions[..., 0]) * (regions[..., 3] - regions[..., 1])
  area_o = (o[..., 2] - o[..., 0]) * (o[..., 3] - o[..., 1])
  return inter / np.maximum(area_r, 1e-9), inter / np.maximum(area_r + area_o - inter, 1e-9)


def attention_grid(config) -> tuple[tuple[int, int], int]:
  """(the grid (h, w) of the attention map M at the dataset's input size, the backbone's stride at
  `layer`), without tracing: the backbone's `feature_grid` where it has one, else
  ceil(H / stride)."""
  model = configured_model(config)
  net = backbones_lib.get_backbone(model.backbone, **model.backbone_kwargs)
  stride = int(dict(net.feature_strides)[model.layer])
  h, w = augment.input_hw(config.dataset)
  if hasattr(net, 'feature_grid'):
    return tuple(net.feature_grid(h, w)[model.layer]), stride
  return (-(-h // stride), -(-w // stride)), stride


def _centres_inside(boxes: np.ndarray, objects: np.ndarray) -> np.ndarray:
  """boxes (N, K, 4), objects (N, 4), pixels -> (N, K) whether each box centre is in the object."""
  cy = (boxes[..., 0] + boxes[..., 2]) / 2
  cx = (boxes[..., 1] + boxes[..., 3]) / 2
  o = objects[:, None, :]
  return (cy >= o[..., 0]) & (cy <= o[..., 2]) & (cx >= o[..., 1]) & (cx <= o[..., 3])


def region_diagnostics(gathered: dict, config) -> dict:
  """The region diagnostics of the module docstring from the gathered `boxes` (N, m, 4) (+ `bbox`
  where the dataset has it, `hybrid_logits_rolled` and `logits`)."""
  h, w = augment.input_hw(config.dataset)
  side = np.sqrt(h * w)
  boxes = np.asarray(gathered['boxes'], np.float64)
  extent = np.clip(boxes[..., 2:] - boxes[..., :2], 0, None)
  grid, stride = attention_grid(config)
  out = {'region_side_frac_mean': float(np.mean(np.sqrt(extent[..., 0] * extent[..., 1]) / side)),
         'attention_stride_frac': stride / side}
  if 'bbox' in gathered:
    obj = np.asarray(gathered['bbox'], np.float64) * np.array([h, w, h, w], np.float64)
    candidates = configured_model(config).candidate_boxes(grid).astype(np.float64)
    chance = _centres_inside(np.broadcast_to(candidates, (len(obj),) + candidates.shape), obj)
    out.update(regions_on_object=float(np.mean(_centres_inside(boxes, obj))),
               regions_on_object_chance=float(np.mean(chance)))
  rolled = np.asarray(gathered.get('hybrid_logits_rolled', np.zeros((len(boxes), 0))))
  if rolled.shape[-1] and 'logits' in gathered and 'label' in gathered:
    pred, pred_rolled = np.argmax(gathered['logits'], -1), np.argmax(rolled, -1)
    out.update(hybrid_slot_roll_agreement=float(np.mean(pred == pred_rolled)),
               hybrid_slot_roll_top1=float(np.mean(pred_rolled == np.asarray(gathered['label']))))
  return out


def diagnose(metrics: dict) -> list[str]:
  """`Method.diagnose`: picked regions below one cell of M, or never on the object."""
  warnings = []
  side, cell = metrics.get('region_side_frac_mean'), metrics.get('attention_stride_frac')
  if side is not None and cell is not None and side < MIN_REGION_CELLS * cell:
    warnings.append(
        f'region_side_frac_mean={side:.4f} is below one cell of the attention map '
        f'(attention_stride_frac={cell:.4f}): the picked regions are smaller than the resolution '
        'at which M ranks them, so which small box wins is arbitrary; a region scoring that does '
        "not favour small anchors (config.model.region_scoring='anchor_excess' or "
        "'fixed_centre') picks regions M can tell apart")
  on = metrics.get('regions_on_object')
  if on is not None and on < MIN_REGIONS_ON_OBJECT:
    chance = metrics.get('regions_on_object_chance', float('nan'))
    warnings.append(
        f'regions_on_object={on:.4f} (a random candidate: regions_on_object_chance={chance:.4f}): '
        'the picked regions are (almost) never centred on the object, so the region and hybrid '
        'classifiers see background')
  return warnings


def eval_metrics(gathered: dict, config) -> dict:
  """`branch_accuracies`, `region_diagnostics`, and on datasets with object boxes where the top-1
  region lies. The branch accuracies need the classification protocol (a re-id or retrieval
  split's labels are not the classifier's classes)."""
  branches = branch_accuracies(gathered) if config.eval.protocol == 'classification' else {}
  if 'boxes' in gathered:
    branches.update(region_diagnostics(gathered, config))
  if 'bbox' not in gathered:
    return branches
  h, w = augment.input_hw(config.dataset)
  clip = lambda b: np.stack([np.clip(b[..., 0], 0, h), np.clip(b[..., 1], 0, w),
                             np.clip(b[..., 2], 0, h), np.clip(b[..., 3], 0, w)], -1)
  obj = np.asarray(gathered['bbox'], np.float64) * np.array([h, w, h, w], np.float64)
  top1 = clip(np.asarray(gathered['boxes'], np.float64)[:, :1])
  frac, iou = _overlaps(top1, obj)
  thr = config.model.overlap_threshold
  grid, _ = attention_grid(config)
  anchors = configured_model(config).candidate_boxes(grid)
  anchors = clip(np.broadcast_to(anchors.astype(np.float64), (len(obj),) + anchors.shape))
  chance, _ = _overlaps(anchors, obj)
  return {**branches, 'top1_region_on_object': float(np.mean(frac[:, 0] >= thr)),
          'top1_region_touches_object': float(np.mean(iou[:, 0] > 0)),
          'top1_region_iou': float(np.mean(iou[:, 0])),
          'anchor_on_object_chance': float(np.mean(chance >= thr))}


def check_config(config):
  """The backbone and layer exist, its weights match it (`check_backbone`), the module's own value
  checks (`FocusDiscriminate.__post_init__`), and the zoomed regions hold a feature cell."""
  check_backbone(config)
  model = configured_model(config)
  region = model.geometry().region_size
  net = backbones_lib.get_backbone(model.backbone, **model.backbone_kwargs)
  stride = dict(net.feature_strides)[model.layer]
  if model.use_regions and region < stride:
    raise ValueError(f'config.model.region_size={region} gives no {model.layer} cell at stride '
                     f'{stride}; raise it to >= {stride}')
  if model.region_scoring == 'fixed_centre':
    (gh, gw), _ = attention_grid(config)
    if model.num_regions > gh * gw:
      raise ValueError(f"config.model.num_regions={model.num_regions} exceeds the {gh * gw} cells "
                       f"of the {gh}x{gw} attention map (region_scoring='fixed_centre': one "
                       'region per cell)')


def pretrained(config):
  """ImageNet weights into the backbone; with region_bn='separate' the region pass's BatchNorm
  statistics start from the same weights' statistics (its params are the backbone's, so the
  source's params are reported unused for that prefix)."""
  m = config.model
  if not m.backbone_pretrained:
    return []
  out = [(m.backbone_pretrained, 'backbone/')]
  if m.region_bn == 'separate' and m.use_regions:
    out.append((m.backbone_pretrained, 'region_backbone/'))
  return out


def attention_panels(outputs, index, config, options):
  """The attention M (eq. 2: max over the class activation maps, or the single CAM of the
  predicted class, Gaussian-smoothed; the map the anchors are scored on) and the top-l regions
  (l = num_hybrid, the ones the hybrid classifier sees) in NMS order, coloured by rank. `boxes` are
  pixel edges in the model input (unpadded frame; anchors may extend past the image)."""
  del options
  m = config.model
  hw = augment.input_hw(config.dataset)
  att = np.asarray(outputs['attention'][index], np.float64)
  top = int(m.num_hybrid)
  boxes = panels.normalised_boxes(np.asarray(outputs['boxes'][index])[:top], hw)
  cam = 'max over class CAMs' if m.attention == 'max_cam' else 'CAM of the predicted class'
  return [panels.Panel(title=f'attention M ({cam},\nGaussian sigma {m.sigma})', heatmap=att,
                         colorbar_label='M'),
          panels.Panel(title=f'top-{top} regions (NMS order)', heatmap=att, alpha=0.25,
                         boxes=boxes, ranked=True)]


METHOD = Method(
    name='focus_discriminate', model=FocusDiscriminate, loss_fn=loss_fn, predict_fn=predict_fn,
    check_config=check_config, batch_keys=('image', 'label'), pretrained=pretrained,
    description='CAM attention -> NTS-Net anchors + NMS -> zoomed regions -> hybrid classifier',
    eval_outputs=('boxes', 'image_logits', 'region_logits', 'hybrid_logits_rolled'),
    eval_batch_keys=('bbox',), eval_metrics=eval_metrics,
    train_inputs=(('labels', 'label'),), attention_panels=attention_panels,
    migrate_model_config=migrate_model_config, diagnose=diagnose, readings_before=PRE_2026_12,
    # the image branch alone (the paper's image-level prediction, no regions or NMS): ONNX-exportable
    export_parts={'image_branch': {'use_regions': False, 'use_hybrid': False,
                                   'propose_regions': False}})


def paper_recipe(c: ml_collections.ConfigDict, runlocal: bool = False) -> ml_collections.ConfigDict:
  """Section 4.2 on a real dataset: ResNet-50 (ImageNet) at 448, regions zoomed to 224, NMS 0.25,
  m = 6, l = 4; SGD momentum 0.9, weight decay 5e-4, lr 0.01 x0.1 every 40 epochs, 100 epochs,
  pretrained (backbone) layers at 0.1x lr. Data as NTS-Net: resize to 600x600, random 448 crop +
  horizontal flip (evaluation: centre 448 crop); batch 16 (NTS-Net's; the paper gives none).

  runlocal: the same pipeline shrunk to run on CPU (small_cnn at 64x64, the geometry scaled by
  1/7, batch 8, 0.05 epochs); for smoke tests on the real data only.
  """
  c.method = 'focus_discriminate'
  c.model = METHOD.default_model_config()
  c.model.backbone, c.model.layer = 'resnet50', 'layer4'
  c.dataset.resize = 'fixed'
  c.dataset.resize_size = 600
  c.dataset.image_size = 448
  c.dataset.random_crop = True
  c.dataset.hflip = True
  default_config.sgd(c, 0.01, weight_decay=5e-4, schedule='step')
  c.optim.decay_epochs = (40, 80)
  c.optim.decay_factor = 0.1
  c.optim.lr_multipliers = ml_collections.ConfigDict({'^backbone/': 0.1})
  c.train.num_epochs = 100.0
  default_config.loop(c, 16, log_every=50, checkpoint_every=1000)
  if runlocal:
    c.model.backbone, c.model.layer = 'small_cnn', 'conv4'
    c.dataset.resize_size, c.dataset.image_size = 72, 64
    c.train.global_batch_size = c.eval.batch_size = 8
    c.train.num_epochs = 0.05
  return c
