"""bcnn / bcnn_spp: bilinear CNN baselines (Lin et al. 2015; seed 000 section 4 baselines)."""

from __future__ import annotations

import ml_collections
import numpy as np

from fgjax import losses
from fgjax.methods import (Method, add_two_stream_fields, check_two_streams, compute_dtype,
                           logits_and_features, register, two_stream_backbones,
                           two_stream_pretrained)


def _bcnn_model_config() -> ml_collections.ConfigDict:
  m = add_two_stream_fields(ml_collections.ConfigDict())
  m.sqrt_variant = 'sign'  # 'sign' | 'cvl_umass' | 'haomood' (see fgjax.ops.bilinear.signed_sqrt)
  m.sqrt_eps = 1e-5
  m.l2_eps = 1e-12
  m.dropout_rate = 0.0
  m.label_smoothing = 0.0
  return m


def _make_bcnn(spp: bool):
  def build(config, meta):
    from fgjax.models.bilinear import BCNN  # pylint: disable=g-import-not-at-top
    m, dtype = config.model, compute_dtype(config)
    backbone_a, backbone_b = two_stream_backbones(config, dtype)
    return BCNN(
        num_classes=meta.num_classes, backbone_a=backbone_a, backbone_b=backbone_b,
        layer_a=m.layer_a, layer_b=m.layer_b or None,
        proj_dim_a=m.proj_dim_a or None, proj_dim_b=m.proj_dim_b or None, spp=spp,
        sqrt_variant=m.sqrt_variant, sqrt_eps=m.sqrt_eps, l2_eps=m.l2_eps,
        dropout_rate=m.dropout_rate, dtype=dtype)

  def check(config):
    check_two_streams(config, min_grid=2 if spp else 1)
    from fgjax.ops.bilinear import SQRT_VARIANTS  # pylint: disable=g-import-not-at-top
    if config.model.sqrt_variant not in SQRT_VARIANTS:
      raise ValueError(f'config.model.sqrt_variant must be one of {", ".join(SQRT_VARIANTS)}, '
                       f'got {config.model.sqrt_variant!r}')
  return build, check


def _captured(outputs: dict, name: str):
  calls = outputs.get('intermediates', {}).get(name, {}).get('__call__')
  return None if not calls else calls[0]


def attention_panels(outputs, index, config, options):  # pylint: disable=unused-argument
  """B-CNN has no attention: the panel is the per-location norm of the bilinear feature,
  |a_uv b_uv^T|_F = |a_uv| |b_uv| (before pooling and normalisation), from the stream maps that
  predict captures (`capture` below); top-left aligned when the streams' grids differ."""
  from fgjax import overlays  # pylint: disable=g-import-not-at-top
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
  return [overlays.Panel(
      title='no attention in B-CNN: bilinear feature norm\n|a_uv||b_uv| per location',
      heatmap=energy, extent=(0.0, 0.0, h / grid_a[0], w / grid_a[1]),
      colorbar_label='|a||b|')]


for _name, _spp, _desc in (
    ('bcnn', False, 'bilinear CNN: outer product at every location, sum-pool, signed sqrt, l2'),
    ('bcnn_spp', True, 'bilinear CNN with a 2-level spatial pyramid (1x1 + 2x2)')):
  _build, _check = _make_bcnn(_spp)
  register(Method(name=_name, build_model=_build, loss_fn=losses.classification,
                  predict_fn=logits_and_features, default_model_config=_bcnn_model_config,
                  check_config=_check, pretrained=two_stream_pretrained, description=_desc,
                  attention_panels=attention_panels,
                  panel_captures=('backbone_a', 'backbone_b', 'proj_a', 'proj_b')))
