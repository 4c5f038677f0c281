"""B-CNN + 2-level spatial pyramid (1x1 + 2x2) on synthetic_parts/fgvc, the [D,M] streams of
configs/synthetic_fgvc_bcnn.py projected to 32 channels (5 x 32 x 32 = 5120-d feature).

python -m fgjax.train --config=configs/synthetic_fgvc_bcnn_spp.py --workdir=/tmp/fgjax/fgvc_spp

Wu & Wang 2017 report B-CNN+SPP above B-CNN [D,M] (their baselines 4 and 5).

`:weights=DIR` starts the backbones from `python -m benchmarks.pretrain --out=DIR` (the
pretrained layers train at the full learning rate); without it they start from scratch.
"""

from fgjax.default_config import (fgvc_streams, fgvc_weights, get_base_config, parse_arg,
                                  synthetic_fgvc_recipe)
from fgjax.methods.bcnn import BCNN_SPP_METHOD


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=None, weights='')
  c = synthetic_fgvc_recipe(get_base_config())
  c.method = 'bcnn_spp'
  c.model = fgvc_streams(BCNN_SPP_METHOD.default_model_config())
  c.model.proj_dim_a = c.model.proj_dim_b = 32
  return fgvc_weights(c, arg.weights)
