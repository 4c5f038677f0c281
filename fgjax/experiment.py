"""Everything a run needs that can be derived from the config, checked before any compilation.

`setup(config)` resolves the method, dataset and model, prepares the dataset files, and checks
names, shapes and batch sizes, so that a wrong config fails in seconds with a message that names
the field and lists the valid choices, not after minutes of compilation.
"""

from __future__ import annotations

import dataclasses
import functools

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
