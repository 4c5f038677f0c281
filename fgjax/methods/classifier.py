"""classifier: a plain image classifier (backbone, global average pooling, linear; model in
fgjax/models/classifier.py), trained with cross-entropy.

It pretrains the embedded benchmark's backbones (`benchmarks.pretrain`: weight directories in the
format of `python -m fgjax.pretrained convert`) and is the backbone-only baseline of the methods.
"""

from __future__ import annotations

import numpy as np

from fgjax import losses
from fgjax.methods.common import Method, backbone_pretrained, check_backbone, logits_and_features
from fgjax.models.classifier import ImageClassifier
from fgjax.visualisation import panels


def attention_panels(outputs, index, config, options):
  """No attention in a plain classifier: the panel is the class activation map of the predicted
  class (the classifier's kernel at every location of the backbone map; Zhou et al. 2016)."""
  del config, options
  return [panels.Panel(title='no attention: class activation map\nof the predicted class',
                       heatmap=np.asarray(outputs['cam'][index], np.float64),
                       colorbar_label='CAM')]


METHOD = Method(
    name='classifier', model=ImageClassifier, loss_fn=losses.classification,
    predict_fn=logits_and_features, check_config=check_backbone, pretrained=backbone_pretrained,
    description='backbone -> global average pooling -> linear classifier',
    attention_panels=attention_panels)
