"""B-CNN [D,M] re-identification on Market-1501 (448x224 input) (fgjax.methods.bcnn.bcnn_dm_reid_recipe).

python -m fgjax.data.prepare market1501 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/market1501_bcnn.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg16 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/market1501_bcnn.py:runlocal --workdir=DIR   # CPU smoke run
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.bcnn import bcnn_dm_reid_recipe


def get_config(arg=None):
  arg = parse_arg(arg)
  c = bcnn_dm_reid_recipe(get_base_config(), query_split='query', gallery_split='gallery')
  c.dataset.name = 'market1501'
  c.dataset.train_split = 'train'
  c.dataset.image_size, c.dataset.image_width = 448, 224  # people are tall: 448 x 224
  c.dataset.resize_size, c.dataset.resize_width = 454, 234  # room for the +-3 / +-5 px shifts
  return smoke_run(c, image_size=112) if arg.runlocal else c
