"""bilinear_lstm re-identification on Market 1501 (fgjax.methods.bilinear_lstm.bilinear_lstm_reid_recipe).

python -m fgjax.data.prepare market1501 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/market1501_bilinear_lstm.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg19 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/market1501_bilinear_lstm.py:runlocal --workdir=DIR ...   # CPU smoke run
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.bilinear_lstm import bilinear_lstm_reid_recipe


def get_config(arg=None):
  arg = parse_arg(arg)
  c = bilinear_lstm_reid_recipe(
      get_base_config(), query_split='query', gallery_split='gallery', runlocal=arg.runlocal)
  c.dataset.name = 'market1501'
  c.dataset.train_split = 'train'
  if not arg.runlocal:  # people are tall: 448 x 224, with room for the +-3 / +-5 px shifts
    c.dataset.image_size, c.dataset.image_width = 448, 224
    c.dataset.resize_size, c.dataset.resize_width = 454, 234
  return smoke_run(c) if arg.runlocal else c  # + random init (no ImageNet weights)
