"""Method registry: a method is (model builder, loss fn, predict fn) plus its config checks.

The trainer only ever calls `get(config.method)` and the fields of the returned `Method`; adding a
method means adding a module to this package that calls `register(Method(...))` (every module here
is imported on first import of `fgjax.methods`), never branching on a method name in the trainer.

- `build_model(config, meta) -> nn.Module`: `apply(variables, images, train=...)` returns a dict
  with at least `logits`.
- `loss_fn(outputs, batch, config) -> (loss, metrics)` (float32 scalars).
- `predict_fn(outputs) -> dict` of per-example arrays gathered in evaluation (at least `logits`).
- `check_config(config)`: raise ValueError for impossible settings *before* compilation.
- `default_model_config()`: the `config.model` fields the method reads, with defaults.
- `batch_keys`: dataset fields the method needs in a batch (a tuple, or a function of the config).
- `pretrained(config) -> [(weight_dir, param_prefix), ...]`: ImageNet weights (written by
  `python -m fgjax.pretrained convert`) loaded into the subtree `param_prefix` of a fresh run.
- `train_inputs`: ((model keyword, batch key), ...) passed to `model.apply` in training only,
  e.g. (('labels', 'label'),) for a ground-truth-class CAM; evaluation never sees labels.
- Evaluation extras (classification protocol): `eval_outputs` names further predict_fn outputs and
  `eval_batch_keys` further dataset fields to gather over the split (those the dataset has);
  `eval_metrics(gathered, config) -> dict` turns them into metrics merged into the result
  (attribute accuracies, attention-box IoU, per-scale accuracies, ...).
- `attention_panels(outputs, index, config, options) -> list[fgjax.overlays.Panel]` (optional;
  used by `python -m fgjax.predict --overlays`): what image `index` of a batch attends to, from
  `outputs`, the FULL `model.apply(..., train=False)` dict of the batch as NumPy arrays (not
  predict_fn's subset). Panel coordinates are normalised to the model input (fgjax/overlays.py).
  `options` is a dict of predict's overlay options (e.g. 'cell': (u, v) for bilinear_lstm).
- `panel_captures`: names of the model's direct submodules whose `__call__` outputs predict
  captures for `attention_panels` into `outputs['intermediates'][name]['__call__']` (a tuple, one
  entry per call), for maps a model does not return (bcnn's stream features, a3m's per-location
  category features).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import ml_collections

from fgjax.data import augment
from fgjax.models import backbones as backbones_lib


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  build_model: Callable
  loss_fn: Callable
  predict_fn: Callable
  default_model_config: Callable[[], ml_collections.ConfigDict]
  check_config: Callable = lambda config: None
  batch_keys: tuple[str, ...] | Callable = ('image', 'label')
  pretrained: Callable = lambda config: []
  description: str = ''
  eval_outputs: tuple[str, ...] = ()
  eval_batch_keys: tuple[str, ...] | Callable = ()
  eval_metrics: Callable | None = None
  train_inputs: tuple[tuple[str, str], ...] = ()
  attention_panels: Callable | None = None
  panel_captures: tuple[str, ...] = ()


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
  if method.name in _REGISTRY:
    raise ValueError(f'method {method.name!r} is already registered')
  _REGISTRY[method.name] = method
  return method


def list_methods() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str) -> Method:
  if name not in _REGISTRY:
    raise ValueError(f'unknown method {name!r} (config.method); valid: {", ".join(list_methods())}')
  return _REGISTRY[name]


def resolve_keys(keys, config) -> tuple[str, ...]:
  """`batch_keys` / `eval_batch_keys` are a tuple or a function of the config (e.g. the dataset's
  attribute field is a config choice)."""
  return tuple(keys(config) if callable(keys) else keys)


def compute_dtype(config):
  valid = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
  if config.compute_dtype not in valid:
    raise ValueError(f'config.compute_dtype must be one of {", ".join(valid)}, got '
                     f'{config.compute_dtype!r}')
  return valid[config.compute_dtype]


def logits_and_features(outputs: dict) -> dict:
  return {'logits': outputs['logits'], 'features': outputs['features']}


# ----------------------------------------------------------------------------------------------
# Shared backbone config checks
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
  from fgjax import pretrained  # pylint: disable=g-import-not-at-top
  info = pretrained.read_source_info(directory)
  if info['arch'] != config.model[backbone_field]:
    raise ValueError(f'config.model.{weights_field}={directory} holds {info["arch"]} weights but '
                     f'config.model.{backbone_field} is {config.model[backbone_field]!r}')


def backbone_kwargs(config, backbone_field: str, weights_field: str, dtype) -> dict:
  """Constructor kwargs of a stream; pretrained weights bring their own preprocessing."""
  kwargs = {'dtype': dtype, **config.model[f'{backbone_field}_kwargs']}
  if config.model[weights_field]:
    from fgjax.models.backbones.preprocessing import Preprocessing  # pylint: disable=g-import-not-at-top
    kwargs['preprocessing'] = Preprocessing.load(config.model[weights_field])
  return kwargs


# ----------------------------------------------------------------------------------------------
# Two-stream models (bcnn, bcnn_spp, bilinear_lstm): stream A and an optional stream B
# ----------------------------------------------------------------------------------------------

def add_two_stream_fields(m: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The stream fields of `config.model` (defaults: one shared small-CNN stream, [D,D])."""
  m.backbone_a = 'small_cnn'  # stream A ("D" in [D,M])
  m.layer_a = 'conv4'
  m.backbone_a_kwargs = ml_collections.ConfigDict()
  m.backbone_b = ''  # '' = one shared stream, symmetric [D,D]
  m.layer_b = ''  # '' = same layer name as stream A
  m.backbone_b_kwargs = ml_collections.ConfigDict()
  # Weight directories from `python -m fgjax.pretrained convert` (their preprocessing comes along).
  m.backbone_a_pretrained = ''
  m.backbone_b_pretrained = ''
  m.allow_random_init = False  # ImageNet backbones without weights are an error unless True
  m.proj_dim_a = 0  # 0 = no 1x1 projection
  m.proj_dim_b = 0
  return m


def two_stream_backbones(config, dtype):
  """(backbone_a, backbone_b or None) of `config.model`, with their weights' preprocessing."""
  m = config.model
  backbone_a = backbones_lib.get_backbone(
      m.backbone_a, **backbone_kwargs(config, 'backbone_a', 'backbone_a_pretrained', dtype))
  backbone_b = (backbones_lib.get_backbone(
      m.backbone_b, **backbone_kwargs(config, 'backbone_b', 'backbone_b_pretrained', dtype))
                if m.backbone_b else None)
  return backbone_a, backbone_b


def check_two_streams(config, min_grid: int) -> None:
  """Both streams' backbones, layers (grid >= min_grid) and weight directories."""
  m = config.model
  check_backbone_layer(config, 'backbone_a', 'layer_a', min_grid)
  if m.backbone_b:
    check_backbone_layer(config, 'backbone_b', 'layer_b', min_grid, layer=m.layer_b or m.layer_a)
  check_pretrained(config, 'backbone_a', 'backbone_a_pretrained')
  if m.backbone_b_pretrained and not m.backbone_b:
    raise ValueError('config.model.backbone_b_pretrained is set but config.model.backbone_b is '
                     "'' (one shared stream): put the weights in backbone_a_pretrained")
  check_pretrained(config, 'backbone_b', 'backbone_b_pretrained')


def two_stream_pretrained(config) -> list[tuple[str, str]]:
  """`Method.pretrained` of a two-stream model: each stream's weight directory, if set."""
  m = config.model
  return [(d, p) for d, p in ((m.backbone_a_pretrained, 'backbone_a/'),
                              (m.backbone_b_pretrained, 'backbone_b/')) if d]


def _import_all_methods() -> None:
  import importlib  # pylint: disable=g-import-not-at-top
  import pkgutil  # pylint: disable=g-import-not-at-top
  for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    importlib.import_module(f'{__name__}.{info.name}')


_import_all_methods()
