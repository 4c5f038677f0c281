"""B-CNN [D,M] re-identification on CUHK03 labeled, the 767/700 protocol (fgjax.methods.bcnn.bcnn_dm_reid_recipe).

python -m fgjax.data.prepare cuhk03 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/cuhk03_bcnn.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg16 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/cuhk03_bcnn.py:runlocal --workdir=DIR   # CPU smoke run
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.bcnn import bcnn_dm_reid_recipe


def get_config(arg=None):
  arg = parse_arg(arg)
  c = bcnn_dm_reid_recipe(get_base_config(), query_split='query', gallery_split='gallery')
  c.dataset.name = 'cuhk03'
  c.dataset.train_split = 'train'
  return smoke_run(c, image_size=112) if arg.runlocal else c
