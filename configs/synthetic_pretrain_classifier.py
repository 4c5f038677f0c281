"""Pretrains one of the embedded benchmark's backbones on synthetic_parts/pretrain, the stand-in
for ImageNet (generic shape x texture classes, none of them the benchmark's markings): a plain
classifier (backbone, global average pooling, linear) at 128x128.

python -m fgjax.train --config=configs/synthetic_pretrain_classifier.py:stream=d --workdir=/tmp/pre_d
python -m fgjax.pretrained export --workdir=/tmp/pre_d --out=/tmp/weights/d

`:stream=d` (the default), `:stream=m` or `:stream=r`: the D or M stream of
configs/synthetic_fgvc_*.py, or the small ResNet the one-backbone configs take with `:backbone=r`
(fgjax.default_config.FGVC_STREAM_D / FGVC_STREAM_M / FGVC_STREAM_R).
`python -m benchmarks.pretrain --out=DIR` runs all three and exports them to DIR/d, DIR/m and
DIR/r, which the benchmark configs take as `:weights=DIR`.
"""

import ml_collections

from fgjax.default_config import (FGVC_STREAM_D, FGVC_STREAM_M, FGVC_STREAM_R, get_base_config,
                                  parse_arg, synthetic_fgvc_recipe)
from fgjax.methods.classifier import METHOD

STREAMS = {'d': FGVC_STREAM_D, 'm': FGVC_STREAM_M, 'r': FGVC_STREAM_R}


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=None, stream='d')
  if arg.stream not in STREAMS:
    raise ValueError(f"config argument stream must be one of {', '.join(STREAMS)}, got "
                     f'{arg.stream!r}')
  stream = STREAMS[arg.stream]
  c = synthetic_fgvc_recipe(get_base_config())
  c.dataset.config = 'pretrain'
  c.method = 'classifier'
  c.model = METHOD.default_model_config()
  c.model.backbone, c.model.layer = stream['backbone'], stream['layer']
  c.model.backbone_kwargs = ml_collections.ConfigDict(stream['kwargs'])
  c.optim.lr_multipliers = ml_collections.ConfigDict()  # a plain linear head on pooled features
  c.train.num_epochs = 20.0
  return c
