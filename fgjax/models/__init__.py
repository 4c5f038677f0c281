"""Flax Linen models: backbones (`fgjax.models.backbones`) and method heads (e.g. `bilinear.BCNN`)."""
