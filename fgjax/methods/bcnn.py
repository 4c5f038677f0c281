"""bcnn / bcnn_spp: bilinear CNN baselines (Lin et al. 2015; Wu & Wang 2017, Sec. 4 baselines)."""

from __future__ import annotations

import ml_collections
import numpy as np

from fgjax import default_config, losses
from fgjax.methods.common import Method, logits_and_features
from fgjax.methods.two_stream import check_two_streams, two_stream_pretrained
from fgjax.models.bilinear import BCNN
from fgjax.visualisation import panels


def _check(min_grid: int):
  return lambda config: check_two_streams(config, min_grid=min_grid)


def _captured(outputs: dict, name: str):
  calls = outputs.get('intermediates', {}).get(name, {}).get('__call__')
  return None if not calls else calls[0]


def attention_panels(outputs, index, config, options):  # pylint: disable=unused-argument
  """B-CNN has no attention: the panel is the per-location norm of the bilinear feature,
  |a_uv b_uv^T|_F = |a_uv| |b_uv| (before pooling and normalisation), from the stream maps that
  predict captures (`capture` below); top-left aligned when the streams' grids differ."""
  m = config.model
  feats_a = _captured(outputs, 'backbone_a')['features']
  a = np.asarray(feats_a[m.layer_a][index], np.float64)
  grid_a = a.shape[:2]
  layer_b = m.layer_b or m.layer_a
  if m.backbone_b:
    b = np.asarray(_captured(outputs, 'backbone_b')['features'][layer_b][index], np.float64)
  else:
    b = np.asarray(feats_a[layer_b][index], np.float64)
  h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
  a, b = a[:h, :w], b[:h, :w]
  for name, dim in (('proj_a', m.proj_dim_a), ('proj_b', m.proj_dim_b)):
    if dim and _captured(outputs, name) is not None:  # the 1x1 projection's output, then ReLU
      proj = np.maximum(np.asarray(_captured(outputs, name)[index], np.float64), 0.0)
      a, b = (proj, b) if name == 'proj_a' else (a, proj)
  if not m.proj_dim_b and not m.backbone_b and layer_b == m.layer_a:
    b = a  # symmetric [D,D]: the same (projected) map on both sides
  energy = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
  return [panels.Panel(
      title='no attention in B-CNN: bilinear feature norm\n|a_uv||b_uv| per location',
      heatmap=energy, extent=(0.0, 0.0, h / grid_a[0], w / grid_a[1]),
      colorbar_label='|a||b|')]


def _method(name: str, spp: bool, description: str) -> Method:
  return Method(name=name, model=BCNN, fixed_fields={'spp': spp}, loss_fn=losses.classification,
                predict_fn=logits_and_features, check_config=_check(min_grid=2 if spp else 1),
                pretrained=two_stream_pretrained, description=description,
                attention_panels=attention_panels,
                panel_captures=('backbone_a', 'backbone_b', 'proj_a', 'proj_b'))


BCNN_METHOD = _method(
    'bcnn', False, 'bilinear CNN: outer product at every location, sum-pool, signed sqrt, l2')
BCNN_SPP_METHOD = _method(
    'bcnn_spp', True, 'bilinear CNN with a 2-level spatial pyramid (1x1 + 2x2)')


def bcnn_dm_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """B-CNN [D,M] as Wu & Wang 2017 run it on real datasets.

  Streams: VGG-16 relu5_3 (28x28 at 448) x VGG-M relu5 (27x27; D is cropped to 27x27). Input
  448x448; augmentation: horizontal flip and shifts of +-5 px horizontally, +-3 px vertically
  without padding (the crop window moves inside a 454x458 resize). Two-step training: the
  classifier alone on fixed features (a high rate, as logistic regression), then everything at
  lr 0.001. The paper gives no epoch counts or weight decay for B-CNN; 10 + 30 epochs and 5e-4
  (Lin et al.'s B-CNN code) are this recipe's choices. Needs ImageNet weights for both streams:
  --config.model.backbone_a_pretrained=DIR --config.model.backbone_b_pretrained=DIR.
  """
  c.method = 'bcnn'
  c.model = BCNN_METHOD.default_model_config()
  c.model.backbone_a, c.model.layer_a = 'vgg16', 'relu5_3'
  c.model.backbone_b, c.model.layer_b = 'vggm', 'relu5'
  c.dataset.resize = 'fixed'
  c.dataset.resize_size, c.dataset.resize_width = 454, 458
  c.dataset.image_size = 448
  c.dataset.random_crop = False
  c.dataset.hflip = True
  c.dataset.shift_y, c.dataset.shift_x, c.dataset.shift_padding = 3, 5, False
  # Each stage sets its own learning rate; the base one stays the schema's default.
  default_config.sgd(c, c.optim.learning_rate, weight_decay=5e-4, schedule='constant')
  c.stages = (
      ml_collections.ConfigDict({'name': 'head', 'num_epochs': 10.0,
                                 'frozen': '^backbone', 'learning_rate': 1.0}),
      ml_collections.ConfigDict({'name': 'all', 'num_epochs': 30.0, 'learning_rate': 0.001}))
  c.train.global_batch_size = 32
  c.train.log_every_steps = 20
  c.train.checkpoint_every_steps = 500
  c.eval.batch_size = 32
  return c


def bcnn_dm_reid_recipe(c: ml_collections.ConfigDict, query_split: str,
                        gallery_split: str) -> ml_collections.ConfigDict:
  """`bcnn_dm_recipe` for re-identification: identity classification in training, CMC and mAP
  between `query_split` and `gallery_split` in evaluation (eval.protocol='reid').

  Both streams are projected to 64 channels first (1x1 conv), so the ranking feature has
  64*64 = 4096 dimensions instead of 512*512 = 262,144 (the gallery's features are ranked on host).
  """
  c = bcnn_dm_recipe(c)
  c.model.proj_dim_a = c.model.proj_dim_b = 64
  c.dataset.eval_split = query_split
  c.eval.protocol = 'reid'
  c.eval.query_split, c.eval.gallery_split = query_split, gallery_split
  return c
