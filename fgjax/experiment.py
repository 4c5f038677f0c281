"""Everything a run needs that can be derived from the config, checked before any compilation.

`setup(config)` resolves the method, dataset and model, prepares the dataset files, and checks
names, shapes and batch sizes, so that a wrong config fails in seconds with a message that names
the field and lists the valid choices, not after minutes of compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections

from fgjax import methods, optim, profiling, sharding
from fgjax.default_config import ConfigError, error_text
from fgjax.evaluation import protocols
from fgjax.data import augment, datasets
from fgjax.methods.common import IMAGENET_BACKBONES


@dataclasses.dataclass
class Experiment:
  config: ml_collections.ConfigDict
  method: methods.Method
  meta: datasets.DatasetMeta
  model: object
  mesh: jax.sharding.Mesh
  stages: list[optim.Stage]
  steps_per_epoch: int
  builder: object
  batch_keys: tuple[str, ...]

  @property
  def total_steps(self) -> int:
    return self.stages[-1].end_step

  def source(self, split: str):
    return datasets.data_source(self.builder, split)

  def dummy_images(self, batch: int = 1):
    return jnp.zeros((batch, *augment.input_hw(self.config.dataset), 3), jnp.uint8)

  @functools.cached_property
  def abstract_variables(self):
    """Shapes/dtypes of the model's variables (traced once, nothing computed)."""
    rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
    return jax.eval_shape(lambda: self.model.init(rngs, self.dummy_images(), train=False))

  @functools.cached_property
  def class_names(self) -> list[str]:
    """The dataset's label names (the tfds ClassLabel's), else '0', '1', ... (evaluation plots,
    predict's JSON lines)."""
    n = self.meta.num_classes
    try:
      names = [str(name) for name in self.builder.info.features['label'].names]
    except (AttributeError, KeyError, TypeError):
      names = []
    return names if len(names) == n else [str(i) for i in range(n)]

  def optimizer(self, stage: optim.Stage):
    """The optax transformation of `stage` (labels computed on the abstract params)."""
    return optim.make_optimizer(stage, self.abstract_variables['params'], self.steps_per_epoch)


def _check_batch(size: int, field: str, mesh) -> None:
  if size <= 0 or size % mesh.devices.size:
    raise ValueError(f'{field}={size} must be a positive multiple of the number of devices '
                     f'({mesh.devices.size})')
  if size % jax.process_count():
    raise ValueError(f'{field}={size} must be divisible by the {jax.process_count()} processes')


def _check_geometry(d) -> None:
  """Resize and shift settings leave room for the model input (config.dataset)."""
  if d.resize not in ('fixed', 'short_edge', 'none'):
    raise ValueError(f"config.dataset.resize must be 'fixed', 'short_edge' or 'none', got "
                     f'{d.resize!r}')
  if d.resize != 'fixed':
    return
  pad_y = 0 if d.shift_padding else 2 * d.shift_y
  pad_x = 0 if d.shift_padding else 2 * d.shift_x
  for axis, resized, needed, fields in (
      ('height', d.resize_size, d.image_size + pad_y, 'resize_size vs image_size'),
      ('width', d.resize_width or d.resize_size, (d.image_width or d.image_size) + pad_x,
       'resize_width vs image_width')):
    if resized < needed:
      raise ValueError(f'config.dataset ({fields}): the resized {axis} {resized} is smaller than '
                       f'the input {axis} plus padding-free shifts ({needed})')


def _prepare_once(cfg, log):
  """Process 0 builds the dataset files while the others wait; then every process opens them.

  Process 0 reaches the barrier even when preparing fails, so the others fail the same way (e.g.
  missing files) instead of waiting forever.
  """
  if jax.process_count() == 1:
    return datasets.prepare(cfg, log=log)
  if jax.process_index() == 0:
    try:
      return datasets.prepare(cfg, log=log)
    finally:
      sharding.barrier('fgjax-dataset-prepared')
  sharding.barrier('fgjax-dataset-prepared')
  return datasets.prepare(cfg, log=lambda m: None)


def _weight_fields(model) -> list[tuple[str, str]]:
  """(backbone field, its weight-directory field) of a config.model: backbone / backbone_pretrained,
  backbone_a / backbone_a_pretrained, ..."""
  return [(k[:-len('_pretrained')], k) for k in model if k.endswith('_pretrained')
          and k[:-len('_pretrained')] in model]


def random_init_note(config) -> str | None:
  """The log line of a run whose backbones start from random init on purpose
  (config.model.allow_random_init, e.g. a `:runlocal` smoke run), else None."""
  m = config.get('model', {})
  if not m.get('allow_random_init', False):
    return None
  fields = [f'{b}={m[b]!r}' for b, w in _weight_fields(m) if m[b] and not m[w]]
  if not fields:
    return None
  return (f'random init (allow_random_init, no pretrained weights): config.model.'
          f'{", config.model.".join(fields)}')


def _dataset_files_missing(cfg) -> str | None:
  """A one-paragraph description of a dataset that is not prepared and whose files are not in its
  manual dir (what to download, where to put it), or None. Looks, never builds."""
  builder = datasets.make_builder(cfg)
  instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
  if builder.is_prepared() or not instructions:
    return None
  manual = os.path.expanduser(cfg.manual_dir) if cfg.manual_dir else None
  if manual and os.path.isdir(manual) and os.listdir(manual):
    return None  # files are there: the build reports any that are missing
  where = (f'config.dataset.manual_dir={manual} is missing or empty' if manual
           else 'config.dataset.manual_dir is not set')
  return (f'dataset {cfg.name!r} is not prepared in {builder.data_dir} and {where}: '
          f'{" ".join(instructions.split())} Then pass --config.dataset.manual_dir=DIR (or run '
          f'python -m fgjax.data.prepare {cfg.name} --manual_dir=DIR once)')


def check_prerequisites(config) -> None:
  """Every missing prerequisite of a run in one ConfigError, before any work: the ImageNet weight
  directories its backbones need (config.model.*_pretrained) and, when some are missing, the
  dataset files too (a missing dataset alone is reported by its build, which names each file)."""
  m = config.model
  problems, unset = [], False
  for backbone, weights in _weight_fields(m):
    directory, arch = m[weights], m[backbone]
    if not arch:  # no such stream (e.g. backbone_b='': one shared stream): check_config says so
      continue
    imagenet = isinstance(arch, str) and arch in IMAGENET_BACKBONES
    write = (f'convert --arch {arch} --src FILE' if imagenet
             else 'export --workdir=RUN')  # a backbone of a fgjax run (e.g. small_cnn)
    if directory and not os.path.isdir(directory):
      problems.append(f'config.model.{weights}={directory}: no such directory (write it with '
                      f'python -m fgjax.pretrained {write} --out {directory})')
    elif not directory and imagenet and not m.get('allow_random_init', False):
      unset = True
      problems.append(f'config.model.{backbone}={arch!r} needs ImageNet weights: convert them once '
                      f'(python -m fgjax.pretrained {write} --out DIR) and pass '
                      f'--config.model.{weights}=DIR')
  if not problems:
    return
  data = _dataset_files_missing(config.dataset)
  if data:
    problems.append(data)
  text = problems[0] if len(problems) == 1 else (
      'missing before training can start:\n' + '\n'.join(f'  - {p}' for p in problems))
  if unset:
    text += ('; ' if len(problems) == 1 else '\n') + (
        'or pass --config.model.allow_random_init=True to train from random init on purpose (as '
        "a config's :runlocal smoke run does)")
  raise ConfigError(text)


def setup(config: ml_collections.ConfigDict, mesh=None, log=print) -> Experiment:
  """Validate `config`, prepare the dataset, build the model (abstractly). No compilation.

  Every problem found here is a config problem: a ValueError, KeyError or AttributeError (a field
  the config lacks) is raised as a `ConfigError` with the same message (the original as its
  cause); FileNotFoundError (dataset files) is passed on as it is.
  """
  try:
    return _setup(config, mesh, log)
  except ConfigError:
    raise
  except (ValueError, KeyError, AttributeError) as e:
    raise ConfigError(error_text(e)) from e


def _setup(config, mesh, log) -> Experiment:
  method = methods.get(config.method)
  methods.compute_dtype(config)
  datasets.builder_class(config.dataset.name)
  mesh = sharding.make_mesh() if mesh is None else mesh
  _check_batch(config.train.global_batch_size, 'config.train.global_batch_size', mesh)
  _check_batch(config.eval.batch_size, 'config.eval.batch_size', mesh)
  profiling.parse(config.get('profile_steps', ''))
  d = config.dataset
  _check_geometry(d)
  # Before any work: every missing prerequisite (weights, dataset files) in one message, then the
  # method's checks (names, grids, weight directories), then the dataset (a built one opens in
  # seconds; a missing one's error lists the files to download and where to put them).
  check_prerequisites(config)
  method.check_config(config)
  builder, meta = _prepare_once(config.dataset, log)
  meta.check_split(config.dataset.train_split, 'config.dataset.train_split')
  meta.check_split(config.dataset.eval_split, 'config.dataset.eval_split')
  batch_keys = methods.resolve_keys(method.batch_keys, config)
  missing = [k for k in batch_keys if k not in meta.features]
  if missing:
    raise ValueError(f'method {method.name!r} needs dataset fields {missing}, which dataset '
                     f'{meta.name!r} does not have (it has: {", ".join(meta.features)})')

  protocols.check_config(config, meta, method)
  model = method.build_model(config, meta)
  spe = optim.steps_per_epoch(meta.split_sizes[config.dataset.train_split],
                              config.train.global_batch_size)
  stages = optim.make_stages(config, spe)
  exp = Experiment(config, method, meta, model, mesh, stages, spe, builder, batch_keys)
  try:
    params = exp.abstract_variables['params']
  except Exception as e:  # shape errors surface here, without compiling anything
    h, w = augment.input_hw(d)
    raise ValueError(f'method {method.name!r} cannot be built for {h}x{w} inputs with this '
                     f'config.model: {type(e).__name__}: {e}') from e
  for stage in stages:  # schedule / optimizer names and stage overrides, on abstract params
    jax.eval_shape(exp.optimizer(stage).init, params)
  return exp
