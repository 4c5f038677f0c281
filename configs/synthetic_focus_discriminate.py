"""focus_discriminate on the embedded synthetic_parts dataset, CPU-sized (small_cnn at 64x64).

python -m fgjax.train --config=configs/synthetic_focus_discriminate.py --workdir=/tmp/fgjax/fd
python -m fgjax.train --config=configs/synthetic_focus_discriminate.py:image_level \
  --workdir=/tmp/fgjax/fd_img

The paper's geometry scaled by 64/448 = 1/7 (fgjax.methods.focus_discriminate, "Geometry"):
regions of 160/448 of the side centred on the cells of M (the default `region_scoring`;
`--config.model.region_scoring=anchor_mean` scores the 1614 NTS-Net anchors shrunk by 1/7, as the
results in docs/methods/focus_discriminate.md were measured), zero padding 32 px, zoomed regions
32x32 (224 at 448), NMS 0.25, m = 6 regions, l = 4 in the hybrid feature. Arguments (after ':'):
  image_level  the paper's "image level only" ablation (no hybrid classifier; predict image logits)
  single_cam   attention from the single CAM of the predicted class instead of eq. 2's max
  image_only   no regions at all: image classifier alone (GAP + FC baseline)
"""

from fgjax.default_config import get_base_config, parse_arg, synthetic_cpu_recipe
from fgjax.methods.focus_discriminate import METHOD


def get_config(arg=None):
  arg = parse_arg(arg, image_level=False, single_cam=False, image_only=False)
  c = synthetic_cpu_recipe(get_base_config())
  c.method = 'focus_discriminate'
  c.model = METHOD.default_model_config()
  c.model.backbone = 'small_cnn'
  c.model.layer = 'conv4'
  c.optim.lr_multipliers = {}
  # 15 epochs of 75 steps (batch 32), the synthetic recipe's budget: 4.5-5 minutes measured on 2
  # CPU cores shared with one other training run (results: docs/methods/focus_discriminate.md).
  c.train.num_epochs = 15.0
  if arg.image_level or arg.image_only:
    c.model.use_hybrid = False
  if arg.image_only:
    c.model.use_regions = False
  if arg.single_cam:
    c.model.attention = 'single_cam'
  return c
