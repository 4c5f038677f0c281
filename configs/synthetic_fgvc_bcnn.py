"""B-CNN on the embedded benchmark synthetic_parts/fgvc (128x128, 50 classes): the baseline every
attention method on the benchmark is compared with.

python -m fgjax.train --config=configs/synthetic_fgvc_bcnn.py --workdir=/tmp/fgjax/fgvc_bcnn
python -m fgjax.train --config=configs/synthetic_fgvc_bcnn.py:streams=dd --workdir=...   # [D,D]

Streams (`fgjax.default_config.fgvc_streams`): [D,M] by default, the small stand-ins of Wu & Wang
2017's VGG-16 x VGG-M pair, both ending at an 8x8 grid; `:streams=dd` uses D twice (one shared
backbone). Recipe: `synthetic_fgvc_recipe` (SGD, cosine, 40 epochs).

`:weights=DIR` starts the backbones from `python -m benchmarks.pretrain --out=DIR` (the
pretrained layers train at the full learning rate); without it they start from scratch.
"""

from fgjax.default_config import (fgvc_streams, fgvc_weights, get_base_config, parse_arg,
                                  synthetic_fgvc_recipe)
from fgjax.methods.bcnn import BCNN_METHOD


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=None, weights='', streams='dm')
  c = synthetic_fgvc_recipe(get_base_config())
  c.method = 'bcnn'
  c.model = fgvc_streams(BCNN_METHOD.default_model_config(), arg.streams)
  return fgvc_weights(c, arg.weights)
