"""Backbone registry: name -> Flax Linen module class.

Every backbone follows the interface in DESIGN.md ("Interfaces between the parts"): `__call__(images, train=False) -> {'features': {name: NHWC map}}`
(plus `'logits'` for backbones built with an ImageNet head),
uint8 (or float [0, 255]) NHWC input normalised inside the backbone, a `dtype` (compute) field with
float32 params, and `feature_strides: dict[str, int]` readable on an instance without tracing.
The VGG-D/M and ResNet-50 backbones register here under their own names when they land.
"""
from __future__ import annotations

import flax.linen as nn

from fgjax.models.backbones.preprocessing import Preprocessing
from fgjax.models.backbones.resnet import ResNet50
from fgjax.models.backbones.small import SmallCNN
from fgjax.models.backbones.vgg import VGG16, VGG19, VGGM

BACKBONES: dict[str, type[nn.Module]] = {
    'small_cnn': SmallCNN,
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
  given (tests and benchmarks inject stubs). `name` binds it under that scope (e.g. 'backbone_a',
  the prefix its weights and lr multipliers use)."""
  if isinstance(spec, nn.Module):
    return spec.clone(name=name) if name else spec
  kw = dict(kwargs or {})
  if dtype is not None:
    kw['dtype'] = dtype
  if pretrained:
    kw['preprocessing'] = Preprocessing.load(pretrained)
  if name:
    kw['name'] = name
  return get_backbone(spec, **kw)
