"""B-CNN [D,D] (one shared small-CNN stream) on the embedded synthetic_parts dataset, CPU-sized.

python -m fgjax.train --config=configs/synthetic_bcnn.py --workdir=/tmp/fgjax/bcnn
"""

from fgjax import methods
from fgjax.default_config import get_base_config, synthetic_cpu_recipe


def get_config():
  c = synthetic_cpu_recipe(get_base_config())
  c.method = 'bcnn'
  c.model = methods.get(c.method).default_model_config()
  c.model.backbone_a = 'small_cnn'
  c.model.layer_a = 'conv4'
  return c
