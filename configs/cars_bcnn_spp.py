"""B-CNN + SPP [D,M] on Stanford Cars (196 models): Wu & Wang 2017's baseline 5, B-CNN [D,M] with a 2-level
spatial pyramid (1x1 + 2x2 cells) on the recipe of configs/cars_bcnn.py
(fgjax.methods.bcnn.bcnn_dm_recipe).

python -m fgjax.data.prepare cars196 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/cars_bcnn_spp.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg16 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/cars_bcnn_spp.py:runlocal --workdir=DIR   # CPU smoke run
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.bcnn import bcnn_dm_recipe


def get_config(arg=None):
  arg = parse_arg(arg)
  c = bcnn_dm_recipe(get_base_config())
  c.method = 'bcnn_spp'
  c.dataset.name = 'cars196'
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'test'
  return smoke_run(c, image_size=112) if arg.runlocal else c
