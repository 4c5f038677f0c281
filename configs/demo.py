"""The README quick-start demo: B-CNN [D,D] with a small CNN on the embedded synthetic_parts data.

python -m fgjax.train --config=configs/demo.py --workdir=/tmp/fgjax_demo

Trains in a few minutes on 2 CPU cores and reaches >= 80% top-1 on the synthetic test split
(tests/test_demo_e2e.py checks it). Same model as configs/synthetic_bcnn.py, fewer epochs.
"""

from fgjax import methods
from fgjax.default_config import get_base_config, synthetic_cpu_recipe


def get_config():
  c = synthetic_cpu_recipe(get_base_config())
  c.method = 'bcnn'
  c.model = methods.get(c.method).default_model_config()
  c.model.backbone_a = 'small_cnn'
  c.model.layer_a = 'conv4'
  c.train.num_epochs = 10.0
  return c
