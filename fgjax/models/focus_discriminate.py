"""focus_discriminate: "Learning to Focus and Discriminate" (Feng, Fu & Zhao 2019).

One backbone, three classifiers (paper section 3, Fig. 1), NTS-Net conventions where the paper
reuses them (yangze0930/NTS-Net, commit e6c98df):

1. Image level (eq. 1): Z = backbone(I)[layer] (h x w x n), F^I = GAP(Z), s^I = W F^I + b.
2. Attention (eq. 2): M = max_k M_k with the class activation maps M_k = sum_i W_ki Z_i (the image
   classifier's kernel, no bias), then Gaussian smoothing (`fgjax.ops.gaussian`, sigma in feature
   cells; the paper gives none). Ablation `attention='single_cam'` ([13]): the CAM of the
   ground-truth class when `labels` are passed (the trainer passes them in training through
   `Method.train_inputs`), else of the predicted class (evaluation, prediction).
3. Region proposals (`fgjax.models.region_proposals`, where the readings are derived): the paper
   only says "each pixel in M corresponds to a region" and gives the localised regions 160x160 at
   448. `region_scoring='fixed_centre'` (default; the paper's literal reading): every cell of M is
   the centre of a square region of side `region_side` x min(H, W), scored by M at the cell.
   'anchor_mean' (fgjax's default before 2026-12): NTS-Net's default anchors (`fgjax.ops.anchors`,
   1614 at 448; other input sizes: `FocusDiscriminate.geometry`), each scored by the mean of M over
   the box: M is min-max normalised to [0, 1] per image, bilinearly upsampled to the input size,
   summed over the integer box inside the image (summed-area table) and divided by the anchor's
   full area (`anchor_score='mean_full'`: the zero padding counts as no attention) or by the area
   inside the image ('mean_inside'). A mean favours the smallest anchors. 'anchor_excess': the same
   anchors scored by the attention mass above the image mean (size follows the attention's extent).
   The default was chosen on the embedded benchmark (docs/methods/focus_discriminate.md). The
   scores are under stop_gradient (selection is discrete, as in NTS-Net).
4. Hard NMS (`fgjax.ops.nms`, NTS-Net semantics) at IoU 0.25 on the integer boxes
   `int(edge + pad) - pad` (NTS-Net's padded integer anchors, moved back to the unpadded frame; or
   the fixed-centre boxes), top m = 6.
5. The m boxes are cropped from the image zero-padded by `pad` and resized to `region_size`
   (bilinear, align_corners=True; `fgjax.ops.crop`), through the same backbone (shared params;
   BatchNorm statistics: `region_bn`), F^R_r = GAP, one region classifier shared by all regions.
   Pad value: NTS-Net pads the *normalised* image with 0; our backbones normalise inside, so
   `pad_value='mean'` fills with the backbone's preprocessing mean (0 after normalisation, as
   NTS-Net), 'zero' with black.
6. Hybrid: F = [F^I, F^R_1 .. F^R_l] (top l = 4 by NMS order) -> hybrid FC. Prediction = hybrid
   logits. A slot of F holds the r-th most attended region, a different part in different images;
   `hybrid_fusion='mean'` / 'max' pools F^R_1 .. F^R_l over the regions first (F = [F^I, pool],
   order-invariant). In evaluation the model also returns `hybrid_logits_rolled`, the hybrid
   classifier on the region slots shifted by one (F^R_2 .. F^R_l, F^R_1), which measures how much
   the prediction depends on the slot order. Ablations: `use_hybrid=False` is the paper's "image
   level only" (no hybrid module; image and region classifiers still trained; predict with the
   image logits); `use_regions=False` trains the image classifier alone (a plain GAP+FC baseline;
   boxes are still proposed, for the localisation metric).
7. Feature dropout (`feature_dropout`, rate; NTS-Net's resnet.py applies nn.Dropout(p=0.5) to the
   pooled feature): F^I and every F^R_r are dropped out before their classifiers, and the hybrid
   feature concatenates the dropped features (one mask per feature, shared by its two uses).
   Training only (NTS-Net builds the module inside `forward`, so it drops at test time too).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fgjax.models import backbones as backbones_lib, fields
from fgjax.models import region_proposals as proposals
from fgjax.models.region_proposals import ANCHOR_SCORES, REGION_SCORINGS, anchor_scores
from fgjax.ops import anchors as anchors_lib
from fgjax.ops.crop import crop_and_resize
from fgjax.ops.gaussian import gaussian_blur

__all__ = ['FocusDiscriminate', 'Geometry', 'Linear', 'anchor_scores', 'pad_rgb']


class Linear(nn.Module):
  """Dense layer whose kernel can also be applied without the bias (for class activation maps)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, use_bias: bool = True):
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype),
                preferred_element_type=jnp.float32)
    return y + bias if use_bias else y


def pad_rgb(backbone) -> np.ndarray:
  """The RGB value that a backbone normalises to 0 (its preprocessing mean)."""
  pre = getattr(backbone, 'preprocessing', None)
  if pre is not None:
    mean = np.asarray(pre.mean, np.float32)
    return mean[::-1].copy() if pre.channels == 'BGR' else mean
  return np.full((3,), float(getattr(backbone, 'mean', 0.0)), np.float32)


ATTENTIONS = ('max_cam', 'single_cam')
HYBRID_FUSIONS = ('concat', 'mean', 'max')
SMOOTHING_MODES = ('reflect', 'nearest', 'mirror', 'constant')
PAD_VALUES = ('mean', 'zero')
REGION_BNS = ('separate', 'shared')


class Geometry(NamedTuple):
  """The input size and the crop geometry of a FocusDiscriminate, the 0 = auto fields resolved."""
  input_hw: tuple[int, int]
  scale: float  # anchors' stride and size factor (`fgjax.ops.anchors`)
  pad: int  # zero padding of the image for the crops, px
  region_size: int  # side of the zoomed regions, px


class FocusDiscriminate(backbones_lib.BackboneFields, kw_only=True):
  """See the module docstring. `__call__(images, train=False, labels=None) -> dict`.

  Attributes:
    num_classes: outputs of the three classifiers.
    input_hw: model input (H, W) in pixels (the run's, from config.dataset): the anchors and the
      auto geometry depend on it.
    backbone: a registered backbone name (`fgjax.models.backbones`), or a module instance (tests),
      bound under the name `backbone`. It is called on the image and on the zoomed regions.
    layer: key of the backbone's feature dict used as Z.
    backbone_kwargs: constructor arguments of the backbone (e.g. widths).
    backbone_pretrained: weight directory from `python -m fgjax.pretrained convert` (its input
      preprocessing comes with it; the trainer loads the weights, `Method.pretrained`).
    allow_random_init: ImageNet backbones without weights are a config error unless True (read by
      the method's config check, not by `__call__`).
    geometry_scale: factor of the anchors' strides and sizes (`fgjax.ops.anchors`); 0 = auto,
      min(H, W) / 448 (see `geometry`).
    pad: zero padding of the image for the crops, px; 0 = auto, round(224 * min(H, W) / 448).
    region_size: side of the zoomed regions, px; 0 = auto, round(224 * min(H, W) / 448).
    num_regions: m, regions kept by NMS (at most the number of candidates).
    num_hybrid: l, top regions (NMS order) in the hybrid feature, 1 <= l <= m.
    hybrid_fusion: how the top l region features enter the hybrid feature: 'concat' (the paper:
      [F^I, F^R_1 .. F^R_l] in NMS order), 'mean' or 'max' ([F^I, mean / max over the l regions],
      invariant to their order).
    nms_iou: NMS IoU threshold (> 0; NTS-Net: 0.25).
    attention: 'max_cam' (eq. 2: max over the class activation maps) or 'single_cam' (ablation:
      the CAM of the ground-truth class in training, of the predicted class otherwise).
    sigma: Gaussian smoothing of M, in feature cells (the paper gives none); 0 = off.
    smoothing_truncate: the Gaussian kernel's radius in sigmas (scipy's `truncate`).
    smoothing_mode: border rule of the smoothing, one of scipy's 'reflect', 'nearest', 'mirror',
      'constant'.
    region_scoring: 'fixed_centre' (default, the paper's literal reading: one square region per
      cell of M), 'anchor_mean' (NTS-Net anchors by mean attention; favours the smallest anchors;
      the default before 2026-12) or 'anchor_excess' (the anchors by attention mass above the
      image mean); step 3 and `fgjax.models.region_proposals`.
    anchor_score: 'mean_full' or 'mean_inside': how the part of an anchor outside the image counts
      in its score (as zero attention, or not at all); anchor scorings only.
    region_side: side of the 'fixed_centre' regions as a fraction of min(H, W), in (0, 1] (the
      paper's 160 px at 448 by default); read by 'fixed_centre' only.
    pad_value: 'mean' (the backbone's preprocessing mean, 0 after normalisation as in NTS-Net) or
      'zero' (black).
    align_corners: bilinear resize of the crops with align_corners (NTS-Net's
      `F.interpolate(..., align_corners=True)`).
    use_regions: False: no region pass and no region / hybrid classifiers (a plain GAP+FC
      baseline; boxes are still proposed, for the localisation metric).
    use_hybrid: False: the paper's "image level only" ablation (no hybrid classifier; the
      prediction is the image classifier's). Needs use_regions.
    propose_regions: False: no attention map and no region proposals either (outputs logits,
      image_logits and features only): the image branch alone, e.g. to export it to ONNX
      (`python -m fgjax.export_model --part=image_branch`). Needs use_regions=False.
    region_bn: 'separate' or 'shared' BatchNorm running statistics of the region pass (see
      `_region_net`).
    feature_dropout: dropout rate on the pooled image and region features, training only (the
      paper has none; NTS-Net's resnet.py uses 0.5). In [0, 1).
    overlap_threshold: intersection / region area above which the top-1 region counts as on the
      object, in (0, 1] (read by the evaluation metrics, not by `__call__`).
    label_smoothing: of the cross-entropies (read by the loss, not by `__call__`).
    dtype: compute dtype of the backbone and the classifiers (float32 accumulation).

  Outputs: logits (prediction: hybrid, or image when use_hybrid=False), image_logits,
  region_logits (B, m, C) [use_regions], hybrid_logits [use_hybrid], features (the classified
  feature), attention (B, h, w) smoothed M, anchor_scores (B, N) scores of the N candidates
  (anchors, or the cells of M for 'fixed_centre'), region_indices (B, m) candidate indices in NMS
  order, boxes (B, m, 4) float (y0, x0, y1, x1) unpadded pixel-edge boxes; in evaluation
  (train=False) with use_hybrid, hybrid_logits_rolled (the hybrid classifier on the region slots
  shifted by one, step 6).
  """
  num_classes: int
  input_hw: tuple[int, int]
  geometry_scale: float = 0.0
  pad: int = 0
  region_size: int = 0
  num_regions: int = 6
  num_hybrid: int = 4
  hybrid_fusion: str = 'concat'
  nms_iou: float = 0.25
  attention: str = 'max_cam'
  sigma: float = 1.0
  smoothing_truncate: float = 4.0
  smoothing_mode: str = 'nearest'
  region_scoring: str = 'fixed_centre'
  anchor_score: str = 'mean_full'
  region_side: float = 160 / 448
  pad_value: str = 'mean'
  align_corners: bool = True
  use_regions: bool = True
  use_hybrid: bool = True
  propose_regions: bool = True
  region_bn: str = 'separate'
  feature_dropout: float = 0.0
  overlap_threshold: float = 0.5
  label_smoothing: float = 0.0
  dtype: Any = jnp.float32

  def __post_init__(self):
    fields.check_choices(self, {'attention': ATTENTIONS, 'anchor_score': ANCHOR_SCORES,
                                'region_scoring': REGION_SCORINGS,
                                'hybrid_fusion': HYBRID_FUSIONS,
                                'smoothing_mode': SMOOTHING_MODES, 'pad_value': PAD_VALUES,
                                'region_bn': REGION_BNS})
    if self.num_regions < 1:
      raise ValueError(f'config.model.num_regions must be >= 1, got {self.num_regions}')
    if self.use_hybrid and not 1 <= self.num_hybrid <= self.num_regions:
      raise ValueError(f'config.model.num_hybrid must be in [1, num_regions={self.num_regions}], '
                       f'got {self.num_hybrid}')
    if self.use_hybrid and not self.use_regions:
      raise ValueError('config.model.use_hybrid=True needs config.model.use_regions=True (the '
                       'hybrid feature concatenates region features)')
    if self.use_regions and not self.propose_regions:
      raise ValueError('config.model.propose_regions=False needs config.model.use_regions=False '
                       '(the region pass crops the proposed regions)')
    if not 0 < self.nms_iou:
      raise ValueError(f'config.model.nms_iou must be > 0, got {self.nms_iou}')
    if min(self.sigma, self.geometry_scale, self.pad, self.region_size) < 0:
      raise ValueError('config.model.sigma, geometry_scale, pad and region_size must be >= 0')
    if not 0 <= self.feature_dropout < 1:
      raise ValueError(f'config.model.feature_dropout must be in [0, 1), got '
                       f'{self.feature_dropout}')
    if not 0 < self.region_side <= 1:
      raise ValueError(f'config.model.region_side must be in (0, 1] (a fraction of the input '
                       f'side), got {self.region_side}')
    if not 0 < self.overlap_threshold <= 1:
      raise ValueError(f'config.model.overlap_threshold must be in (0, 1], got '
                       f'{self.overlap_threshold}')
    if self.region_scoring != 'fixed_centre':  # 'fixed_centre': M's grid is checked in __call__
      self._check_anchors()
    super().__post_init__()

  def _check_anchors(self):
    g = self.geometry()
    _, edge = anchors_lib.nts_default_anchors(g.input_hw, g.scale)
    if self.num_regions > len(edge):
      raise ValueError(f'config.model.num_regions={self.num_regions} exceeds the {len(edge)} '
                       'anchors')
    lowest = float(min(edge[:, 0].min(), edge[:, 1].min()))
    if g.pad + lowest < 0:
      raise ValueError(f'config.model.pad={g.pad} is too small: anchors start at {lowest:.1f} px '
                       '(NTS-Net pads by 224 at 448)')

  def geometry(self) -> Geometry:
    """The paper's 448 geometry (448 input, padding 224, regions zoomed to 224) scaled to the input
    size for the fields left at 0: with s = min(H, W) / 448, geometry_scale = s (the anchors are
    the 448 set times s) and pad = region_size = max(1, round(224 s)). At 448 this is exactly
    NTS-Net; at 64x64, s = 1/7 and 32-px padding and regions."""
    h, w = (int(v) for v in self.input_hw)
    auto = max(1, int(round(224 * min(h, w) / 448)))
    return Geometry((h, w), float(self.geometry_scale or min(h, w) / 448), int(self.pad or auto),
                    int(self.region_size or auto))

  def integer_boxes(self) -> np.ndarray:
    """(N, 4) int64 NTS-Net integer anchors `int(edge + pad) - pad`, unpadded frame."""
    g = self.geometry()
    _, edge = anchors_lib.nts_default_anchors(g.input_hw, g.scale)
    return anchors_lib.padded_integer_boxes(edge, g.pad) - g.pad

  def candidate_boxes(self, grid_hw: tuple[int, int]) -> np.ndarray:
    """(N, 4) int64 unpadded candidate boxes of `region_scoring` for an attention map M of
    `grid_hw` cells: the integer anchors, or one fixed-side box per cell of M ('fixed_centre')."""
    if self.region_scoring != 'fixed_centre':
      return self.integer_boxes()
    g = self.geometry()
    side = proposals.region_side_px(g.input_hw, self.region_side)
    return proposals.fixed_centre_boxes(tuple(grid_hw), g.input_hw, side)

  def setup(self):
    # The backbone runs twice per forward pass (image, regions), so it is built here once.
    self.net = backbones_lib.of(self)
    if self.region_bn == 'separate' and self.use_regions:
      self.region_net = self._mapped_backbone()

  def _mapped_backbone(self) -> nn.Module:
    """A clone of the backbone named 'region_backbone' whose params are the backbone's."""
    bb = self.net
    kw = {f.name: getattr(bb, f.name) for f in dataclasses.fields(bb)
              if f.init and f.name not in ('parent', 'name')}
    mapped = nn.map_variables(type(bb), 'params',
                              trans_in_fn=lambda _: {'params': self.net.variables['params']},
                              trans_out_fn=lambda _: {}, init=self.is_initializing(),
                              mutable=True)
    return mapped(**kw, name='region_backbone')

  def _region_net(self) -> nn.Module:
    """The backbone for the zoomed regions (after the image pass): the same parameters, always.

    region_bn='shared': literally the same module, so BatchNorm running statistics are updated by
    the image pass and then by the region pass (NTS-Net's PyTorch behaviour); evaluation then
    normalises both with that mixture, unlike training, where each pass uses its own batch's
    statistics. region_bn='separate': a clone named 'region_backbone' whose params are mapped to
    the image backbone's (no copy; gradients reach 'backbone/') but with its own `batch_stats`.
    Training computes exactly the same function either way; only the running statistics that
    evaluation uses differ (on synthetic_parts, 'shared' cost the hybrid 31 points of test
    top-1; docs/methods/focus_discriminate.md).
    """
    if self.region_bn == 'shared' or 'batch_stats' not in self.net.variables:  # nothing to separate
      return self.net
    return self.region_net

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False, labels=None) -> dict:
    b = images.shape[0]
    g = self.geometry()
    z = self.net(images, train=train)['features'][self.layer]
    drop = lambda f: nn.Dropout(self.feature_dropout)(f, deterministic=not train)
    image_feat = drop(jnp.mean(z.astype(jnp.float32), axis=(1, 2)))
    image_fc = Linear(self.num_classes, dtype=self.dtype, name='image_classifier')
    image_logits = image_fc(image_feat)
    out = {'image_logits': image_logits}
    if not self.propose_regions:  # the image branch alone
      out.update(logits=image_logits, features=image_feat)
      return out

    # Attention (eq. 2): class activation maps from the image classifier's kernel, no bias.
    cams = image_fc(jax.lax.stop_gradient(z), use_bias=False)  # (B, h, w, C) float32
    cams = jax.lax.stop_gradient(cams)
    if self.attention == 'max_cam':
      m = cams.max(axis=-1)
    else:  # 'single_cam'
      cls = labels if labels is not None else jnp.argmax(image_logits, -1)
      m = jnp.take_along_axis(cams, cls[:, None, None, None], axis=-1)[..., 0]
    m = gaussian_blur(m, self.sigma, self.smoothing_truncate, self.smoothing_mode)
    out['attention'] = m

    candidates = self.candidate_boxes(m.shape[1:])
    if self.num_regions > len(candidates):
      raise ValueError(f'config.model.num_regions={self.num_regions} exceeds the '
                       f'{len(candidates)} candidate regions ({self.region_scoring!r} on a '
                       f'{m.shape[1]}x{m.shape[2]} attention map)')
    scores = proposals.candidate_scores(m, candidates, g.input_hw, self.region_scoring,
                                        self.anchor_score)
    keep, boxes = proposals.select(scores, candidates, self.num_regions, self.nms_iou)
    out.update(anchor_scores=scores, region_indices=keep, boxes=boxes)  # boxes: (B, m, 4)

    if not self.use_regions:
      out.update(logits=image_logits, features=image_feat)
      return out
    fill = (jnp.asarray(pad_rgb(self.net)) if self.pad_value == 'mean'
            else jnp.zeros((3,), jnp.float32))
    x = images.astype(jnp.float32) - fill
    crops = crop_and_resize(x, boxes, g.region_size, self.align_corners) + fill
    crops = crops.reshape((b * self.num_regions,) + crops.shape[2:])
    zr = self._region_net()(crops, train=train)['features'][self.layer]
    region_feat = drop(jnp.mean(zr.astype(jnp.float32), axis=(1, 2)).reshape(
        b, self.num_regions, -1))
    region_logits = Linear(self.num_classes, dtype=self.dtype, name='region_classifier')(
        region_feat)
    out['region_logits'] = region_logits
    if not self.use_hybrid:
      out.update(logits=image_logits, features=image_feat)
      return out
    top = region_feat[:, :self.num_hybrid]
    hybrid_fc = Linear(self.num_classes, dtype=self.dtype, name='hybrid_classifier')
    hybrid_feat = self._hybrid_feature(image_feat, top)
    hybrid_logits = hybrid_fc(hybrid_feat)
    out.update(hybrid_logits=hybrid_logits, logits=hybrid_logits, features=hybrid_feat)
    if not train:  # the slot-order diagnostic (step 6): every region one slot up
      out['hybrid_logits_rolled'] = hybrid_fc(
          self._hybrid_feature(image_feat, jnp.roll(top, -1, axis=1)))
    return out

  def _hybrid_feature(self, image_feat: jax.Array, regions: jax.Array) -> jax.Array:
    """F^I (B, n) and the top-l region features (B, l, n) -> the hybrid feature (step 6)."""
    if self.hybrid_fusion == 'concat':
      pooled = regions.reshape(regions.shape[0], -1)
    elif self.hybrid_fusion == 'mean':
      pooled = regions.mean(axis=1)
    else:  # 'max'
      pooled = regions.max(axis=1)
    return jnp.concatenate([image_feat, pooled], axis=-1)
