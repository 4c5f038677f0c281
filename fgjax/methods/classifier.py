"""classifier: a plain image classifier (backbone, global average pooling, linear; model in
fgjax/models/classifier.py), trained with cross-entropy.

It pretrains the embedded benchmark's backbones (`benchmarks.pretrain`: weight directories in the
format of `python -m fgjax.pretrained convert`) and is the backbone-only baseline of the methods.
"""

from __future__ import annotations

from fgjax import losses
from fgjax.methods.common import Method, backbone_pretrained, check_backbone, logits_and_features
from fgjax.models.classifier import ImageClassifier

METHOD = Method(
    name='classifier', model=ImageClassifier, loss_fn=losses.classification,
    predict_fn=logits_and_features, check_config=check_backbone, pretrained=backbone_pretrained,
    description='backbone -> global average pooling -> linear classifier')
