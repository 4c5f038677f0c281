"""bilinear_lstm re-identification on VIPeR split 0 of 10 (fgjax.default_config.bilinear_lstm_reid_recipe).

python -m fgjax.data.prepare viper --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/viper_bilinear_lstm.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg19 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/viper_bilinear_lstm.py:runlocal --workdir=DIR ...   # CPU smoke run
"""

from fgjax.default_config import bilinear_lstm_reid_recipe, get_base_config


def get_config(arg=None):
  c = bilinear_lstm_reid_recipe(
      get_base_config(), query_split='split0_query', gallery_split='split0_gallery', arg=arg)
  c.dataset.name = 'viper'
  c.dataset.train_split = 'split0_train'
  return c
