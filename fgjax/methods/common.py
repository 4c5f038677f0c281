"""What a method is (`Method`), and what every method shares.

A method is a Flax Linen module class plus the functions around it (loss, prediction, evaluation
extras, config checks that need the dataset or the file system). The module's fields are the one
list of the method's settings: `config.model` is derived from them (`Method.default_model_config`)
and the model is built with `Model(num_classes=..., **config.model)` (`Method.build_model`), as
big_vision builds `model_mod.Model(num_classes=..., **config.model)`. A field's default, its
meaning and its value check live on the module (checks in its `__post_init__`, raising ValueError
naming `config.model.<field>`, `fgjax.models.fields`); nothing copies them.

- `model`: the module class. Fields named in `RUN_FIELDS` come from the run, not `config.model`:
  `num_classes` (the dataset's), `dtype` (config.compute_dtype) and `input_hw` (the model input
  size of config.dataset), each passed only to modules that declare it. `fixed_fields` are module
  fields the method sets itself (bcnn_spp: `spp=True`) and keeps out of `config.model`. Fields whose
  default is None (e.g. an einsum `precision`) are not config fields.
- `loss_fn(outputs, batch, config) -> (loss, metrics)` (float32 scalars).
- `predict_fn(outputs) -> dict` of per-example arrays gathered in evaluation (at least `logits`).
- `check_config(config)`: raise ValueError for settings that need more than the module's fields
  (the backbone's grid at the dataset's input size, weight directories) *before* compilation.
- `batch_keys`: dataset fields the method needs in a batch (a tuple, or a function of the config).
- `pretrained(config) -> [(weight_dir, param_prefix), ...]`: ImageNet weights (written by
  `python -m fgjax.pretrained convert`) loaded into the subtree `param_prefix` of a fresh run.
- `train_inputs`: ((model keyword, batch key), ...) passed to `model.apply` in training only,
  e.g. (('labels', 'label'),) for a ground-truth-class CAM; evaluation never sees labels.
- `stage_inputs(config, stage) -> dict`: further keywords of `model.apply` in the training steps
  of `stage` (a `fgjax.optim.Stage`: index, name, its optim with the stage's `frozen` pattern),
  so that a model computes only what the stage trains (activation_attention: `train_scale`).
- Evaluation extras (classification protocol): `eval_outputs` names further predict_fn outputs and
  `eval_batch_keys` further dataset fields to gather over the split (those the dataset has);
  `eval_metrics(gathered, config) -> dict` turns them into metrics merged into the result
  (attribute accuracies, attention-box IoU, per-scale accuracies, ...).
- `attention_panels(outputs, index, config, options) -> list[fgjax.visualisation.overlays.Panel]`
  (optional; used by `python -m fgjax.predict --overlays`): what image `index` of a batch attends
  to, from `outputs`, the FULL `model.apply(..., train=False)` dict of the batch as NumPy arrays
  (not predict_fn's subset). Panel coordinates are normalised to the model input.
  `options` is a dict of predict's overlay options (e.g. 'cell': (u, v) for bilinear_lstm;
  'metadata': the dataset's tfds metadata, from which a3m names its attribute groups).
- `export_parts`: {name: config.model overrides} of sub-models that use the same parameters and
  that `python -m fgjax.export_model --part=NAME` exports where the whole model cannot go to ONNX
  (focus_discriminate's `image_branch`: backbone, pooling and image classifier, no NMS).
- `diagnose(metrics: dict) -> list[str]`: one warning per mechanism the evaluated run shows to be
  inert (attention on "self only" or uniform, gates stuck at 1, regions under one feature stride),
  each naming the diagnostic in `metrics` (eval_metrics' keys) that shows it; the trainer and
  `python -m fgjax.evaluate` print them as `WARNING: ...` lines after the final evaluation.
- `migrate_model_config(model: dict) -> list[str]`: rewrites, in place, the `model` section of a
  config.json written by an older fgjax into today's fields and values (e.g. a placeholder an
  older version resolved at build time); returns one message per change. Used when a run is
  resumed, evaluated or predicted from its workdir.
- `readings_before`: the model fields whose defaults changed when fgjax fixed the readings that
  switched a mechanism off (2026-12, docs/methods/), with the values fgjax used before; the
  embedded benchmark's configs set them with `:readings=before`
  (`fgjax.default_config.with_readings`) to measure a method before and after.
- `panel_captures`: names of the model's direct submodules whose `__call__` outputs predict
  captures for `attention_panels` into `outputs['intermediates'][name]['__call__']` (a tuple, one
  entry per call), for maps a model does not return (bcnn's stream features, a3m's per-location
  category features).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from fgjax import pretrained as pretrained_lib
from fgjax.data import augment
from fgjax.models import backbones as backbones_lib

RUN_FIELDS = ('num_classes', 'dtype', 'input_hw')
_NOT_FIELDS = ('parent', 'name')

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def compute_dtype(config):
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f'config.compute_dtype must be one of {", ".join(COMPUTE_DTYPES)}, got '
                     f'{config.compute_dtype!r}')
  return COMPUTE_DTYPES[config.compute_dtype]


def _config_value(value):
  """A module field's default as a ConfigDict value (mappings become ConfigDicts)."""
  if isinstance(value, Mapping):
    return ml_collections.ConfigDict({k: _config_value(v) for k, v in value.items()})
  return value


def _field_value(value):
  """A config value as a module field: hashable (dicts frozen, JSON lists back to tuples)."""
  if isinstance(value, Mapping | ml_collections.ConfigDict):
    return flax.core.FrozenDict({k: _field_value(v) for k, v in value.items()})
  if isinstance(value, list | tuple):
    return tuple(_field_value(v) for v in value)
  return value


def model_fields(model: type[nn.Module]) -> dict[str, dataclasses.Field]:
  return {f.name: f for f in dataclasses.fields(model) if f.name not in _NOT_FIELDS}


def model_config(model: type[nn.Module], exclude=()) -> ml_collections.ConfigDict:
  """The config fields of module class `model`: its fields with a non-None default, in
  declaration order, minus `RUN_FIELDS` and `exclude`."""
  m = ml_collections.ConfigDict()
  for name, f in model_fields(model).items():
    if name in RUN_FIELDS or name in exclude:
      continue
    if f.default is not dataclasses.MISSING:
      value = f.default
    elif f.default_factory is not dataclasses.MISSING:
      value = f.default_factory()
    else:
      raise TypeError(f'{model.__name__}.{name} has no default: every config field needs one')
    if value is not None:
      m[name] = _config_value(value)
  return m


@dataclasses.dataclass(frozen=True)
class Method:
  """See the module docstring."""
  name: str
  model: type[nn.Module]
  loss_fn: Callable
  predict_fn: Callable
  check_config: Callable = lambda config: None
  fixed_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  batch_keys: tuple[str, ...] | Callable = ('image', 'label')
  pretrained: Callable = lambda config: []
  description: str = ''
  eval_outputs: tuple[str, ...] = ()
  eval_batch_keys: tuple[str, ...] | Callable = ()
  eval_metrics: Callable | None = None
  train_inputs: tuple[tuple[str, str], ...] = ()
  stage_inputs: Callable[[ml_collections.ConfigDict, Any], dict] = lambda config, stage: {}
  attention_panels: Callable | None = None
  panel_captures: tuple[str, ...] = ()
  migrate_model_config: Callable[[dict], list[str]] = lambda model: []
  diagnose: Callable[[dict], list[str]] = lambda metrics: []
  readings_before: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  export_parts: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

  def default_model_config(self) -> ml_collections.ConfigDict:
    """`config.model` with every field's default (derived from the module's fields)."""
    return model_config(self.model, exclude=tuple(self.fixed_fields))

  def build_model(self, config, meta) -> nn.Module:
    """`Model(num_classes=..., dtype=..., [input_hw=...,] **fixed_fields, **config.model)`."""
    declared = model_fields(self.model)
    run = {'num_classes': meta.num_classes, 'dtype': compute_dtype(config),
           'input_hw': augment.input_hw(config.dataset)}
    fields = {k: _field_value(v) for k, v in config.model.items()}
    unknown = sorted(set(fields) - set(declared))
    if unknown:
      raise ValueError(f'config.model has fields {unknown} that method {self.name!r} does not '
                       f'have; valid: {", ".join(self.default_model_config())}')
    return self.model(**{k: v for k, v in run.items() if k in declared}, **self.fixed_fields,
                      **fields)


def resolve_keys(keys, config) -> tuple[str, ...]:
  """`batch_keys` / `eval_batch_keys` are a tuple or a function of the config (e.g. the dataset's
  attribute field is a config choice)."""
  return tuple(keys(config) if callable(keys) else keys)


def logits_and_features(outputs: dict) -> dict:
  return {'logits': outputs['logits'], 'features': outputs['features']}


# ----------------------------------------------------------------------------------------------
# Backbone checks that need the dataset's input size or the weight directories
# ----------------------------------------------------------------------------------------------

def check_backbone_layer(config, backbone_field: str, layer_field: str, min_grid: int,
                         layer: str | None = None) -> None:
  """Backbone and layer names exist and the layer's grid at the input size is >= min_grid.

  `layer` overrides config.model[layer_field] (for defaults such as "same layer as stream A").
  """
  name = config.model[backbone_field]
  layer = layer or config.model[layer_field]
  if name not in backbones_lib.BACKBONES:
    raise ValueError(f'unknown backbone {name!r} (config.model.{backbone_field}); valid: '
                     f'{", ".join(backbones_lib.list_backbones())}')
  kwargs = config.model.get(f'{backbone_field}_kwargs', {})
  strides = dict(backbones_lib.get_backbone(name, **kwargs).feature_strides)
  if layer not in strides:
    raise ValueError(f'backbone {name!r} has no feature map {layer!r} (config.model.{layer_field});'
                     f' valid: {", ".join(strides)}')
  h, w = augment.input_hw(config.dataset)
  gh, gw = h // strides[layer], w // strides[layer]
  if min(gh, gw) < min_grid:
    raise ValueError(
        f'input {h}x{w} gives a {gh}x{gw} grid at {name}/{layer} (stride {strides[layer]}), but '
        f'method {config.method!r} needs at least {min_grid}x{min_grid}; raise '
        f'config.dataset.image_size / image_width to >= {min_grid * strides[layer]} or use an '
        'earlier layer')


IMAGENET_BACKBONES = ('resnet50', 'vgg16', 'vgg19', 'vggm')


def check_pretrained(config, backbone_field: str, weights_field: str) -> None:
  """A stream's weight directory holds weights for its backbone; ImageNet backbones need one."""
  directory = config.model[weights_field]
  if not directory:
    if (config.model[backbone_field] in IMAGENET_BACKBONES
        and not config.model.get('allow_random_init', False)):
      raise ValueError(
          f'config.model.{backbone_field}={config.model[backbone_field]!r} has no ImageNet '
          f'weights: convert them once (python -m fgjax.pretrained convert --arch '
          f'{config.model[backbone_field]} --src FILE --out DIR) and set '
          f'config.model.{weights_field}=DIR, or set config.model.allow_random_init=True to '
          'train from scratch on purpose')
    return
  info = pretrained_lib.read_source_info(directory)
  if info['arch'] != config.model[backbone_field]:
    raise ValueError(f'config.model.{weights_field}={directory} holds {info["arch"]} weights but '
                     f'config.model.{backbone_field} is {config.model[backbone_field]!r}')
  if 'kwargs' in info:  # a backbone exported from a fgjax run: its constructor arguments too
    kw = config.model.get(f'{backbone_field}_kwargs', {})
    ours = json.loads(json.dumps(kw.to_dict() if isinstance(kw, ml_collections.ConfigDict)
                                 else dict(kw)))
    if ours != info['kwargs']:
      raise ValueError(f'config.model.{weights_field}={directory} holds a {info["arch"]} built '
                       f'with {info["kwargs"]}, but config.model.{backbone_field}_kwargs is '
                       f'{ours}: set the same')


def check_backbone(config, min_grid: int = 1, suffix: str = '') -> None:
  """`check_backbone_layer` + `check_pretrained` of the one-backbone methods' fields
  `backbone{suffix}`, `layer{suffix}`, `backbone{suffix}_pretrained`."""
  check_backbone_layer(config, f'backbone{suffix}', f'layer{suffix}', min_grid)
  check_pretrained(config, f'backbone{suffix}', f'backbone{suffix}_pretrained')


def backbone_pretrained(config) -> list[tuple[str, str]]:
  """`Method.pretrained` of a one-backbone method: its weight directory into `backbone/`."""
  d = config.model.backbone_pretrained
  return [(d, 'backbone/')] if d else []
