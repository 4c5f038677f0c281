"""B-CNN + SPP (2-level pyramid, 1x1 + 2x2) on synthetic_parts, CPU-sized.

python -m fgjax.train --config=configs/synthetic_bcnn_spp.py --workdir=/tmp/fgjax/bcnn_spp
"""

from fgjax import methods
from fgjax.default_config import get_base_config, synthetic_cpu_recipe


def get_config():
  c = synthetic_cpu_recipe(get_base_config())
  c.method = 'bcnn_spp'
  c.model = methods.get(c.method).default_model_config()
  c.model.backbone_a = 'small_cnn'
  c.model.layer_a = 'conv4'
  c.model.proj_dim_a = 32  # 5 pyramid cells x 32 x 32 = 5120-d feature
  return c
