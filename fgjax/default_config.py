"""Every config field the spine reads, with defaults. Config files start from `get_base_config()`.

A config file in configs/ is ``def get_config(): c = get_base_config(); c.method = ...; return c``.
The returned ConfigDict is locked: a misspelt field in a config file or on the command line
(``--config.optim.learnig_rate=...``) is an error naming the fields that do exist.
"""

import ml_collections
from ml_collections import config_dict


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = 'bcnn'  # a name registered in fgjax.methods
  c.compute_dtype = 'float32'  # 'float32' | 'bfloat16' | 'float16'; params stay float32

  # ---- data ------------------------------------------------------------------------------
  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = 'synthetic_parts'  # a name registered in fgjax.data.datasets
  c.dataset.config = config_dict.placeholder(str)  # tfds builder config name (None: builder default)
  c.dataset.data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.dataset.manual_dir = config_dict.placeholder(str)  # for datasets that cannot be downloaded
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'test'
  # Geometry: optionally crop to the object box, resize, then crop the model input (random crop in
  # training, centre crop in evaluation), flip and shift.
  c.dataset.crop_to_bbox = False  # crop to the dataset's `bbox` first (A3M on CUB)
  c.dataset.resize = 'fixed'  # 'fixed' (resize_size x resize_width) | 'short_edge' | 'none'
  c.dataset.resize_size = 64  # 'fixed': height; 'short_edge': the short side
  c.dataset.resize_width = 0  # 'fixed': width (0 = resize_size)
  c.dataset.image_size = 64  # model input height
  c.dataset.image_width = 0  # model input width (0 = image_size); e.g. Market-1501 448 x 224
  c.dataset.random_crop = True
  c.dataset.hflip = True
  # Pixel shifts in [-shift, shift] (seed 000: 5 px horizontally, 3 px vertically). With
  # shift_padding the image is translated and zero-filled; without, the crop window moves inside the
  # resized image (no padding; needs resize >= input + 2 * shift on that axis).
  c.dataset.shift_y = 0
  c.dataset.shift_x = 0
  c.dataset.shift_padding = True
  c.dataset.num_threads = 2  # grain read threads per process
  c.dataset.prefetch = 4  # batches prefetched per process

  # ---- model (method-specific fields live here; methods document what they read) -------------
  c.model = ml_collections.ConfigDict()

  # ---- optimisation --------------------------------------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.optimizer = 'sgd'  # 'sgd' | 'adam' | 'adamw'
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0  # L2 added to the gradient (caffe/torch SGD style); adamw: decoupled
  c.optim.weight_decay_pattern = 'kernel$'  # regex on 'a/b/kernel' param paths that get decay
  c.optim.schedule = 'cosine'  # 'constant' | 'cosine' | 'step'
  c.optim.warmup_epochs = 0.0
  c.optim.decay_epochs = ()  # for 'step': epochs (within the stage) at which lr *= decay_factor
  c.optim.decay_factor = 0.1
  # Per-parameter-group learning-rate multipliers: {regex on param path: multiplier}; the first
  # matching pattern (in insertion order) wins, unmatched params use 1.0.
  c.optim.lr_multipliers = ml_collections.ConfigDict()
  c.optim.frozen = ''  # regex on param paths that are not updated ('' = none)
  c.optim.grad_clip_norm = 0.0  # 0 = off

  # Multi-stage training (e.g. the seeds' two-step fine-tuning: head only, then everything).
  # Each stage is a ConfigDict with `name`, `num_epochs` and any `optim` field to override for
  # that stage (learning_rate, frozen, schedule, ...). Empty: one stage of train.num_epochs with
  # `optim` as it is. Each stage starts a fresh optimizer state, as a new solver would.
  c.stages = ()

  # ---- training loop -------------------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.global_batch_size = 32
  c.train.num_epochs = 10.0
  c.train.log_every_steps = 50
  c.train.eval_every_steps = 0  # 0: evaluate only at the end
  c.train.checkpoint_every_steps = 500
  c.train.max_checkpoints_to_keep = 2
  # A non-finite loss or gradient stops training (naming the step, keeping the last good
  # checkpoint); True skips such steps instead (no update) and counts them.
  c.train.skip_nonfinite_steps = False
  c.train.allow_config_change = False  # resume a workdir whose config.json differs (see trainer)
  # Multi-process runs agree every N steps whether any process got SIGTERM, then all checkpoint
  # and stop at the same step.
  c.train.preemption_sync_every_steps = 10
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64  # global; the last batch is padded and masked, nothing is dropped
  c.eval.flip_tta = False  # average the predictions of the image and its horizontal flip
  c.eval.protocol = 'classification'  # 'classification' | 'reid' | 'retrieval' (fgjax.evaluation)
  c.eval.embedding = 'features'  # the method output used as embedding by 'reid' / 'retrieval'
  c.eval.query_split = 'query'  # 'reid'
  c.eval.gallery_split = 'gallery'  # 'reid'
  c.eval.ranks = (1, 5, 10)  # 'reid' CMC ranks
  c.eval.recall_ks = (1, 2, 4, 8)  # 'retrieval'
  c.eval.distance = 'euclidean'  # 'reid': 'euclidean' (on l2-normalised features) | 'cosine'
  c.eval.reid_protocol = 'market1501'  # 'reid': 'market1501' | 'cuhk03' (single-gallery-shot)
  c.eval.rerank = False  # 'reid': k-reciprocal re-ranking (Zhong et al. 2017)

  # ---- initialisation from another run or an imported backbone -------------------------------
  c.init_from = ml_collections.ConfigDict()
  c.init_from.path = ''  # a workdir (its latest checkpoint) or a checkpoint step directory
  c.init_from.skip = ()  # regexes of param paths NOT to load (e.g. a new head: ('classifier',))
  c.init_from.into = ''  # prefix for the loaded paths (e.g. 'backbone_a/' for a bare backbone)
  return c


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.lock()
  return config


def synthetic_cpu_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Data and optimiser settings shared by the CPU-sized configs on the embedded dataset."""
  c.dataset.name = 'synthetic_parts'
  c.dataset.config = 'default'
  c.dataset.resize_size = 72
  c.dataset.image_size = 64
  c.dataset.shift_y = 4
  c.dataset.shift_x = 4
  c.optim.optimizer = 'sgd'
  c.optim.learning_rate = 0.05
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'cosine'
  c.optim.warmup_epochs = 1.0
  # The l2-normalised bilinear feature has unit norm, so the linear classifier needs a much larger
  # step than the layers below it (B-CNN trains its last layer alone at a high rate first).
  # Without this, the demo reaches 54% test top-1 in 15 epochs instead of 99%.
  c.optim.lr_multipliers = ml_collections.ConfigDict({'^classifier': 20.0})
  c.train.global_batch_size = 32
  c.train.num_epochs = 15.0
  c.train.log_every_steps = 100
  c.train.checkpoint_every_steps = 500
  return c


def bcnn_dm_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """B-CNN [D,M] as seed 000 (Wu & Wang 2017) runs it on real datasets.

  Streams: VGG-16 relu5_3 (28x28 at 448) x VGG-M relu5 (27x27; D is cropped to 27x27). Input
  448x448; augmentation: horizontal flip and shifts of +-5 px horizontally, +-3 px vertically
  without padding (the crop window moves inside a 454x458 resize). Two-step training: the
  classifier alone on fixed features (a high rate, as logistic regression), then everything at
  lr 0.001. The paper gives no epoch counts or weight decay for B-CNN; 10 + 30 epochs and 5e-4
  (Lin et al.'s B-CNN code) are this recipe's choices. Needs ImageNet weights for both streams:
  --config.model.backbone_a_pretrained=DIR --config.model.backbone_b_pretrained=DIR.
  """
  c.method = 'bcnn'
  from fgjax import methods  # pylint: disable=g-import-not-at-top
  c.model = methods.get('bcnn').default_model_config()
  c.model.backbone_a, c.model.layer_a = 'vgg16', 'relu5_3'
  c.model.backbone_b, c.model.layer_b = 'vggm', 'relu5'
  c.dataset.resize = 'fixed'
  c.dataset.resize_size, c.dataset.resize_width = 454, 458
  c.dataset.image_size = 448
  c.dataset.random_crop = False
  c.dataset.hflip = True
  c.dataset.shift_y, c.dataset.shift_x, c.dataset.shift_padding = 3, 5, False
  c.optim.optimizer = 'sgd'
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'constant'
  c.stages = (
      ml_collections.ConfigDict({'name': 'head', 'num_epochs': 10.0,
                                 'frozen': '^backbone', 'learning_rate': 1.0}),
      ml_collections.ConfigDict({'name': 'all', 'num_epochs': 30.0, 'learning_rate': 0.001}))
  c.train.global_batch_size = 32
  c.train.log_every_steps = 20
  c.train.checkpoint_every_steps = 500
  c.eval.batch_size = 32
  return c


def bcnn_dm_reid_recipe(c: ml_collections.ConfigDict, query_split: str,
                        gallery_split: str) -> ml_collections.ConfigDict:
  """`bcnn_dm_recipe` for re-identification: identity classification in training, CMC and mAP
  between `query_split` and `gallery_split` in evaluation (eval.protocol='reid').

  Both streams are projected to 64 channels first (1x1 conv), so the ranking feature has
  64*64 = 4096 dimensions instead of 512*512 = 262,144 (the gallery's features are ranked on host).
  """
  c = bcnn_dm_recipe(c)
  c.model.proj_dim_a = c.model.proj_dim_b = 64
  c.dataset.eval_split = query_split
  c.eval.protocol = 'reid'
  c.eval.query_split, c.eval.gallery_split = query_split, gallery_split
  return c


def bilinear_lstm_recipe(c: ml_collections.ConfigDict, arg: str | None = None
                         ) -> ml_collections.ConfigDict:
  """bilinear_lstm as seed 000 (Wu & Wang 2017, sec. 4.2) runs it on CUB / Aircraft / Cars.

  The B-CNN [D,M] data recipe (`bcnn_dm_recipe`: 448 input, flip and +-5/+-3 px shifts) with
  D = VGG-19 conv5_4+relu (the paper's D-Net, 28x28) and M = VGG-M conv5+relu (27x27), cropped to
  27x27. A 2-layer spatial LSTM, hidden 512, attention over the whole causal rectangle, dropout
  0.5, lambda = 1, tau = 1, gamma = 1e-5 (optax weight_decay 2e-5, see fgjax.methods.bilinear_lstm).
  The paper does not say how the 512x512 bilinear input reaches the LSTM (a full W_x would hold
  671M parameters): this recipe uses the rank-512 factorisation (1.8M; config.model.rank), which
  keeps both streams' 512 channels. Two-step training (sec. 4.2): new layers with the backbones
  frozen, then everything at lr 0.001; epoch counts are this recipe's choice (not in the paper).

  `arg='runlocal'` shrinks it to a CPU smoke run on the real data: 112x112 input (7x7 grid),
  hidden 64, rank 64, batch 8, 2% of an epoch per stage.
  """
  c = bcnn_dm_recipe(c)
  c.method = 'bilinear_lstm'
  from fgjax import methods  # pylint: disable=g-import-not-at-top
  c.model = methods.get('bilinear_lstm').default_model_config()
  c.model.backbone_a, c.model.layer_a = 'vgg19', 'relu5_4'
  c.model.backbone_b, c.model.layer_b = 'vggm', 'relu5'
  c.model.hidden = 512
  c.model.rank = 512
  c.optim.weight_decay = 2e-5
  c.stages = (
      ml_collections.ConfigDict({'name': 'new_layers', 'num_epochs': 10.0,
                                 'frozen': '^backbone', 'learning_rate': 0.01}),
      ml_collections.ConfigDict({'name': 'all', 'num_epochs': 30.0, 'learning_rate': 0.001}))
  if runlocal(arg):
    c.dataset.resize_size, c.dataset.resize_width = 118, 122
    c.dataset.image_size = 112
    c.model.hidden = c.model.rank = 64
    c.train.global_batch_size = c.eval.batch_size = 8
    c.train.log_every_steps = 5
    for stage in c.stages:
      stage.num_epochs = 0.02
  return c


def bilinear_lstm_reid_recipe(c: ml_collections.ConfigDict, query_split: str, gallery_split: str,
                              arg: str | None = None) -> ml_collections.ConfigDict:
  """`bilinear_lstm_recipe` for re-identification (seed 000, table 3): identity classification in
  training, CMC and mAP between `query_split` and `gallery_split` (eval.protocol='reid').

  The ranking feature is the mean of the last layer's hidden states over the grid (readout 'mean',
  512-d): the paper's flattened readout would be 27*13*512 = 180k dimensions per image at 448x224.
  """
  c = bilinear_lstm_recipe(c, arg)
  c.model.readout = 'mean'
  c.dataset.eval_split = query_split
  c.eval.protocol = 'reid'
  c.eval.query_split, c.eval.gallery_split = query_split, gallery_split
  return c


def runlocal(arg: str | None) -> bool:
  """The `:runlocal` argument of a real-data config file (`--config=configs/x.py:runlocal`): True
  for 'runlocal', False for none; anything else is an error naming the valid argument."""
  if arg not in (None, '', 'runlocal'):
    raise ValueError(f"config argument must be 'runlocal' or nothing, got {arg!r}")
  return arg == 'runlocal'


def viper_split_arg(arg: str | None) -> tuple[str, str | None]:
  """'splitK[,rest]' -> ('splitK', rest or None); None -> ('split0', None). VIPeR's 10 splits."""
  parts = [p for p in (arg or '').split(',') if p]
  split = 'split0'
  if parts and parts[0].startswith('split'):
    split = parts.pop(0)
    if split[5:] not in [str(k) for k in range(10)]:
      raise ValueError(f'VIPeR has splits split0..split9, got {split!r}')
  return split, (','.join(parts) or None)
