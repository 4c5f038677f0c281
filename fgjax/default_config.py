"""Every config field the spine reads, with defaults. Config files start from `get_base_config()`.

A config file in configs/ is ``def get_config(arg=None): c = get_base_config(); ...; return c``,
starting from a method's recipe (`fgjax.methods.<method>.*_recipe`) and parsing its argument with
`parse_arg`; a real-dataset config's `:runlocal` is its recipe through `smoke_run`. This module is
the schema only: it knows no method.
The returned ConfigDict is locked: a misspelt field in a config file or on the command line
(``--config.optim.learnig_rate=...``) is an error naming the fields that do exist. `ConfigError`
is the error of a config a user fixes (the entry points exit 2 with its one-line message).
"""

import os
import re

import ml_collections
from ml_collections import config_dict


class ConfigError(ValueError):
  """A config, workdir or dataset problem found before training: the entry points print it as one
  `ERROR: ...` line (no traceback) and exit with status 2."""


def error_text(e: BaseException) -> str:
  """The message of an error for a user. A locked ConfigDict's AttributeError / KeyError for a
  field it lacks (ml_collections wraps a KeyError that holds the quoted name and a 'Did you mean')
  becomes one line, "the config has no field 'x'; Did you mean ...?"; other errors keep str(e)."""
  while e.args and isinstance(e.args[0], BaseException):
    e = e.args[0]
  if not isinstance(e, KeyError):
    return str(e).strip() or type(e).__name__
  lines = [line.strip() for line in str(e.args[0] if e.args else '').splitlines() if line.strip()]
  if not lines:
    return type(e).__name__
  if re.fullmatch(r"'[^']*'", lines[0]):
    lines[0] = f'the config has no field {lines[0]}'
  return '; '.join(lines)


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = 'bcnn'  # a name registered in fgjax.methods
  c.compute_dtype = 'float32'  # 'float32' | 'bfloat16' | 'float16'; params stay float32
  # 'START,N': a jax.profiler trace of training steps START..START+N-1 in WORKDIR/profile
  # (TensorBoard's profile plugin / XProf; fgjax.profiling). '': no trace.
  c.profile_steps = ''

  # ---- data ------------------------------------------------------------------------------
  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = 'synthetic_parts'  # a name registered in fgjax.data.datasets
  c.dataset.config = config_dict.placeholder(str)  # tfds builder config name (None: builder default)
  c.dataset.data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.dataset.manual_dir = config_dict.placeholder(str)  # for datasets that cannot be downloaded
  # image_folder: your folder of class subfolders (fgjax.data.builders.image_folder); None otherwise
  c.dataset.path = config_dict.placeholder(str)
  c.dataset.train_split = 'train'
  c.dataset.eval_split = 'test'
  # Geometry: optionally crop to the object box, resize, then crop the model input (random crop in
  # training, centre crop in evaluation), flip and shift.
  c.dataset.crop_to_bbox = False  # crop to the dataset's `bbox` first (A3M on CUB)
  # The box crop_to_bbox uses: 'bbox', or 'FIELD:ROW' of a (K, 4) field (synthetic_parts/fgvc:
  # 'part_boxes:4', the eye detail), grown by crop_margin x its size on every side.
  c.dataset.crop_box = 'bbox'
  c.dataset.crop_margin = 0.0
  c.dataset.resize = 'fixed'  # 'fixed' (resize_size x resize_width) | 'short_edge' | 'none'
  c.dataset.resize_size = 64  # 'fixed': height; 'short_edge': the short side
  c.dataset.resize_width = 0  # 'fixed': width (0 = resize_size)
  c.dataset.image_size = 64  # model input height
  c.dataset.image_width = 0  # model input width (0 = image_size); e.g. Market-1501 448 x 224
  c.dataset.random_crop = True
  c.dataset.hflip = True
  # Pixel shifts in [-shift, shift] (Wu & Wang 2017: 5 px horizontally, 3 px vertically). With
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

  # Multi-stage training (e.g. Wu & Wang 2017's two-step fine-tuning: head only, then everything).
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


def sgd(c: ml_collections.ConfigDict, learning_rate: float, *, weight_decay: float,
        schedule: str, momentum: float = 0.9, nesterov: bool = False) -> ml_collections.ConfigDict:
  """The SGD-with-momentum block every recipe starts its `optim` from."""
  c.optim.optimizer = 'sgd'
  c.optim.learning_rate = learning_rate
  c.optim.momentum = momentum
  c.optim.nesterov = nesterov
  c.optim.weight_decay = weight_decay
  c.optim.schedule = schedule
  return c


def loop(c: ml_collections.ConfigDict, batch: int, *, log_every: int,
         checkpoint_every: int) -> ml_collections.ConfigDict:
  """The training-loop block the recipes share: one batch size for training and evaluation."""
  c.train.global_batch_size = c.eval.batch_size = batch
  c.train.log_every_steps = log_every
  c.train.checkpoint_every_steps = checkpoint_every
  return c


def synthetic_cpu_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Data and optimiser settings shared by the CPU-sized configs on the embedded dataset."""
  c.dataset.name = 'synthetic_parts'
  c.dataset.config = 'default'
  c.dataset.resize_size = 72
  c.dataset.image_size = 64
  c.dataset.shift_y = 4
  c.dataset.shift_x = 4
  sgd(c, 0.05, weight_decay=5e-4, schedule='cosine', nesterov=True)
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


def synthetic_fgvc_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`synthetic_cpu_recipe` on the embedded benchmark `synthetic_parts/fgvc` (128x128 input, 40
  epochs of 47 steps): the configs/synthetic_fgvc_*.py and the benchmark's oracles share it."""
  synthetic_cpu_recipe(c)
  c.dataset.config = 'fgvc'
  c.dataset.resize_size, c.dataset.image_size = 136, 128
  c.train.num_epochs = 40.0
  c.train.log_every_steps = 200
  c.train.checkpoint_every_steps = 1000
  return c


# The small stand-ins of the [D,M] streams on synthetic_parts/fgvc: both end at stride 16 (an 8x8
# grid at 128x128). D is deeper and narrower (4 stages, like VGG-16's "D"), M shallower and wider
# (3 stages, a stride-4 first conv, like VGG-M).
FGVC_STREAM_D = {'backbone': 'small_cnn', 'layer': 'conv4',
                 'kwargs': {'widths': (32, 64, 64, 64), 'downsample': (2, 2, 2, 2)}}
FGVC_STREAM_M = {'backbone': 'small_cnn', 'layer': 'conv3',
                 'kwargs': {'widths': (48, 96, 128), 'downsample': (4, 2, 2)}}
# The ResNet-like stand-in of the one-backbone recipes' ResNet-50 (A3M, activation_attention,
# focus_discriminate): a small ResNet (basic residual blocks) also ending at stride 16, 8x8 at
# 128x128, at about the D stream's cost per train step.
FGVC_STREAM_R = {'backbone': 'small_resnet', 'layer': 'stage4',
                 'kwargs': {'widths': (32, 64, 96, 128), 'blocks': (1, 1, 1, 1),
                            'strides': (2, 2, 2, 1)}}
# The streams a one-backbone config can take (`fgvc_backbone`) and their weight directories
# under `benchmarks.pretrain`'s output (`fgvc_weights`).
FGVC_BACKBONES = {'d': FGVC_STREAM_D, 'r': FGVC_STREAM_R}


def fgvc_streams(model: ml_collections.ConfigDict, which: str = 'dm') -> ml_collections.ConfigDict:
  """Sets a two-stream config.model to the fgvc D (and M) streams: which = 'dm' | 'dd'."""
  if which not in ('dm', 'dd'):
    raise ValueError(f"streams must be 'dm' or 'dd', got {which!r}")
  model.backbone_a, model.layer_a = FGVC_STREAM_D['backbone'], FGVC_STREAM_D['layer']
  model.backbone_a_kwargs = ml_collections.ConfigDict(FGVC_STREAM_D['kwargs'])
  if which == 'dm':
    model.backbone_b, model.layer_b = FGVC_STREAM_M['backbone'], FGVC_STREAM_M['layer']
    model.backbone_b_kwargs = ml_collections.ConfigDict(FGVC_STREAM_M['kwargs'])
  return model


def fgvc_backbone(model: ml_collections.ConfigDict,
                  stream: str = 'd') -> ml_collections.ConfigDict:
  """Sets a one-backbone config.model to an fgvc stream (8x8 grid at 128x128): 'd', the VGG-like
  D stream, or 'r', the small ResNet (`FGVC_BACKBONES`)."""
  if stream not in FGVC_BACKBONES:
    raise ValueError(f"backbone stream must be one of {', '.join(FGVC_BACKBONES)}, got {stream!r}")
  spec = FGVC_BACKBONES[stream]
  model.backbone, model.layer = spec['backbone'], spec['layer']
  model.backbone_kwargs = ml_collections.ConfigDict(spec['kwargs'])
  return model


def _fgvc_stream_of(model: ml_collections.ConfigDict) -> str:
  """The `FGVC_BACKBONES` key of a one-backbone config.model's backbone, by its name ('d' unless
  it is the R stream's; the weights' own check names any constructor argument that differs)."""
  return 'r' if model.backbone == FGVC_STREAM_R['backbone'] else 'd'


def fgvc_weights(c: ml_collections.ConfigDict, weights: str) -> ml_collections.ConfigDict:
  """Starts the benchmark's backbones from `benchmarks.pretrain`'s weight directories
  (WEIGHTS/d, WEIGHTS/m, WEIGHTS/r), as the real recipes start from ImageNet: the `*_pretrained`
  fields of the D (and M) streams, or of a one-backbone model's stream (`fgvc_backbone`: D or R).
  '' = from scratch.

  The pretrained layers train at the full learning rate, as in the fine-tuning stage of the B-CNN
  recipes: with them at 0.1x, the whole-image B-CNN [D,D] oracle underfitted (12.8% test top-1
  against 46.0% at 1x, 40 epochs, measured before any method ran on the benchmark)."""
  if not weights:
    return c
  m = c.model
  if 'backbone_a' in m:
    m.backbone_a_pretrained = os.path.join(weights, 'd')
    if m.backbone_b:
      m.backbone_b_pretrained = os.path.join(weights, 'm')
  else:
    m.backbone_pretrained = os.path.join(weights, _fgvc_stream_of(m))
  return c


def derived_resize(d: ml_collections.ConfigDict, size: int, shift: int) -> int:
  """The resize side (config.dataset.resize_size / resize_width) for a model input side `size`
  and its pixel shift `shift`: the input plus the room padding-free shifts need when nothing else
  crops (random_crop False, as the B-CNN recipes: 448 + 2 x 3 = 454), else 8/7 of the input (the
  ImageNet ratio, 256 for 224) and at least that room. Used where a config or a command line
  sets the input size but not the resize (`derive_resize`)."""
  needed = size + (0 if d.shift_padding else 2 * shift)
  return max(needed, round(size * 8 / 7)) if d.random_crop else needed


def derive_resize(d: ml_collections.ConfigDict, height: bool = True,
                  width: bool = True) -> list[str]:
  """Sets config.dataset.resize_size (`height`) and resize_width (`width`, when the config has an
  explicit width: image_width or resize_width) from the input size with `derived_resize`; returns
  the fields set, as 'config.dataset.resize_size=VALUE'."""
  explicit_width = bool(d.image_width or d.resize_width)
  done = []
  if height:
    d.resize_size = derived_resize(d, d.image_size,
                                   d.shift_y if explicit_width else max(d.shift_y, d.shift_x))
    done.append(f'config.dataset.resize_size={d.resize_size}')
  if width and explicit_width:
    d.resize_width = derived_resize(d, d.image_width or d.image_size, d.shift_x)
    done.append(f'config.dataset.resize_width={d.resize_width}')
  return done


SMOKE_BATCH = 8  # `smoke_run`: global batch (training and evaluation)
SMOKE_EPOCHS = 0.02  # `smoke_run`: epochs per stage


def smoke_run(c: ml_collections.ConfigDict, image_size: int | None = None,
              small_backbone: bool = False) -> ml_collections.ConfigDict:
  """The `:runlocal` form of a real-data recipe: a CPU smoke run that checks the data, model, loss
  and evaluation end to end (not the accuracy), without ImageNet weights: every backbone starts
  from random init (config.model.allow_random_init; the run says so once in its log). Batch 8,
  2% of an epoch per stage, a log line every 5 steps.

  image_size: the input height (the width scaled by the same factor; both resize sides derived
  with `derive_resize`); None keeps the recipe's. small_backbone: a one-backbone model's
  ResNet-50 becomes the small CNN (conv4: an 8x8 grid at 64x64), as the activation_attention and
  focus_discriminate recipes do: ResNet-50 at full size would take hours on CPU.
  """
  m, d = c.model, c.dataset
  if 'allow_random_init' in m:
    m.allow_random_init = True
  if small_backbone:
    m.backbone, m.layer = 'small_cnn', 'conv4'
    m.backbone_kwargs = ml_collections.ConfigDict()
  if image_size is not None:
    if d.image_width:
      d.image_width = max(1, round(d.image_width * image_size / d.image_size))
    d.image_size = image_size
    derive_resize(d)
  c.train.global_batch_size = c.eval.batch_size = SMOKE_BATCH
  c.train.log_every_steps = 5
  for stage in c.stages:
    stage.num_epochs = SMOKE_EPOCHS
  if not c.stages:
    c.train.num_epochs = SMOKE_EPOCHS
  return c


def parse_arg(arg: str | None, runlocal: bool | None = False,
              **spec) -> ml_collections.ConfigDict:
  """The argument of a config file (`--config=configs/x.py:ARG`) as a ConfigDict, as big_vision's
  configs/common.py parses it: ARG is `key=value` pairs separated by commas, a bare `key` meaning
  True (`:runlocal`, `:split=3,runlocal`). `spec` gives every key the config accepts with its
  default, whose type the value is converted to; `runlocal` (a CPU-sized smoke run) is accepted
  unless the config passes runlocal=None (it has no smoke-run size). An unknown key or a value of
  the wrong type is a ValueError naming the valid keys.
  """
  spec = {'runlocal': runlocal, **spec} if runlocal is not None else spec
  out = ml_collections.ConfigDict(spec)
  valid = ', '.join(f'{k} (default {v!r})' for k, v in spec.items())
  for item in (arg or '').split(','):
    if not item:
      continue
    key, eq, value = item.partition('=')
    if key == 'runlocal' and runlocal is None:
      raise ValueError('config argument runlocal: this config is CPU-sized already (no smoke-run '
                       f'form); its arguments: {valid or "none"}')
    if key not in spec:
      raise ValueError(f'config argument {key!r} is not one this config takes; valid: '
                       f'{valid or "none"}')
    default = spec[key]
    if not eq:
      if not isinstance(default, bool):
        raise ValueError(f'config argument {key!r} needs a value ({key}=...); valid: {valid}')
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'config argument {key}={value!r}: expected true or false')
      out[key] = value.lower() in ('true', '1')
    else:
      try:
        out[key] = type(default)(value)
      except ValueError:
        raise ValueError(f'config argument {key}={value!r}: expected a '
                         f'{type(default).__name__}') from None
  return out


READINGS = ('after', 'before')


def with_readings(c: ml_collections.ConfigDict, method, readings: str) -> ml_collections.ConfigDict:
  """The `:readings=` argument of the embedded benchmark's method configs: 'after' (fgjax's current
  readings, the module defaults) or 'before' (`method.readings_before`: the values fgjax used
  before it fixed the readings that switched the mechanism off, 2026-12), so one config measures
  a method before and after."""
  if readings not in READINGS:
    raise ValueError(f'config argument readings={readings!r}: valid: after (the current readings, '
                     f'the default), before ({dict(method.readings_before)})')
  if readings == 'before':
    c.model.update(dict(method.readings_before))
  return c
