"""Spatial LSTM: the anti-diagonal wavefront scan vs a per-cell raster-order scan of the same cell.

    python -m benchmarks.spatial_lstm [--grids 14,28] [--batch 2] [--hidden 16,64] [--features 64]
                                      [--iters 5] [--min_time 1] [--attention both|plain|attentive]

Both variants are `fgjax.models.spatial_lstm` modules that differ only in `scan` ('wavefront':
H+W-1 scan steps over anti-diagonals; 'per_cell': H*W scan steps of one cell each, carrying a row
buffer). The step timed is forward + backward: the gradient of mean(h) (+ mean(attention**2) for
the attentive cell, so the attention weights are differentiated too) with respect to all
parameters and to the input (x (B,H,W,features) for the plain LSTM, the gate inputs
(B,H,W,5*hidden) for the attentive one), jitted and compiled ahead of time. Prints one JSON line
per (grid, hidden, variant): `wavefront_s`, `per_cell_s` (median of at least `--iters` runs and
at least `--min_time` seconds of runs, after one warm-up; `runs` counts them), `ratio` =
per_cell_s / wavefront_s, the minimum times and their ratio (`ratio_min`, less sensitive to other
processes on a shared machine), compile times, batch, hidden, device.
Defaults (batch 2, hidden 16 and 64, 64 input features) run in about a minute on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from fgjax.models import spatial_lstm as sl


def _times(fn, iters: int, min_time: float) -> tuple[float, float, int]:
  """(median, min, count) of at least `iters` timed calls, and more (up to 500) until `min_time`
  seconds are spent, after one warm-up call."""
  fn()
  times = []
  while len(times) < iters or (sum(times) < min_time and len(times) < 500):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times), min(times), len(times)


def _timings(attention: bool, grid: int, batch: int, hidden: int, features: int, iters: int,
             min_time: float):
  key = jax.random.key(0, impl='rbg')
  shape = (batch, grid, grid, 5 * hidden if attention else features)
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  cls = sl.AttentiveSpatialLSTM if attention else sl.SpatialLSTM
  params = jax.jit(cls(hidden).init)(key, x)
  out = {}
  for scan in ('wavefront', 'per_cell'):
    model = cls(hidden, scan=scan)

    def loss(params, x):
      y = model.apply(params, x)
      return jnp.mean(y[0]) + jnp.mean(y[1] ** 2) if attention else jnp.mean(y)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    t = time.perf_counter()
    compiled = step.lower(params, x).compile()
    out[f'{scan}_compile_s'] = round(time.perf_counter() - t, 3)
    out[f'{scan}_s'], out[f'{scan}_min_s'], out[f'{scan}_runs'] = _times(
        lambda: jax.block_until_ready(compiled(params, x)), iters, min_time)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--grids', default='14,28')
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--hidden', default='16,64')
  parser.add_argument('--features', type=int, default=64)
  parser.add_argument('--iters', type=int, default=5, help='least number of timed runs')
  parser.add_argument('--min_time', type=float, default=1.0,
                      help='time more runs (up to 500) until this many seconds are spent')
  parser.add_argument('--attention', default='both', choices=('both', 'plain', 'attentive'))
  args = parser.parse_args()
  variants = {'both': (False, True), 'plain': (False,), 'attentive': (True,)}[args.attention]
  dev = jax.devices()[0]
  for grid in (int(g) for g in args.grids.split(',')):
    for hidden in (int(h) for h in args.hidden.split(',')):
      for attention in variants:
        t = _timings(attention, grid, args.batch, hidden, args.features, args.iters,
                     args.min_time)
        kind = 'attentive' if attention else 'plain'
        print(json.dumps({
            'name': f'spatial_lstm/{kind}/{grid}x{grid}/h{hidden}/fwd_bwd', 'grid': [grid, grid],
            'batch': args.batch, 'hidden': hidden,
            'features': None if attention else args.features, 'attention': attention,
            'wavefront_s': round(t['wavefront_s'], 5), 'per_cell_s': round(t['per_cell_s'], 5),
            'ratio': round(t['per_cell_s'] / t['wavefront_s'], 2),
            'wavefront_min_s': round(t['wavefront_min_s'], 5),
            'per_cell_min_s': round(t['per_cell_min_s'], 5),
            'ratio_min': round(t['per_cell_min_s'] / t['wavefront_min_s'], 2),
            'wavefront_compile_s': t['wavefront_compile_s'],
            'per_cell_compile_s': t['per_cell_compile_s'], 'scan_steps_wavefront': 2 * grid - 1,
            'scan_steps_per_cell': grid * grid,
            'runs': [t['wavefront_runs'], t['per_cell_runs']],
            'device': f'{dev.platform} ({dev.device_kind})', 'cpu_count': os.cpu_count(),
            'jax': jax.__version__}), flush=True)


if __name__ == '__main__':
  main()
