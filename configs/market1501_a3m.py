"""A3M re-identification on Market-1501 (448x224 input, ResNet-50 layer4, d = 512), paper variant.

python -m fgjax.data.prepare market1501 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/market1501_a3m.py --workdir=DIR \
  --config.model.backbone_pretrained=WEIGHTS/resnet50
python -m fgjax.train --config=configs/market1501_a3m.py:variant=official_code ...  # Keras code
python -m fgjax.train --config=configs/market1501_a3m.py:runlocal --workdir=DIR   # CPU smoke run

Seed 002 reports R1 86.54 / mAP 68.97 with the 27 attribute annotations of Lin et al. 2017
(12 groups: gender, hair, sleeve, lower length, lower type, hat, backpack, bag, handbag (2 each),
age (4), upper colour (8), lower colour (9)). The Market-1501 builder has no attribute labels, so
this config trains the same 12 attribute branches without them (the paper's "w/o attr-label";
`attribute_field=''`); with an attribute field in the dataset, set
--config.model.attribute_field=FIELD. Identity classification in training; CMC / mAP between
query and gallery in evaluation. Recipe: fgjax.methods.a3m.a3m_recipe (paper section 4.1.4);
the argument `:variant=official_code` (default `paper`) selects the authors' Keras code's reading
and its loss weights, dropout and BatchNorm settings.
`:ablation=baseline1` (and the other ablations of fgjax/models/a3m.py) trains an ablation.
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.a3m import a3m_recipe


def get_config(arg=None):
  arg = parse_arg(arg, variant='paper', ablation='none')
  c = a3m_recipe(get_base_config(), arg.variant)
  c.model.ablation = arg.ablation
  c.dataset.name = 'market1501'
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'query'
  c.dataset.resize_size, c.dataset.resize_width = 480, 240
  c.dataset.image_size, c.dataset.image_width = 448, 224  # people are tall: 448 x 224
  c.model.attribute_field = ''
  c.model.attribute_classes = (2, 2, 2, 2, 2, 2, 2, 2, 2, 4, 8, 9)
  c.eval.protocol = 'reid'
  c.eval.query_split, c.eval.gallery_split = 'query', 'gallery'
  return smoke_run(c, image_size=64, small_backbone=True) if arg.runlocal else c
