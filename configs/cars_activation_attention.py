"""activation_attention (Shen & Liu 2018) on Stanford Cars (196 models), the paper's recipe
(fgjax.methods.activation_attention.paper_recipe: ResNet-50 layer4, 16 local classifiers, 3 scales
trained in sequence, lr 1e-4, 40 epochs per scale, short edge 448).

python -m fgjax.data.prepare cars196 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/cars_activation_attention.py --workdir=DIR \
  --config.model.backbone_pretrained=WEIGHTS/resnet50
python -m fgjax.train --config=configs/cars_activation_attention.py:runlocal \
  --workdir=/tmp/x  # CPU smoke run

`:single` trains scale 1 alone (the 1-scale baseline; combine: `:single,runlocal`).
"""

from fgjax.default_config import get_base_config, parse_arg
from fgjax.methods.activation_attention import paper_recipe


def get_config(arg=None):
  arg = parse_arg(arg, single=False)
  c = paper_recipe(get_base_config(), runlocal=arg.runlocal, single=arg.single)
  c.dataset.name = 'cars196'
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'test'
  c.model.allow_random_init = arg.runlocal  # no weights in a smoke run
  return c
