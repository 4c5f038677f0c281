"""bilinear_lstm re-identification on VIPeR, one of its 10 random 316/316 splits (fgjax.default_config.bilinear_lstm_reid_recipe).

python -m fgjax.data.prepare viper --manual_dir=DIR          # once (README "Datasets")
python -m fgjax.train --config=configs/viper_bilinear_lstm.py:split3 --workdir=DIR/split3 \
  --config.model.backbone_a_pretrained=WEIGHTS/vgg19 --config.model.backbone_b_pretrained=WEIGHTS/vggm
python -m fgjax.average DIR/split0 ... DIR/split9          # the protocol: mean over the 10 splits
python -m fgjax.train --config=configs/viper_bilinear_lstm.py:split0,runlocal --workdir=DIR ...   # CPU smoke run

The argument is `splitK` (K = 0..9, default 0), optionally followed by `,runlocal`.
"""

from fgjax.default_config import bilinear_lstm_reid_recipe, get_base_config, viper_split_arg


def get_config(arg=None):
  split, rest = viper_split_arg(arg)
  c = bilinear_lstm_reid_recipe(get_base_config(), query_split=f'{split}_query',
                                gallery_split=f'{split}_gallery', arg=rest)
  c.dataset.name = 'viper'
  c.dataset.train_split = f'{split}_train'
  return c
