"""bilinear_lstm re-identification on Market 1501 (fgjax.default_config.bilinear_lstm_reid_recipe).

python -m fgjax.data.prepare market1501 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/market1501_bilinear_lstm.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg19 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/market1501_bilinear_lstm.py:runlocal --workdir=DIR ...   # CPU smoke run
"""

from fgjax.default_config import bilinear_lstm_reid_recipe, get_base_config


def get_config(arg=None):
  c = bilinear_lstm_reid_recipe(
      get_base_config(), query_split='query', gallery_split='gallery', arg=arg)
  c.dataset.name = 'market1501'
  c.dataset.train_split = 'train'
  if arg != 'runlocal':  # people are tall: 448 x 224, with room for the +-3 / +-5 px shifts
    c.dataset.image_size, c.dataset.image_width = 448, 224
    c.dataset.resize_size, c.dataset.resize_width = 454, 234
  return c
