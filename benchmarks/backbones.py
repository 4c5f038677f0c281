"""Backbone throughput: fgjax (Flax, jitted) vs torchvision (PyTorch), side by side in one run.

    python -m benchmarks.backbones [--archs resnet50,vgg16,vgg19,vggm] [--sizes 224,448]
                                   [--batch 8] [--iters 3]

Needs PyTorch next to fgjax (benchmark-only; CPU build):
    pip install torch==2.13.0 && pip install --no-deps "torchvision==0.28.*"

For each (arch, input size, mode) prints one JSON line: `name`, `fgjax_img_s`, `peer_img_s`,
`ratio` (fgjax / peer), `fgjax_compile_s`, batch, device, and the timings (median of `--iters`
timed steps after one warm-up step each). Modes: `fwd` (inference: BatchNorm running statistics,
no gradients) and `fwd_bwd` (training mode: gradients of the mean final feature map with respect to
every parameter; no optimizer update). Both frameworks run the convolutional trunk only (the
`features` the papers use: VGG relu5_x / VGG-M relu5 / ResNet layer4), NHWC in JAX and PyTorch's
default contiguous NCHW. VGG-M has no torchvision model, so its peer is null.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from fgjax.models import backbones

FEATURE = {'resnet50': 'layer4', 'vgg16': 'relu5_3', 'vgg19': 'relu5_4', 'vggm': 'relu5'}


def _median_time(fn, iters: int) -> float:
  """Median seconds of `iters` timed calls after one warm-up (`benchmarks.common.times`)."""
  return common.times(fn, iters=iters)['median_s']


def fgjax_timings(arch: str, size: int, batch: int, iters: int) -> dict:
  model = backbones.get(arch)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)), jnp.uint8)
  variables = jax.jit(model.init)(jax.random.key(0), x[:1])
  params, rest = variables['params'], {k: v for k, v in variables.items() if k != 'params'}
  layer = FEATURE[arch]

  @jax.jit
  def fwd(params, x):
    return model.apply({'params': params, **rest}, x, train=False)['features'][layer]

  @jax.jit
  def fwd_bwd(params, x):
    def loss(p):
      out, _ = model.apply({'params': p, **rest}, x, train=True, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.key(1)})
      return out['features'][layer].astype(jnp.float32).mean()
    return jax.grad(loss)(params)

  out = {}
  for mode, fn in (('fwd', fwd), ('fwd_bwd', fwd_bwd)):
    t = time.perf_counter()
    compiled = fn.lower(params, x).compile()
    compile_s = time.perf_counter() - t
    step = _median_time(lambda: jax.block_until_ready(compiled(params, x)), iters)
    out[mode] = {'compile_s': compile_s, 'step_s': step}
  return out


def _torchvision():
  import torch  # pylint: disable=g-import-not-at-top
  # torchvision's CPU wheel is unavailable here; its pure-Python models work once the C++ op
  # schemas exist (see ENVIRONMENT notes in the README).
  lib = torch.library.Library('torchvision', 'DEF')  # noqa: F841
  lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  import torchvision  # pylint: disable=g-import-not-at-top
  return torch, torchvision, lib


def torch_timings(tv, arch: str, size: int, batch: int, iters: int) -> dict | None:
  torch, torchvision, _ = tv
  if arch == 'resnet50':
    full = torchvision.models.resnet50(weights=None)
    trunk = torch.nn.Sequential(*list(full.children())[:-2])
  elif arch in ('vgg16', 'vgg19'):
    trunk = getattr(torchvision.models, arch)(weights=None).features[:-1]  # pool5 dropped
  else:
    return None
  x = torch.randint(0, 256, (batch, 3, size, size)).float()
  out = {}

  def fwd():
    with torch.no_grad():
      trunk(x)

  def fwd_bwd():
    trunk.zero_grad(set_to_none=True)
    trunk(x).mean().backward()

  trunk.eval()
  out['fwd'] = {'step_s': _median_time(fwd, iters)}
  trunk.train()
  out['fwd_bwd'] = {'step_s': _median_time(fwd_bwd, iters)}
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--archs', default='resnet50,vgg16,vgg19,vggm')
  parser.add_argument('--sizes', default='224,448')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--iters', type=int, default=3)
  args = parser.parse_args()
  tv = _torchvision()
  torch = tv[0]
  device = jax.devices()[0].device_kind
  for arch in args.archs.split(','):
    for size in (int(s) for s in args.sizes.split(',')):
      ours = fgjax_timings(arch, size, args.batch, args.iters)
      peer = torch_timings(tv, arch, size, args.batch, args.iters)
      for mode in ('fwd', 'fwd_bwd'):
        fg = args.batch / ours[mode]['step_s']
        pr = args.batch / peer[mode]['step_s'] if peer else None
        print(json.dumps({
            'name': f'{arch}/{size}/{mode}', 'arch': arch, 'size': size, 'mode': mode,
            'batch': args.batch, 'device': f'cpu ({device})', 'iters': args.iters,
            'fgjax_img_s': round(fg, 3), 'peer_img_s': None if pr is None else round(pr, 3),
            'ratio': None if pr is None else round(fg / pr, 3),
            'fgjax_compile_s': round(ours[mode]['compile_s'], 2),
            'fgjax_step_s': round(ours[mode]['step_s'], 4),
            'peer_step_s': None if peer is None else round(peer[mode]['step_s'], 4),
            'peer': f'torchvision {tv[1].__version__} (torch {torch.__version__}, '
                    f'{torch.get_num_threads()} threads)' if peer else None,
            'jax': jax.__version__}), flush=True)


if __name__ == '__main__':
  main()
