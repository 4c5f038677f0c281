"""Writes tests/fixtures/torchvision_resnet50.npz: torchvision ResNet-50 outputs on seeded weights.

Regenerate (needs torch + torchvision; the test suite itself does not) from the repository root,
with the python of an environment that has them, e.g. the ~/fgjax-bench venv of docs/benchmarks.md:

    ~/fgjax-bench/bin/python tests/parity/make_resnet_fixture.py

What it does: `torchvision.models.resnet50(weights=None)`; EVERY state_dict tensor (BN running
statistics included) replaced by `seeded_weights.seeded_tensor(name, shape, SEED)`; `model.eval()`;
input `seeded_images(SEED, (2, 64, 64, 3))` (NHWC, 0..255) normalised with torchvision's ImageNet
mean/std and transposed to NCHW; forward in float32.

Stored (no pickles; `np.load(allow_pickle=False)` works): `seed`, `rule_version`, `names`, `shapes`
(`seeded_weights.names_and_shapes`, shapes padded with -1), `input_shape` (NHWC),
`logits` (2, 1000), `layer1` (2, 16, 16, 256) and `layer4` (2, 2, 2, 2048), both NHWC,
`torch_version`, `torchvision_version`. The weights and inputs themselves are regenerated from the
seed by the test (tests/models/test_resnet.py).
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

SEED = 50
INPUT_SHAPE = (2, 64, 64, 3)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures',
                   'torchvision_resnet50.npz')
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def main():
  torch.manual_seed(0)
  model = torchvision.models.resnet50(weights=None)
  names, shapes, x = sw.seed_torch_model(model, SEED, MEAN, STD, INPUT_SHAPE)
  with torch.no_grad():
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    layer1 = model.layer1(h)
    layer4 = model.layer4(model.layer3(model.layer2(layer1)))
    logits = model.fc(torch.flatten(model.avgpool(layer4), 1))
    assert torch.allclose(logits, model(x), rtol=0, atol=0)

  def nhwc(t):
    return np.ascontiguousarray(t.numpy().transpose(0, 2, 3, 1), np.float32)

  np.savez_compressed(
      OUT, seed=np.int64(SEED), rule_version=np.int64(sw.RULE_VERSION), names=names, shapes=shapes,
      input_shape=np.asarray(INPUT_SHAPE, np.int64), logits=logits.numpy().astype(np.float32),
      layer1=nhwc(layer1), layer4=nhwc(layer4), torch_version=np.asarray(torch.__version__),
      torchvision_version=np.asarray(torchvision.__version__))
  print(f'wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 1e3:.0f} kB): '
        f'{len(names)} tensors, |logits| max {float(logits.abs().max()):.3g}, '
        f'|layer4| max {float(layer4.abs().max()):.3g}')


if __name__ == '__main__':
  main()
