"""A3M on CUB-200-2011 classification (224 input, box crop, 28 attribute groups), paper variant.

python -m fgjax.data.prepare cub2011 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/cub_a3m.py --workdir=DIR \
  --config.model.backbone_pretrained=WEIGHTS/resnet50
python -m fgjax.train --config=configs/cub_a3m.py:variant=official_code ...  # the authors' code
python -m fgjax.train --config=configs/cub_a3m.py:runlocal --workdir=DIR   # CPU smoke run

Han et al. 2018 report 86.2% with ResNet-50. The 28 multi-class attribute groups are the builder's
`attribute_groups` field (class 0 = no value of the group present), whose sizes are those of the
official code (sum 340). Recipe: fgjax.methods.a3m.a3m_recipe (paper section 4.1.4). Attribute
accuracies per group are in metrics.json (attribute_accuracy/k). The argument
`:variant=official_code` (default `paper`) runs the authors' Keras code's reading instead and
writes its loss weights, dropout and BatchNorm settings into config.model (`a3m_recipe`).
`:ablation=baseline1` (and the other ablations of fgjax/models/a3m.py) trains an ablation.
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.a3m import CUB_ATTRIBUTE_GROUPS, a3m_recipe


def get_config(arg=None):
  arg = parse_arg(arg, variant='paper', ablation='none')
  c = a3m_recipe(get_base_config(), arg.variant)
  c.model.ablation = arg.ablation
  c.dataset.name = 'cub2011'
  c.dataset.crop_to_bbox = True
  c.dataset.resize_size, c.dataset.image_size = 256, 224
  c.model.attribute_field = 'attribute_groups'
  c.model.attribute_classes = CUB_ATTRIBUTE_GROUPS
  return smoke_run(c, image_size=64, small_backbone=True) if arg.runlocal else c
