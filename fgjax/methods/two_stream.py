"""What the two-stream methods (bcnn, bcnn_spp, bilinear_lstm) share beyond their module's fields:
the streams' config checks and their ImageNet weight directories.

The stream fields themselves (backbone_a / layer_a / backbone_a_kwargs / backbone_a_pretrained,
the same for stream B, proj_dim_a / proj_dim_b, allow_random_init) are declared once, on the
models (fgjax.models.bilinear.TwoStreamFields).
"""

from __future__ import annotations

from fgjax.methods.common import check_backbone_layer, check_pretrained


def check_two_streams(config, min_grid: int) -> None:
  """Both streams' backbones, layers (grid >= min_grid) and weight directories."""
  m = config.model
  check_backbone_layer(config, 'backbone_a', 'layer_a', min_grid)
  if m.backbone_b:
    check_backbone_layer(config, 'backbone_b', 'layer_b', min_grid, layer=m.layer_b or m.layer_a)
  check_pretrained(config, 'backbone_a', 'backbone_a_pretrained')
  if m.backbone_b_pretrained and not m.backbone_b:
    raise ValueError('config.model.backbone_b_pretrained is set but config.model.backbone_b is '
                     "'' (one shared stream): put the weights in backbone_a_pretrained")
  check_pretrained(config, 'backbone_b', 'backbone_b_pretrained')


def two_stream_pretrained(config) -> list[tuple[str, str]]:
  """`Method.pretrained` of a two-stream model: each stream's weight directory, if set."""
  m = config.model
  return [(d, p) for d, p in ((m.backbone_a_pretrained, 'backbone_a/'),
                              (m.backbone_b_pretrained, 'backbone_b/')) if d]
