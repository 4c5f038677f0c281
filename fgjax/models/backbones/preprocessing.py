"""Input preprocessing that belongs to a set of weights (mean/std and channel order).

ImageNet weights are only meaningful with the preprocessing they were trained with, so each
weight source carries it: a converted checkpoint stores its `Preprocessing` next to the arrays
(`preprocessing.json`), and the backbone built for those weights uses it. Images reach backbones as
uint8 (or float in [0, 255]) RGB NHWC; `normalize` reorders channels if the weights expect BGR.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """x -> (x[..., order] - mean) / std, with x in [0, 255] and mean/std in the weights' order."""
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  channels: str = 'RGB'  # 'RGB' or 'BGR': the channel order the weights expect
  source: str = ''  # where these values come from (for error messages and docs)

  def __post_init__(self):
    if self.channels not in ('RGB', 'BGR'):
      raise ValueError(f"Preprocessing.channels must be 'RGB' or 'BGR', got {self.channels!r}")
    object.__setattr__(self, 'mean', tuple(float(v) for v in self.mean))
    object.__setattr__(self, 'std', tuple(float(v) for v in self.std))

  def normalize(self, images: jax.Array, dtype=jnp.float32) -> jax.Array:
    x = images.astype(jnp.float32)
    if self.channels == 'BGR':
      x = x[..., ::-1]
    x = (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
    return x.astype(dtype)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  def save(self, directory: str) -> None:
    with open(os.path.join(directory, 'preprocessing.json'), 'w') as f:
      json.dump(self.to_json(), f, indent=2)

  @classmethod
  def load(cls, directory: str) -> 'Preprocessing':
    path = os.path.join(directory, 'preprocessing.json')
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} is missing: {directory} is not a weight directory written by '
                              '`python -m fgjax.pretrained convert`')
    with open(path) as f:
      return cls(**json.load(f))


# torchvision ImageNet models: RGB in [0, 1], mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
TORCHVISION = Preprocessing(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
                            channels='RGB', source='torchvision ImageNet')
# Caffe / Keras 'caffe' mode: BGR in [0, 255] minus the ImageNet BGR mean, no scaling.
CAFFE_BGR = Preprocessing(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), channels='BGR',
                          source='caffe ImageNet (BGR mean)')
