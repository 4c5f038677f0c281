"""Before/after of the XLA:CPU backbone speed-ups (docs/benchmarks.md), in one process, interleaved.

    python -m benchmarks.backbone_ab steps [--which resnet50,vgg16] [--reps 2]
    python -m benchmarks.backbone_ab layers

`steps`: the fgjax trainer step (`benchmarks.heads.fgjax_train_step`) of ResNet-50 (224, batch 8)
and of B-CNN [D,D] VGG-16 (224, batch 4) with the original layers ('before': `nn.Conv` 1x1
convolutions, `reduce_window` max pooling, whose gradient is XLA's select_and_scatter) and the
current ones ('after': `Conv1x1` dots, tap-based max pooling with its own gradient), alternating
before/after `--reps` times so that a shared machine's load hits both alike.
`layers`: single layers, fwd / grad-input / grad-weight of 1x1 convolutions as `conv` vs `dot`, and
fwd+bwd of the pools, jitted, best of 5.
Prints JSON lines.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import heads
from fgjax import losses, methods
from fgjax.models.backbones import resnet, vgg
from fgjax.ops import pooling

_AFTER = {'resnet_pool': resnet.max_pool_padded, 'vgg_pool': vgg.max_pool_2x2}


def _set_layers(after: bool) -> None:
  """Swaps the pools the backbones call (module globals, read when a step is traced)."""
  resnet.max_pool_padded = _AFTER['resnet_pool'] if after else (
      lambda x, k, s, p: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))))
  vgg.max_pool_2x2 = _AFTER['vgg_pool'] if after else (
      lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)))


def _resnet_method(dot: bool) -> methods.Method:
  return methods.Method(
      name='resnet50_classifier', loss_fn=losses.classification, predict_fn=lambda o: o,
      model=resnet.ResNet50, fixed_fields={'include_top': True, 'dot_1x1': dot})


def steps(which, reps: int) -> None:
  for name in which:
    for rep in range(reps):
      for after in (False, True):
        _set_layers(after)
        try:
          if name == 'resnet50':
            batch = 8
            exp = heads.experiment(heads.train_config('resnet50_classifier', 224, batch), 200,
                                   _resnet_method(after))
          else:
            batch = 4
            exp = heads.experiment(heads.train_config('bcnn', 224, batch, model=dict(
                backbone_a='vgg16', layer_a='relu5_3', allow_random_init=True)), 200)
          t, c = heads.fgjax_train_step(exp, batch, iters=3)
        finally:
          _set_layers(True)
        print(json.dumps({'row': name, 'variant': 'after' if after else 'before', 'rep': rep,
                          'img_s': round(batch / t['median_s'], 3),
                          'median_s': round(t['median_s'], 3), 'min_s': round(t['min_s'], 3),
                          'compile_s': c['compile_s'],
                          'loadavg': [round(v, 2) for v in os.getloadavg()]}), flush=True)


def _best_ms(fn, n: int = 5) -> float:
  fn()
  runs = []
  for _ in range(n):
    t = time.perf_counter()
    fn()
    runs.append(time.perf_counter() - t)
  return round(min(runs) * 1e3, 2)


def layers() -> None:
  rng = np.random.default_rng(0)
  for h, cin, cout, stride in ((56, 64, 256, 1), (56, 256, 64, 1), (56, 256, 512, 2),
                               (14, 1024, 256, 1), (7, 512, 2048, 1)):
    x = jnp.asarray(rng.normal(size=(8, h, h, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(1, 1, cin, cout)) * 0.01, jnp.float32)

    def conv(x, w, stride=stride):
      return jax.lax.conv_general_dilated(x, w, (stride, stride), [(0, 0)] * 2,
                                          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

    def dot(x, w, stride=stride):
      x = x[:, ::stride, ::stride] if stride > 1 else x
      return jax.lax.dot_general(x, w[0, 0], (((3,), (0,)), ((), ())))

    g = jnp.ones_like(conv(x, w))
    out = {'layer': f'1x1 {h}x{h} {cin}->{cout} stride {stride}', 'batch': 8}
    for name, f in (('conv', conv), ('dot', dot)):
      fwd = jax.jit(f)
      dx = jax.jit(lambda x, w, g, f=f: jax.vjp(lambda x: f(x, w), x)[1](g)[0])
      dw = jax.jit(lambda x, w, g, f=f: jax.vjp(lambda w: f(x, w), w)[1](g)[0])
      out[name + '_ms'] = [_best_ms(lambda: fwd(x, w).block_until_ready()),
                           _best_ms(lambda: dx(x, w, g).block_until_ready()),
                           _best_ms(lambda: dw(x, w, g).block_until_ready())]
    print(json.dumps(out), flush=True)
  pools = (('stem 3x3/2 pad 1', (8, 112, 112, 64),
            lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))),
            lambda x: pooling.max_pool_padded(x, 3, 2, (1, 1, 1, 1))),
           ('vgg 2x2/2', (4, 224, 224, 64), lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)),
            pooling.max_pool_2x2),
           ('vgg 2x2/2', (4, 56, 56, 256), lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)),
            pooling.max_pool_2x2))
  for name, shape, before, after in pools:
    x = jax.nn.relu(jnp.asarray(rng.normal(size=shape), jnp.float32))
    out = {'pool': name, 'shape': list(shape)}
    for label, p in (('reduce_window_ms', before), ('taps_ms', after)):
      f = jax.jit(lambda x, p=p: jax.grad(lambda x: jnp.sum(p(x) ** 2))(x))
      out[label] = _best_ms(lambda: f(x).block_until_ready())
    print(json.dumps(out), flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('what', choices=('steps', 'layers'))
  parser.add_argument('--which', default='resnet50,vgg16')
  parser.add_argument('--reps', type=int, default=2)
  args = parser.parse_args()
  if args.what == 'steps':
    steps(args.which.split(','), args.reps)
  else:
    layers()


if __name__ == '__main__':
  main()
