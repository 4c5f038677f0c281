"""bilinear_lstm (Wu & Wang 2017, "Where to Focus") on synthetic_parts/fgvc: the [D,M] streams of
configs/synthetic_fgvc_bcnn.py (8x8 grid), a 2-layer spatial LSTM with soft location attention.

python -m fgjax.train --config=configs/synthetic_fgvc_bilinear_lstm.py --workdir=/tmp/fgjax/fgvc_blstm

The paper's claim checked here: bilinear_lstm > B-CNN [D,M] (configs/synthetic_fgvc_bcnn.py).
Settings are those of configs/synthetic_bilinear_lstm.py, measured on synthetic_parts/default
(docs/methods/bilinear_lstm.md): hidden 64, rank-64 gate input, Adam 1e-3, attention penalty 0,
last-cell readout, dropout 0.2.

`:weights=DIR` starts the backbones from `python -m benchmarks.pretrain --out=DIR` (the
pretrained layers train at the full learning rate); without it they start from scratch.
"""

from fgjax.default_config import (fgvc_streams, fgvc_weights, get_base_config, parse_arg,
                                  synthetic_fgvc_recipe)
from fgjax.methods.bilinear_lstm import METHOD


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=None, weights='')
  c = synthetic_fgvc_recipe(get_base_config())
  c.method = 'bilinear_lstm'
  c.model = fgvc_streams(METHOD.default_model_config())
  c.model.hidden = c.model.rank = 64
  c.model.attention_penalty = 0.0
  # The readings these runs were measured with; fgjax's defaults are now the whole grid, unit-scale
  # gate inputs, one dropout mask on B and uniform-attention penalty targets (lambda is 0 here).
  c.model.attention_region = 'causal'
  c.model.gate_init = 'fan_in'
  c.model.dropout_mask = 'factors'
  c.model.attention_target = 'constant'
  c.model.readout = 'last'
  c.model.dropout_rate = 0.2
  c.optim.optimizer = 'adam'
  c.optim.learning_rate = 0.001
  c.optim.weight_decay = 0.0
  return fgvc_weights(c, arg.weights)
