"""B-CNN [D,M] on CUHK03 labeled, the 767/700 protocol (re-identification), evaluated by CMC and mAP (eval.protocol='reid').

python -m fgjax.data.prepare cuhk03 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/cuhk03_bcnn.py --workdir=DIR \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg16 --config.model.backbone_b_pretrained=WEIGHTS/vggm

Training classifies the training identities; evaluation ranks the gallery for every query with the
l2-normalised bilinear feature. Both streams are projected to 64 channels first (1x1 conv), so the
feature has 64*64 = 4096 dimensions instead of 512*512 = 262,144 (the gallery's features are held on
the host for ranking).
"""

from fgjax.default_config import bcnn_dm_recipe, get_base_config


def get_config():
  c = bcnn_dm_recipe(get_base_config())
  c.dataset.name = 'cuhk03'
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'query'
  c.model.proj_dim_a = c.model.proj_dim_b = 64
  c.eval.protocol = 'reid'
  c.eval.query_split = 'query'
  c.eval.gallery_split = 'gallery'
  return c
