"""A plain image classifier: backbone -> global average pooling -> linear.

The model the embedded benchmark pretrains its backbones with (`benchmarks.pretrain`, standing in
for ImageNet), and the baseline every method's overhead is measured against.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgjax.models import backbones as backbones_lib


class ImageClassifier(backbones_lib.BackboneFields, kw_only=True):
  """`backbone(images)[layer]` -> mean over H, W -> dropout -> Dense `classifier`.

  Attributes (besides the backbone fields, `fgjax.models.backbones.BackboneFields`):
    num_classes: classifier outputs.
    dropout_rate: dropout on the pooled feature in training.
    label_smoothing: of the cross-entropy (read by the loss, not by `__call__`).
    dtype: compute dtype of the backbone; pooling and the classifier run in float32.

  Returns from `__call__(images, train=False)`: `{'logits': (N, num_classes) float32, 'features':
  (N, C) float32 pooled feature, 'cam': (N, h, w) float32 class activation map of the predicted
  class}` (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization": the
  classifier's kernel applied at every location; its mean over the grid + bias = the logit).
  """
  num_classes: int
  dropout_rate: float = 0.0
  label_smoothing: float = 0.0
  dtype: Any = jnp.float32

  def __post_init__(self):
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'config.model.dropout_rate must be in [0, 1), got {self.dropout_rate}')
    super().__post_init__()

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    fmap = backbones_lib.of(self)(images, train=train)['features'][self.layer]
    features = jnp.mean(fmap.astype(jnp.float32), axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    classifier = nn.Dense(self.num_classes, dtype=jnp.float32, name='classifier')
    logits = classifier(x)
    kernel = classifier.variables['params']['kernel']
    cams = jnp.einsum('nhwc,ck->nhwk', fmap.astype(jnp.float32), kernel)
    pred = jnp.argmax(logits, axis=-1)
    cam = jnp.take_along_axis(cams, pred[:, None, None, None], axis=-1)[..., 0]
    return {'logits': logits, 'features': features, 'cam': cam}
