"""Backbone registry: name -> Flax Linen module class.

Every backbone follows the interface in DESIGN.md ("Interfaces between the parts"): `__call__(images, train=False) -> {'features': {name: NHWC map}}`
(plus `'logits'` for backbones built with an ImageNet head),
uint8 (or float [0, 255]) NHWC input normalised inside the backbone, a `dtype` (compute) field with
float32 params, and `feature_strides: dict[str, int]` readable on an instance without tracing.
The VGG-D/M and ResNet-50 backbones register here under their own names when they land.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn

from fgjax.models.backbones.preprocessing import Preprocessing
from fgjax.models.backbones.resnet import ResNet50
from fgjax.models.backbones.small import SmallCNN
from fgjax.models.backbones.small_resnet import SmallResNet
from fgjax.models.backbones.vgg import VGG16, VGG19, VGGM

BACKBONES: dict[str, type[nn.Module]] = {
    'small_cnn': SmallCNN,
    'small_resnet': SmallResNet,
    'resnet50': ResNet50,
    'vgg16': VGG16,
    'vgg19': VGG19,
    'vggm': VGGM,
}


def register_backbone(name: str, cls: type[nn.Module]) -> type[nn.Module]:
  """Adds `cls` under `name` (ValueError if the name is taken by another class); returns `cls`."""
  if name in BACKBONES and BACKBONES[name] is not cls:
    raise ValueError(f'backbone {name!r} is already registered as {BACKBONES[name].__name__}')
  BACKBONES[name] = cls
  return cls


def list_backbones() -> list[str]:
  """Registered backbone names, sorted."""
  return sorted(BACKBONES)


def get_backbone(name: str, **kwargs) -> nn.Module:
  """An unbound instance of backbone `name`, built with `kwargs` (e.g. `dtype`, `widths`).

  Raises ValueError naming `name` and listing the valid names if it is not registered.
  """
  try:
    cls = BACKBONES[name]
  except KeyError:
    raise ValueError(
        f'unknown backbone {name!r}; valid backbones: {", ".join(list_backbones())}') from None
  return cls(**kwargs)


get = get_backbone  # the public name: fgjax.models.backbones.get(arch, **kw)


def build(spec: str | nn.Module, *, kwargs=None, pretrained: str = '', dtype=None,
          name: str | None = None) -> nn.Module:
  """The backbone a model field names: `spec` is a registered name (built with `kwargs`, the
  compute `dtype` and, when `pretrained` is a weight directory written by `python -m
  fgjax.pretrained convert`, that directory's input preprocessing), or a module instance used as
  given (tests and benchmarks inject stubs; as a module field it is already bound under the field's name).
  `name` binds a built one under that scope (e.g. 'backbone_a', the prefix its weights and lr
  multipliers use)."""
  if isinstance(spec, nn.Module):  # a module field: already bound under the field's name
    return spec
  kw = dict(kwargs or {})
  if dtype is not None:
    kw['dtype'] = dtype
  if pretrained:
    kw['preprocessing'] = Preprocessing.load(pretrained)
  if name:
    kw['name'] = name
  if spec not in BACKBONES:
    get_backbone(spec)  # the error naming the valid backbones
  return BACKBONES[spec](**kw)


def of(module, suffix: str = '') -> nn.Module:
  """The backbone a model's fields name (`backbone{suffix}`, `backbone{suffix}_kwargs`,
  `backbone{suffix}_pretrained`, and the model's `dtype`), bound under `backbone{suffix}`. Call it
  from the model's `setup` or compact `__call__`."""
  return build(getattr(module, f'backbone{suffix}'),
               kwargs=getattr(module, f'backbone{suffix}_kwargs'),
               pretrained=getattr(module, f'backbone{suffix}_pretrained'), dtype=module.dtype,
               name=f'backbone{suffix}')


class BackboneFields(nn.Module, kw_only=True):
  """The backbone settings of the one-backbone models (A3M, ActivationAttention,
  FocusDiscriminate), declared once; `of(model)` builds the backbone from them.

  Attributes:
    backbone: a registered backbone name (`BACKBONES`), or a module instance (tests, benchmarks),
      bound under the name `backbone` (the prefix of its weights and lr multipliers).
    layer: the key of the backbone's feature dict the model reads.
    backbone_kwargs: constructor arguments of the backbone (e.g. widths).
    backbone_pretrained: a weight directory from `python -m fgjax.pretrained convert`; its input
      preprocessing comes with it (the trainer loads the weights, `Method.pretrained`).
    allow_random_init: an ImageNet backbone without weights is a config error unless True (read by
      the method's config check, not by `__call__`).
  """
  backbone: Any = 'small_cnn'
  layer: str = 'conv4'
  backbone_kwargs: Any = flax.core.FrozenDict()
  backbone_pretrained: str = ''
  allow_random_init: bool = False
