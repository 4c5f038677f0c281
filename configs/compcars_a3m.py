"""A3M on CompCars (web-nature classification subset, 431 models; 448 input), paper variant.

python -m fgjax.data.prepare compcars --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/compcars_a3m.py --workdir=DIR \
  --config.model.backbone_pretrained=WEIGHTS/resnet50
python -m fgjax.train --config=configs/compcars_a3m.py:variant=official_code ...  # authors' code
python -m fgjax.train --config=configs/compcars_a3m.py:runlocal --workdir=DIR   # CPU smoke run

Han et al. 2018 report 95.4% with ResNet-50 and the 5 model attributes. The builder's
`attribute_classes` field holds one class per attribute (-1 = unknown, left out of the loss):
maximum speed (6 bins), displacement (6 bins), doors, seats, type (12). The numbers of door and
seat classes come from the data: check them against the prepared dataset's
`info.metadata['attribute_num_classes']` and override --config.model.attribute_classes if they
differ (the defaults below assume 4 door and 6 seat values). Recipe:
fgjax.methods.a3m.a3m_recipe (paper section 4.1.4); the argument `:variant=official_code` (default
`paper`) selects the authors' Keras code's reading and its loss weights, dropout and BatchNorm
settings.
`:ablation=baseline1` (and the other ablations of fgjax/models/a3m.py) trains an ablation.
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.a3m import a3m_recipe


def get_config(arg=None):
  arg = parse_arg(arg, variant='paper', ablation='none')
  c = a3m_recipe(get_base_config(), arg.variant)
  c.model.ablation = arg.ablation
  c.dataset.name = 'compcars'
  c.dataset.resize_size, c.dataset.image_size = 480, 448
  c.model.attribute_field = 'attribute_classes'
  c.model.attribute_classes = (6, 6, 4, 6, 12)
  return smoke_run(c, image_size=64, small_backbone=True) if arg.runlocal else c
