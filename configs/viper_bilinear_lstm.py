"""bilinear_lstm re-identification on VIPeR, one of its 10 random 316/316 splits (fgjax.methods.bilinear_lstm.bilinear_lstm_reid_recipe).

python -m fgjax.data.prepare viper --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/viper_bilinear_lstm.py:split=3 --workdir=DIR/split3 \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg19 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.average DIR/split0 ... DIR/split9          # the protocol: mean over the 10 splits
python -m fgjax.train --config=configs/viper_bilinear_lstm.py:split=0,runlocal --workdir=DIR ...   # CPU smoke run

The argument is `split=K` (K = 0..9, default 0), optionally with `,runlocal`.
"""

from fgjax.default_config import get_base_config, parse_arg, smoke_run
from fgjax.methods.bilinear_lstm import bilinear_lstm_reid_recipe


def get_config(arg=None):
  arg = parse_arg(arg, split=0)
  if arg.split not in range(10):
    raise ValueError(f'VIPeR has splits 0..9 (config argument split=K), got {arg.split}')
  split = f'split{arg.split}'
  c = bilinear_lstm_reid_recipe(get_base_config(), query_split=f'{split}_query',
                                gallery_split=f'{split}_gallery', runlocal=arg.runlocal)
  c.dataset.name = 'viper'
  c.dataset.train_split = f'{split}_train'
  return smoke_run(c) if arg.runlocal else c  # + random init (no ImageNet weights)
