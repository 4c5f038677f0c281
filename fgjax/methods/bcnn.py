"""bcnn / bcnn_spp: bilinear CNN baselines (Lin et al. 2015; seed 000 section 4 baselines)."""

from __future__ import annotations

import ml_collections

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


for _name, _spp, _desc in (
    ('bcnn', False, 'bilinear CNN: outer product at every location, sum-pool, signed sqrt, l2'),
    ('bcnn_spp', True, 'bilinear CNN with a 2-level spatial pyramid (1x1 + 2x2)')):
  _build, _check = _make_bcnn(_spp)
  register(Method(name=_name, build_model=_build, loss_fn=losses.classification,
                  predict_fn=logits_and_features, default_model_config=_bcnn_model_config,
                  check_config=_check, pretrained=two_stream_pretrained, description=_desc))
