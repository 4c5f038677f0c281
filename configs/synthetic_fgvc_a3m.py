"""A3M (Han et al. 2018, Attribute-Aware Attention Model) on synthetic_parts/fgvc: five attribute
groups, the part markings (head, fore, aft, tail: 5 shapes each) and the eye detail (2).

python -m fgjax.train --config=configs/synthetic_fgvc_a3m.py --workdir=/tmp/fgjax/fgvc_a3m
python -m fgjax.train --config=configs/synthetic_fgvc_a3m.py:ablation=baseline1 --workdir=...

The paper's claim checked here: A3M > Baseline-1 (the category branch alone,
`:ablation=baseline1`). Backbone: the D stream of configs/synthetic_fgvc_bcnn.py (8x8 grid).
`:backbone=r` swaps it for the small ResNet (fgjax.default_config.FGVC_STREAM_R, the stand-in of
the paper's ResNet-50; the same 8x8 grid); `:backbone=d` stays the default.

`:readings=before` sets the readings fgjax used before it fixed those that switched the
mechanism off (the paper variant's attention sigmoids without a normalisation; `Method.readings_before`, docs/methods/a3m.md); the default `after` keeps
the current ones. The benchmark measures both (`python -m benchmarks.methods --before`).

`:weights=DIR` starts the backbones from `python -m benchmarks.pretrain --out=DIR` (the
pretrained layers train at the full learning rate); without it they start from scratch.
"""

import ml_collections

from fgjax.default_config import (fgvc_backbone, fgvc_weights, get_base_config, parse_arg,
                                  synthetic_fgvc_recipe, with_readings)
from fgjax.methods.a3m import METHOD, variant_model_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=None, weights='', variant='paper', ablation='none', backbone='d',
                  readings='after')
  c = synthetic_fgvc_recipe(get_base_config())
  c.method = 'a3m'
  c.model = fgvc_backbone(variant_model_config(arg.variant), arg.backbone)
  c.model.ablation = arg.ablation
  c.model.embed_dim = 128
  c.model.attribute_field = 'attributes'
  c.model.attribute_classes = (5, 5, 5, 5, 2)
  # The recipe's 20x classifier rate is for B-CNN's unit-norm feature.
  c.optim.lr_multipliers = ml_collections.ConfigDict()
  return fgvc_weights(with_readings(c, METHOD, arg.readings), arg.weights)
