"""focus_discriminate (Feng, Fu & Zhao 2019, "Learning to Focus and Discriminate") on
synthetic_parts/fgvc: CAM attention, NTS-Net anchors scaled by 128/448, NMS, 6 zoomed regions,
hybrid classifier; backbone: the D stream of configs/synthetic_fgvc_bcnn.py.

python -m fgjax.train --config=configs/synthetic_fgvc_focus_discriminate.py --workdir=/tmp/fgjax/fgvc_fd
python -m fgjax.train --config=configs/synthetic_fgvc_focus_discriminate.py:image_level --workdir=...

The paper's claim checked here: hybrid > image-level only (`:image_level`, the paper's ablation:
no hybrid module, prediction from the image-level classifier).

`:backbone=r` swaps the D stream for the small ResNet (fgjax.default_config.FGVC_STREAM_R, the
stand-in of the paper's ResNet-50; same 8x8 grid); `:backbone=d` (the VGG-like D stream) stays
the default.

`:readings=before` sets the readings fgjax used before it fixed those that switched the
mechanism off (NTS-Net anchors scored by mean attention, region features concatenated in NMS order; `Method.readings_before`, docs/methods/focus_discriminate.md); the default `after` keeps
the current ones. The benchmark measures both (`python -m benchmarks.methods --before`).
`:region_scoring=fixed_centre|anchor_mean|anchor_excess` is the reading whose default the
benchmark chose ('fixed_centre'; `--readings` runs the other two, `anchor_mean` as the
`readings=before` run).

`:weights=DIR` starts the backbone from `python -m benchmarks.pretrain --out=DIR` (DIR/d or DIR/r;
the pretrained layers train at the full learning rate); without it it starts from scratch.
"""

import ml_collections

from fgjax.default_config import (fgvc_backbone, fgvc_weights, get_base_config, parse_arg,
                                  synthetic_fgvc_recipe, with_readings)
from fgjax.methods.focus_discriminate import METHOD


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=None, weights='', image_level=False, backbone='d',
                  readings='after', region_scoring=METHOD.default_model_config().region_scoring)
  c = synthetic_fgvc_recipe(get_base_config())
  c.method = 'focus_discriminate'
  c.model = fgvc_backbone(METHOD.default_model_config(), arg.backbone)
  c.optim.lr_multipliers = ml_collections.ConfigDict()
  if arg.image_level:
    c.model.use_hybrid = False
  c.model.region_scoring = arg.region_scoring
  return fgvc_weights(with_readings(c, METHOD, arg.readings), arg.weights)
