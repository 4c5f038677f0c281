"""Everything a run needs that can be derived from the config, checked before any compilation.

`setup(config)` resolves the method, dataset and model, prepares the dataset files, and checks
names, shapes and batch sizes, so that a wrong config fails in seconds with a message that names
the field and lists the valid choices, not after minutes of compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections

from fgjax import methods, optim, sharding
from fgjax.evaluation import protocols
from fgjax.data import augment, datasets


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


def _fill_missing(raw: dict, defaults: dict, prefix: str = '', depth: int = 2) -> list[str]:
  """Adds to `raw` (in place) every field of `defaults` it lacks, looking `depth` levels down
  (top-level fields and the fields of sections such as `model`; a dict inside a section, e.g.
  `optim.lr_multipliers`, is a value: never merged). Returns the added fields' dotted names."""
  added = []
  for key, value in defaults.items():
    if key not in raw:
      raw[key] = value
      added.append(prefix + key)
    elif depth > 1 and isinstance(value, dict) and isinstance(raw[key], dict):
      added += _fill_missing(raw[key], value, f'{prefix}{key}.', depth - 1)
  return added


def _lookup(tree: dict, dotted: str):
  for key in dotted.split('.'):
    tree = tree[key]
  return tree


def load_run_config(workdir: str, log=lambda m: None) -> ml_collections.ConfigDict:
  """The config a run was trained with: WORKDIR/config.json (written by fgjax.train), locked.

  Used by the commands that take only --workdir (predict, export) and by evaluate without --config.
  JSON lists stand where the config file had tuples; every consumer accepts both. Fields added to
  fgjax after the run was written (absent from its config.json) get today's defaults (the base
  config's and the method's `default_model_config`), each named through `log`; fields a newer
  fgjax default changed keep the run's value.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: --workdir must be a directory written by '
                            'python -m fgjax.train --config=... --workdir=DIR')
  with open(path) as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e}); it should be the config.json that '
                       'fgjax.train wrote') from e
  if not isinstance(raw, dict) or 'method' not in raw or 'dataset' not in raw:
    raise ValueError(f'{path} is not an fgjax run config (expected a JSON object with "method" '
                     'and "dataset")')
  from fgjax.default_config import get_base_config  # pylint: disable=g-import-not-at-top
  defaults = get_base_config().to_dict()
  defaults['model'] = methods.get(raw['method']).default_model_config().to_dict()
  for name in _fill_missing(raw, defaults):
    log(f'{path} has no {name} (added to fgjax later): using the default '
        f'{_lookup(defaults, name)!r}')
  config = ml_collections.ConfigDict(raw)
  config.lock()
  return config


def setup(config: ml_collections.ConfigDict, mesh=None, log=print) -> Experiment:
  """Validate `config`, prepare the dataset, build the model (abstractly). No compilation."""
  method = methods.get(config.method)
  methods.compute_dtype(config)
  datasets.builder_class(config.dataset.name)
  mesh = sharding.make_mesh() if mesh is None else mesh
  _check_batch(config.train.global_batch_size, 'config.train.global_batch_size', mesh)
  _check_batch(config.eval.batch_size, 'config.eval.batch_size', mesh)
  d = config.dataset
  _check_geometry(d)
  # The dataset comes first (a missing dataset is the first thing a new user meets, and its error
  # carries the download/manual_dir instructions); a built dataset is opened in seconds.
  builder, meta = _prepare_once(config.dataset, log)
  method.check_config(config)
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
