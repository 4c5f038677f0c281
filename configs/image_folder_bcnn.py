"""B-CNN [D,M] on your own images: a folder with one subfolder per class (dataset image_folder),
Wu & Wang 2017's recipe at 448x448 (fgjax.methods.bcnn.bcnn_dm_recipe).

python -m fgjax.train --config=configs/image_folder_bcnn.py --workdir=DIR \
  --config.dataset.path=FOLDER --config.model.backbone_a_pretrained=WEIGHTS/vgg16 \
  --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.train --config=configs/image_folder_bcnn.py:runlocal --workdir=DIR \
  --config.dataset.path=FOLDER   # CPU smoke run: 112x112, random init, a few steps

FOLDER is FOLDER/<class>/*.jpg (split here: --config.dataset.config=test_fraction=0.2,split_seed=0)
or FOLDER/train/<class>/ and FOLDER/test/<class>/; an optional FOLDER/annotations.csv adds boxes,
attributes, identities, cameras (fgjax.data.builders.image_folder). Any other method's config takes
the same folder with --config.dataset.name=image_folder --config.dataset.path=FOLDER.
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.bcnn import bcnn_dm_recipe


def get_config(arg=None):
  arg = parse_arg(arg)
  c = bcnn_dm_recipe(get_base_config())
  c.dataset.name = 'image_folder'
  c.dataset.path = None  # required: --config.dataset.path=FOLDER
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'test'
  return smoke_run(c, image_size=112) if arg.runlocal else c
