"""bilinear_lstm (Wu & Wang 2017, "Where to Focus") on synthetic_parts/fgvc: the [D,M] streams of
configs/synthetic_fgvc_bcnn.py (8x8 grid), a 2-layer spatial LSTM with soft location attention.

python -m fgjax.train --config=configs/synthetic_fgvc_bilinear_lstm.py --workdir=/tmp/fgjax/fgvc_blstm

The paper's claim checked here: bilinear_lstm > B-CNN [D,M] (configs/synthetic_fgvc_bcnn.py).
Settings are those of configs/synthetic_bilinear_lstm.py, measured on synthetic_parts/default
(docs/methods/bilinear_lstm.md): hidden 64, rank-64 gate input, Adam 1e-3, attention penalty 0,
last-cell readout, dropout 0.2. The attention penalty is off (lambda = 0), as measured there.

`:readings=before` sets the readings fgjax used before it fixed those that switched the
mechanism off (attention over the causal rectangle, fan-in gate inputs, two dropout masks; `Method.readings_before`, docs/methods/bilinear_lstm.md); the default `after` keeps
the current ones. The benchmark measures both (`python -m benchmarks.methods --before`).
`:readout=flatten|mean|last` and `:input_norm=sqrt_l2|sqrt_l2_image` are the readings whose
default the benchmark chooses (`--readings`).

`:weights=DIR` starts the backbones from `python -m benchmarks.pretrain --out=DIR` (the
pretrained layers train at the full learning rate); without it they start from scratch.
"""

from fgjax.default_config import (fgvc_streams, fgvc_weights, get_base_config, parse_arg,
                                  synthetic_fgvc_recipe, with_readings)
from fgjax.methods.bilinear_lstm import METHOD


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=None, weights='', readings='after', readout='last',
                  input_norm='sqrt_l2')
  c = synthetic_fgvc_recipe(get_base_config())
  c.method = 'bilinear_lstm'
  c.model = fgvc_streams(METHOD.default_model_config())
  c.model.hidden = c.model.rank = 64
  c.model.attention_penalty = 0.0
  c.model.readout = arg.readout
  c.model.input_norm = arg.input_norm
  c.model.dropout_rate = 0.2
  c.optim.optimizer = 'adam'
  c.optim.learning_rate = 0.001
  c.optim.weight_decay = 0.0
  return fgvc_weights(with_readings(c, METHOD, arg.readings), arg.weights)
