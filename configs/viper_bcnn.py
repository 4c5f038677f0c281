"""B-CNN [D,M] re-identification on VIPeR split 0 of 10 (316/316 identities) (fgjax.methods.bcnn.bcnn_dm_reid_recipe).

python -m fgjax.data.prepare viper --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/viper_bcnn.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg16 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/viper_bcnn.py:runlocal --workdir=DIR   # CPU smoke run
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.bcnn import bcnn_dm_reid_recipe


def get_config(arg=None):
  arg = parse_arg(arg)
  c = bcnn_dm_reid_recipe(get_base_config(), query_split='split0_query', gallery_split='split0_gallery')
  c.dataset.name = 'viper'
  c.dataset.train_split = 'split0_train'
  return smoke_run(c, image_size=112) if arg.runlocal else c
