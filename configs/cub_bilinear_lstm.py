"""bilinear_lstm (Wu & Wang 2017) on CUB-200-2011, the paper's settings (fgjax.methods.bilinear_lstm.bilinear_lstm_recipe).

python -m fgjax.data.prepare cub2011 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/cub_bilinear_lstm.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg19 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/cub_bilinear_lstm.py:runlocal --workdir=DIR ...   # CPU smoke run

Wu & Wang 2017 report 89.7% top-1 with this model.
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.bilinear_lstm import bilinear_lstm_recipe


def get_config(arg=None):
  arg = parse_arg(arg)
  c = bilinear_lstm_recipe(get_base_config(), arg.runlocal)
  c.dataset.name = 'cub2011'
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'test'
  return smoke_run(c) if arg.runlocal else c  # + random init (no ImageNet weights)
