"""A3M (paper variant), small-CNN shared network, embedded synthetic_parts dataset, CPU-sized.

python -m fgjax.train --config=configs/synthetic_a3m.py --workdir=/tmp/fgjax/a3m
python -m fgjax.train --config=configs/synthetic_a3m.py:variant=official_code --workdir=DIR

The 3 part groups of synthetic_parts are the attributes (3 variants each). The argument
`:variant=official_code` (default `paper`) selects the authors' Keras code's reading and writes
its loss weights, dropout and BatchNorm settings into config.model. Baseline-1 on the same
budget: --config.model.ablation=baseline1. Re-id (query/gallery splits):
--config.eval.protocol=reid --config.dataset.eval_split=query; retrieval on the class-disjoint
splits: --config.eval.protocol=retrieval --config.dataset.train_split=retrieval_train
--config.dataset.eval_split=retrieval_test (see docs/methods/a3m.md).
"""

import ml_collections

from fgjax.default_config import get_base_config, parse_arg, synthetic_cpu_recipe
from fgjax.methods.a3m import variant_model_config


def get_config(arg=None):
  c = synthetic_cpu_recipe(get_base_config())
  c.method = 'a3m'
  c.model = variant_model_config(parse_arg(arg, runlocal=None, variant='paper').variant)
  c.model.backbone = 'small_cnn'
  c.model.layer = 'conv4'  # 8x8 grid at 64x64: L = 64
  c.model.embed_dim = 128
  c.model.attribute_field = 'attributes'
  c.model.attribute_classes = (3, 3, 3)
  # The recipe's high-rate classifier group (made for B-CNN's unit-norm feature) is not needed.
  c.optim.lr_multipliers = ml_collections.ConfigDict()
  return c
