"""Writes tests/fixtures/torchvision_vgg16.npz and _vgg19.npz: torchvision VGG outputs on seeded weights.

Regenerate (needs torch + torchvision; the test suite itself does not) from the repository root,
with the python of an environment that has them, e.g. the ~/fgjax-bench venv of docs/benchmarks.md:

    ~/fgjax-bench/bin/python tests/parity/make_vgg_fixtures.py

What it does, for vgg16 and vgg19: `torchvision.models.vggXX(weights=None)`; EVERY state_dict
tensor replaced by `seeded_weights.seeded_tensor(name, shape, SEED)`; `model.eval()`; input
`seeded_images(SEED, (2, 64, 48, 3))` (NHWC, 0..255) normalised with torchvision's ImageNet
mean/std and transposed to NCHW; forward in float32. 64x48 (rather than a square 32x32) makes
relu5 4x3 and pool5 2x1, so the adaptive average pool spreads a non-square map to 7x7 with
overlapping bins and fc6's (C, H, W) -> (H, W, C) row permutation is tested along both axes.

Stored (no pickles; `np.load(allow_pickle=False)` works): `seed`, `rule_version`, `names`, `shapes`
(`seeded_weights.names_and_shapes`, shapes padded with -1), `input_shape` (NHWC), `logits`
(2, 1000), `relu5` (relu5_3 / relu5_4, NHWC (2, 4, 3, 512)), `torch_version`,
`torchvision_version`. The weights and inputs themselves are regenerated from the seed by the test.
"""
import os
import sys

import numpy as np
import torch

_lib = torch.library.Library('torchvision', 'DEF')  # torchvision's C++ ops are not built here
_lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
_lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
import torchvision  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seeded_weights as sw  # noqa: E402

SEED = 16
INPUT_SHAPE = (2, 64, 48, 3)
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures')
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def make(arch: str) -> None:
  torch.manual_seed(0)
  model = getattr(torchvision.models, arch)(weights=None)
  names, shapes, x = sw.seed_torch_model(model, SEED, MEAN, STD, INPUT_SHAPE)
  with torch.no_grad():
    relu5 = model.features[:-1](x)  # everything but pool5
    logits = model(x)
    pooled = model.avgpool(model.features[-1](relu5))
    assert torch.equal(logits, model.classifier(torch.flatten(pooled, 1)))

  out = os.path.join(FIXTURES, f'torchvision_{arch}.npz')
  relu5 = np.ascontiguousarray(relu5.numpy().transpose(0, 2, 3, 1), np.float32)
  np.savez_compressed(
      out, seed=np.int64(SEED), rule_version=np.int64(sw.RULE_VERSION), names=names, shapes=shapes,
      input_shape=np.asarray(INPUT_SHAPE, np.int64), logits=logits.numpy().astype(np.float32),
      relu5=relu5, torch_version=np.asarray(torch.__version__),
      torchvision_version=np.asarray(torchvision.__version__))
  print(f'wrote {os.path.normpath(out)} ({os.path.getsize(out) / 1e3:.0f} kB): {len(names)} '
        f'tensors, relu5 {relu5.shape}, |logits| max {float(logits.abs().max()):.3g}, '
        f'|relu5| max {float(np.abs(relu5).max()):.3g}')


def main():
  torch.set_num_threads(2)
  for arch in ('vgg16', 'vgg19'):
    make(arch)


if __name__ == '__main__':
  main()
