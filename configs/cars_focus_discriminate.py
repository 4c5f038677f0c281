"""focus_discriminate on Stanford Cars (196 models),
the recipe of Feng, Fu & Zhao 2019, "Learning to Focus and Discriminate for Fine-grained
Classification" (fgjax.methods.focus_discriminate.paper_recipe).

python -m fgjax.data.prepare cars196 --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/cars_focus_discriminate.py --workdir=DIR \
  --config.model.backbone_pretrained=WEIGHTS/resnet50
python -m fgjax.train --config=configs/cars_focus_discriminate.py:runlocal \
  --workdir=/tmp/x  # CPU smoke run

ResNet-50 at 448, 160/448 regions on the cells of M, NMS 0.25, 6 regions zoomed to 224, hybrid of
the image and top-4 region features; SGD 0.01 (x0.1 at epochs 40, 80), 100 epochs, backbone at
0.1x lr.

`:image_level` is the paper's "image level only" ablation (combine: `:image_level,runlocal`).
Region readings (docs/methods/focus_discriminate.md, "Readings"): the paper's 160x160 regions
centred on the cells of M by default (`region_scoring='fixed_centre'`, chosen on the embedded
benchmark); `--config.model.region_scoring=anchor_mean` scores NTS-Net's anchors by mean attention
(fgjax before 2026-12), `=anchor_excess` by attention mass above the image mean;
`--config.model.hybrid_fusion=max` pools the region features before the hybrid classifier.
"""

from fgjax.default_config import get_base_config, parse_arg
from fgjax.methods.focus_discriminate import paper_recipe


def get_config(arg=None):
  arg = parse_arg(arg, image_level=False)
  c = paper_recipe(get_base_config(), runlocal=arg.runlocal)
  if arg.image_level:  # the paper's "image level only" ablation
    c.model.use_hybrid = False
  c.dataset.name = 'cars196'
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'test'
  c.model.allow_random_init = arg.runlocal  # no weights in a smoke run
  return c
