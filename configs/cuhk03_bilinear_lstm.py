"""bilinear_lstm re-identification on CUHK03 labeled 767/700 (fgjax.methods.bilinear_lstm.bilinear_lstm_reid_recipe).

python -m fgjax.data.prepare cuhk03 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/cuhk03_bilinear_lstm.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg19 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/cuhk03_bilinear_lstm.py:runlocal --workdir=DIR ...   # CPU smoke run
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.bilinear_lstm import bilinear_lstm_reid_recipe


def get_config(arg=None):
  arg = parse_arg(arg)
  c = bilinear_lstm_reid_recipe(
      get_base_config(), query_split='query', gallery_split='gallery', runlocal=arg.runlocal)
  c.dataset.name = 'cuhk03'
  c.dataset.train_split = 'train'
  return smoke_run(c) if arg.runlocal else c  # + random init (no ImageNet weights)
