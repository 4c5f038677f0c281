"""activation_attention (Shen & Liu 2018) on synthetic_parts/fgvc: 3 scales of crop-and-zoom, each
its own D-stream backbone (configs/synthetic_fgvc_bcnn.py), trained one after another.

python -m fgjax.train --config=configs/synthetic_fgvc_activation_attention.py --workdir=/tmp/fgjax/fgvc_aa
python -m fgjax.train --config=configs/synthetic_fgvc_activation_attention.py:single --workdir=...

The paper's claim checked here: 3 scales > 1 scale (`:single`, scale 1 alone, trained for the
same epochs as scale 1 of the 3-scale run). Optimiser as configs/synthetic_activation_attention.py
(Adam 1e-3: from scratch, SGD often stays at chance; docs/methods/activation_attention.md).
Epochs: 20 for scale 1, 10 for each later scale.

`:backbone=r` swaps the D stream for the small ResNet (fgjax.default_config.FGVC_STREAM_R, the
stand-in of the paper's ResNet-50; same 8x8 grid); `:backbone=d` (the VGG-like D stream) stays
the default.

`:readings=before` sets the readings fgjax used before it fixed those that switched the
mechanism off (every scale in training mode in every stage; `Method.readings_before`, docs/methods/activation_attention.md); the default `after` keeps
the current ones. The benchmark measures both (`python -m benchmarks.methods --before`).

`:weights=DIR` starts the backbones from `python -m benchmarks.pretrain --out=DIR` (DIR/d or
DIR/r; the pretrained layers train at the full learning rate); without it they start from
scratch.
"""

import ml_collections

from fgjax.default_config import (fgvc_backbone, fgvc_weights, get_base_config, parse_arg,
                                  synthetic_fgvc_recipe, with_readings)
from fgjax.methods.activation_attention import METHOD, scale_stages

EPOCHS_SCALE1 = 20.0
EPOCHS_LATER = 10.0


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=None, weights='', single=False, backbone='d', readings='after')
  c = synthetic_fgvc_recipe(get_base_config())
  c.method = 'activation_attention'
  c.model = fgvc_backbone(METHOD.default_model_config(), arg.backbone)
  c.optim.lr_multipliers = ml_collections.ConfigDict()
  c.optim.optimizer = 'adam'
  c.optim.learning_rate = 1e-3
  c.optim.weight_decay = 0.0
  c.optim.warmup_epochs = 0.25
  if arg.single:
    c.model.num_scales = 1
    c.stages = scale_stages(1, EPOCHS_SCALE1)
  else:
    c.stages = scale_stages(3, EPOCHS_SCALE1)[:1] + scale_stages(3, EPOCHS_LATER)[1:]
  c.train.num_epochs = sum(s.num_epochs for s in c.stages)
  return fgvc_weights(with_readings(c, METHOD, arg.readings), arg.weights)
