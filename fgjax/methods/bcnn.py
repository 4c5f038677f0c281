"""bcnn / bcnn_spp: bilinear CNN baselines (Lin et al. 2015; seed 000 section 4 baselines)."""

from __future__ import annotations

import ml_collections

from fgjax import losses
from fgjax.methods import (Method, backbone_kwargs, check_backbone_layer, check_pretrained,
                           compute_dtype, logits_and_features, register)
from fgjax.models import backbones as backbones_lib

def _bcnn_model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.backbone_a = 'small_cnn'  # stream A ("D" in [D,M])
  m.layer_a = 'conv4'
  m.backbone_a_kwargs = ml_collections.ConfigDict()
  m.backbone_b = ''  # '' = one shared stream, symmetric [D,D]
  m.layer_b = ''  # '' = same layer name as stream A
  m.backbone_b_kwargs = ml_collections.ConfigDict()
  # Weight directories from `python -m fgjax.pretrained convert` (their preprocessing comes along).
  m.backbone_a_pretrained = ''
  m.backbone_b_pretrained = ''
  m.allow_random_init = False  # ImageNet backbones without weights are an error unless True
  m.proj_dim_a = 0  # 0 = no 1x1 projection before pooling
  m.proj_dim_b = 0
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
    backbone_a = backbones_lib.get_backbone(
        m.backbone_a, **backbone_kwargs(config, 'backbone_a', 'backbone_a_pretrained', dtype))
    backbone_b = (backbones_lib.get_backbone(
        m.backbone_b, **backbone_kwargs(config, 'backbone_b', 'backbone_b_pretrained', dtype))
                  if m.backbone_b else None)
    return BCNN(
        num_classes=meta.num_classes, backbone_a=backbone_a, backbone_b=backbone_b,
        layer_a=m.layer_a, layer_b=m.layer_b or None,
        proj_dim_a=m.proj_dim_a or None, proj_dim_b=m.proj_dim_b or None, spp=spp,
        sqrt_variant=m.sqrt_variant, sqrt_eps=m.sqrt_eps, l2_eps=m.l2_eps,
        dropout_rate=m.dropout_rate, dtype=dtype)

  def check(config):
    min_grid = 2 if spp else 1
    check_backbone_layer(config, 'backbone_a', 'layer_a', min_grid)
    if config.model.backbone_b:
      check_backbone_layer(config, 'backbone_b', 'layer_b', min_grid,
                           layer=config.model.layer_b or config.model.layer_a)
    check_pretrained(config, 'backbone_a', 'backbone_a_pretrained')
    if config.model.backbone_b_pretrained and not config.model.backbone_b:
      raise ValueError('config.model.backbone_b_pretrained is set but config.model.backbone_b is '
                       "'' (one shared stream): put the weights in backbone_a_pretrained")
    check_pretrained(config, 'backbone_b', 'backbone_b_pretrained')
    from fgjax.ops.bilinear import SQRT_VARIANTS  # pylint: disable=g-import-not-at-top
    if config.model.sqrt_variant not in SQRT_VARIANTS:
      raise ValueError(f'config.model.sqrt_variant must be one of {", ".join(SQRT_VARIANTS)}, '
                       f'got {config.model.sqrt_variant!r}')
  return build, check


def _bcnn_pretrained(config):
  m = config.model
  return [(d, p) for d, p in ((m.backbone_a_pretrained, 'backbone_a/'),
                              (m.backbone_b_pretrained, 'backbone_b/')) if d]


for _name, _spp, _desc in (
    ('bcnn', False, 'bilinear CNN: outer product at every location, sum-pool, signed sqrt, l2'),
    ('bcnn_spp', True, 'bilinear CNN with a 2-level spatial pyramid (1x1 + 2x2)')):
  _build, _check = _make_bcnn(_spp)
  register(Method(name=_name, build_model=_build, loss_fn=losses.classification,
                  predict_fn=logits_and_features, default_model_config=_bcnn_model_config,
                  check_config=_check, pretrained=_bcnn_pretrained, description=_desc))
