"""A3M fine-grained retrieval on CUB-200-2011: train on classes 1-100, Recall@K / NMI on 101-200.

python -m fgjax.data.prepare cub2011 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/cub_a3m_retrieval.py --workdir=DIR \
  --config.model.backbone_pretrained=WEIGHTS/resnet50
python -m fgjax.train --config=configs/cub_a3m_retrieval.py:variant=official_code ...  # Keras code
python -m fgjax.train --config=configs/cub_a3m_retrieval.py:runlocal --workdir=DIR   # CPU smoke run

No attribute labels (paper section 4.1.3): the 28 attribute branches learn without supervision
("w/o attr-label"); embedding d = 384 (the paper's 384-d setting); f_final is the embedding.
Han et al. 2018 report R@1 61.2. Recipe: fgjax.methods.a3m.a3m_recipe (paper section 4.1.4); the
argument `:variant=official_code` (default `paper`) selects the authors' Keras code's reading and
its loss weights, dropout and BatchNorm settings.
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.a3m import CUB_ATTRIBUTE_GROUPS, a3m_recipe


def get_config(arg=None):
  arg = parse_arg(arg, variant='paper')
  c = a3m_recipe(get_base_config(), arg.variant)
  c.dataset.name = 'cub2011'
  c.dataset.train_split, c.dataset.eval_split = 'retrieval_train', 'retrieval_test'
  c.dataset.resize_size, c.dataset.image_size = 256, 224
  c.model.embed_dim = 384
  c.model.attribute_field = ''
  c.model.attribute_classes = CUB_ATTRIBUTE_GROUPS  # K = 28 branches (classifiers unused)
  c.eval.protocol = 'retrieval'
  return smoke_run(c, image_size=64, small_backbone=True) if arg.runlocal else c
