"""A3M re-identification on Market-1501 (448x224 input, ResNet-50 layer4, d = 512), paper variant.

python -m fgjax.data.prepare market1501 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/market1501_a3m.py --workdir=DIR \
  --config.model.backbone_pretrained=WEIGHTS/resnet50
python -m fgjax.train --config=configs/market1501_a3m.py:variant=official_code ...  # Keras code
python -m fgjax.train --config=configs/market1501_a3m.py:runlocal --workdir=DIR   # CPU smoke run

Han et al. 2018 report R1 86.54 / mAP 68.97 with the 27 identity attributes of Lin et al. 2019,
"Improving person re-identification by attribute and identity learning" (the builder's
`attributes` field). They are trained as 12 attribute groups
(fgjax.models.a3m_attributes.MARKET1501_ATTRIBUTE_COLUMNS): gender, hair, sleeve, lower length,
lower type, hat, backpack, bag, handbag (2 classes each), age (4), upper colour (8 one-hot
columns -> 8 colours + none = 9 classes) and lower colour (9 -> 10); identities without
attributes (distractors) are left out of the attribute loss. `:ablation=no_attr_label` trains
the paper's "w/o attr-label" model (the same 12 branches without their labels). Identity
classification in training; CMC / mAP between query and gallery in evaluation. Recipe:
fgjax.methods.a3m.a3m_recipe (paper section 4.1.4); the argument `:variant=official_code`
(default `paper`) selects the authors' Keras code's reading and its loss weights, dropout and
BatchNorm settings.
`:ablation=baseline1` (and the other ablations of fgjax/models/a3m.py) trains an ablation.
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.a3m import a3m_recipe
from fgjax.models.a3m_attributes import MARKET1501_ATTRIBUTE_CLASSES, MARKET1501_ATTRIBUTE_COLUMNS


def get_config(arg=None):
  arg = parse_arg(arg, variant='paper', ablation='none')
  c = a3m_recipe(get_base_config(), arg.variant)
  c.model.ablation = arg.ablation
  c.dataset.name = 'market1501'
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'query'
  c.dataset.resize_size, c.dataset.resize_width = 480, 240
  c.dataset.image_size, c.dataset.image_width = 448, 224  # people are tall: 448 x 224
  c.model.attribute_field = 'attributes'  # Lin et al.'s 27 columns
  c.model.attribute_columns = MARKET1501_ATTRIBUTE_COLUMNS  # -> 12 groups
  c.model.attribute_classes = MARKET1501_ATTRIBUTE_CLASSES
  c.eval.protocol = 'reid'
  c.eval.query_split, c.eval.gallery_split = 'query', 'gallery'
  return smoke_run(c, image_size=64, small_backbone=True) if arg.runlocal else c
