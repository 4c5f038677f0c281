"""activation_attention (Shen & Liu 2018) on the embedded synthetic_parts dataset, CPU-sized.

python -m fgjax.train --config=configs/synthetic_activation_attention.py --workdir=/tmp/fgjax/aa

Three scales (each its own small_cnn), trained one after another (`scale_stages`: stage s trains
scale s, the others frozen), EPOCHS_PER_SCALE epochs each. Until the trainer tells the model which
stage runs, every stage computes all three scales, so this is ~3x the work of training them
separately; two cheaper commands give the same sequential training (docs/methods/
activation_attention.md):

python -m fgjax.train --config=configs/synthetic_activation_attention.py:single --workdir=/tmp/fgjax/aa1
python -m fgjax.train --config=configs/synthetic_activation_attention.py:continue \
  --config.init_from.path=/tmp/fgjax/aa1 --workdir=/tmp/fgjax/aa3

(':single' = scale 1 alone, the single-scale model; ':continue' loads its scale 1 and trains
scales 2 and 3; ':continue2' then ':continue3' add one scale per command, EPOCHS_STEPWISE each.)
Geometry: 64x64 inputs (synthetic_cpu_recipe: resize 72, random 64 crop, flips, +-4 px shifts);
small_cnn conv4 (stride 8) gives an 8x8 grid, so attention boxes snap to 8-pixel cells, and scales
2-3 see the box zoomed back to 64x64. Ablations are config switches:
--config.model.losses=local|object, --config.model.num_local=1|2|4|8|16.
"""

import ml_collections

from fgjax.default_config import get_base_config, parse_arg, synthetic_cpu_recipe
from fgjax.methods.activation_attention import METHOD, scale_stages

EPOCHS_SCALE1 = 8.0  # scale 1 takes off after ~4-5 epochs from scratch (Adam 1e-3)
EPOCHS_LATER = 3.0  # scales 2 and 3 (':continue' and the one-command run)
EPOCHS_STEPWISE = 5.0  # ':continue2' / ':continue3' (one new scale per command)


MODES = ('single', 'continue', 'continue2', 'continue3')


def get_config(arg=None):
  # parse_arg also accepts runlocal, which changes nothing here: this config is CPU-sized already.
  args = parse_arg(arg, **{mode: False for mode in MODES})
  chosen = [mode for mode in MODES if args[mode]]
  if len(chosen) > 1:
    raise ValueError(f'config arguments {", ".join(chosen)} exclude each other: give one of '
                     f'{", ".join(MODES)} (or none)')
  arg = chosen[0] if chosen else ''
  c = synthetic_cpu_recipe(get_base_config())
  c.method = 'activation_attention'
  c.model = METHOD.default_model_config()
  c.model.backbone = 'small_cnn'
  c.model.layer = 'conv4'
  # The recipe's 20x classifier rate is for B-CNN's unit-norm features; the heads here are
  # plain linear classifiers on ReLU maps. From scratch, Adam at 1e-3 takes off within a few
  # epochs where SGD (0.01-0.05, the recipe's Nesterov momentum) often stays at chance
  # (docs/methods/activation_attention.md).
  c.optim.lr_multipliers = ml_collections.ConfigDict()
  c.optim.optimizer = 'adam'
  c.optim.learning_rate = 1e-3
  c.optim.weight_decay = 0.0
  c.optim.warmup_epochs = 0.25
  c.train.log_every_steps = 75
  if arg == 'single':
    c.model.num_scales = 1
    c.stages = scale_stages(1, EPOCHS_SCALE1)
  elif arg and arg.startswith('continue'):
    # 'continue': scale 1 from init_from.path, scales 2-3 trained; 'continue2': only scale 2
    # (2 scales); 'continue3': scales 1-2 from a 'continue2' run, scale 3 trained.
    num, first = {'continue': (3, 2), 'continue2': (2, 2), 'continue3': (3, 3)}[arg]
    epochs = EPOCHS_LATER if arg == 'continue' else EPOCHS_STEPWISE
    c.model.num_scales, c.model.first_trained_scale = num, first
    c.init_from.skip = (f'^scale[{first}-{num}]/',)  # fresh params for the scales trained here
    c.stages = scale_stages(num, epochs, first=first)
  else:
    c.stages = (scale_stages(3, EPOCHS_SCALE1)[:1] + scale_stages(3, EPOCHS_LATER)[1:])
  c.train.num_epochs = sum(s.num_epochs for s in c.stages)
  return c
