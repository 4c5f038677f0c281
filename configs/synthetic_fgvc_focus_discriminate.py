"""focus_discriminate (Feng, Fu & Zhao 2019, "Learning to Focus and Discriminate") on
synthetic_parts/fgvc: CAM attention, NTS-Net anchors scaled by 128/448, NMS, 6 zoomed regions,
hybrid classifier; backbone: the D stream of configs/synthetic_fgvc_bcnn.py.

python -m fgjax.train --config=configs/synthetic_fgvc_focus_discriminate.py --workdir=/tmp/fgjax/fgvc_fd
python -m fgjax.train --config=configs/synthetic_fgvc_focus_discriminate.py:image_level --workdir=...

The paper's claim checked here: hybrid > image-level only (`:image_level`, the paper's ablation:
no hybrid module, prediction from the image-level classifier).

`:weights=DIR` starts the backbones from `python -m benchmarks.pretrain --out=DIR` (the
pretrained layers train at the full learning rate); without it they start from scratch.
"""

import ml_collections

from fgjax.default_config import (fgvc_backbone, fgvc_weights, get_base_config, parse_arg,
                                  synthetic_fgvc_recipe)
from fgjax.methods.focus_discriminate import METHOD


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=None, weights='', image_level=False)
  c = synthetic_fgvc_recipe(get_base_config())
  c.method = 'focus_discriminate'
  c.model = fgvc_backbone(METHOD.default_model_config())
  c.optim.lr_multipliers = ml_collections.ConfigDict()
  if arg.image_level:
    c.model.use_hybrid = False
  return fgvc_weights(c, arg.weights)
