"""Spatial LSTM: the anti-diagonal wavefront vs a per-cell raster-order scan, and vs PyTorch.

    python -m benchmarks.spatial_lstm [--grids 14,28] [--batch 2] [--hidden 16,64] [--features 64]
                                      [--iters 5] [--min_time 1] [--attention both|plain|attentive]
                                      [--peer auto|off]

`rows(grid, batch, hidden, features, attention, iters, min_time)` returns the JSON-able rows of one
setting (`benchmarks.run` calls it); the CLI prints them, one JSON line each.

Row 1 (`spatial_lstm/<plain|attentive>/<H>x<W>/h<hidden>/fwd_bwd`): two `fgjax.models.spatial_lstm`
modules that differ only in `scan` ('wavefront': one scan step per anti-diagonal; 'per_cell': H*W
scan steps of one cell each, carrying a row buffer). The step timed is forward + backward: the
gradient of mean(h) (+ mean(attention**2) for the attentive cell, so the attention weights are
differentiated too) with respect to all parameters and to the input (x (B,H,W,features) for the
plain LSTM, the gate inputs (B,H,W,5*hidden) for the attentive one), jitted and compiled ahead of
time. Fields: `wavefront_s`, `per_cell_s` (median of at least `iters` runs and at least `min_time`
seconds of runs, after one warm-up; `runs` counts them), `ratio` = per_cell_s / wavefront_s, the
minimum times and their ratio (`ratio_min`, less sensitive to other processes on a shared machine),
compile times, `scan_steps_*`, `loadavg` (os.getloadavg() after the row: 1, 5, 15 minutes).

Row 2 (`.../fwd_bwd/vs_torch`, only where torch imports): the same step in PyTorch
(`benchmarks.torch_spatial_lstm`: a Python loop over diagonals, vectorised within each) on the same
parameters and input, timed with torch's default thread count and with 1 thread (the faster is
the peer, `peer_s_by_threads` has both): `fgjax_img_s` = batch / wavefront median, `peer_img_s` =
batch / torch median, `ratio` = fgjax / peer, `ratio_min` from the minima, and the check that both
compute the same function: max |fgjax - torch| of h (and attention) and of the input gradient
(`check`: 'ok' when all are below 1e-4; the row is still written when not, with 'MISMATCH').
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from fgjax.models import spatial_lstm as sl

CHECK_ATOL = 1e-4
MAX_RUNS = 500  # timed calls at most while `min_time` is not yet spent


def _setup(attention: bool, grid, batch: int, hidden: int, features: int):
  key = jax.random.key(0, impl='rbg')
  shape = (batch, *grid, 5 * hidden if attention else features)
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  cls = sl.AttentiveSpatialLSTM if attention else sl.SpatialLSTM
  return cls, jax.jit(cls(hidden).init)(key, x), x


def _timings(attention: bool, grid, batch: int, hidden: int, features: int, iters: int,
             min_time: float):
  cls, params, x = _setup(attention, grid, batch, hidden, features)
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
    timing = common.times(lambda: jax.block_until_ready(compiled(params, x)), iters=iters,
                          min_time=min_time, max_runs=MAX_RUNS)
    out[f'{scan}_s'], out[f'{scan}_min_s'] = timing['median_s'], timing['min_s']
    out[f'{scan}_runs'] = timing['runs']
    if scan == 'wavefront':
      out['grad_x'] = np.asarray(compiled(params, x)[1])
      out['outputs'] = jax.jit(model.apply)(params, x)
  return out, params, x


def _torch_row(name, attention, t, params, x, batch, iters, min_time):
  """The side-by-side row vs the PyTorch peer, or None where torch does not import."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  from benchmarks import torch_spatial_lstm as peer  # pylint: disable=import-outside-toplevel
  p = jax.tree.map(np.asarray, params['params'])
  ts = peer.tensors(p, np.asarray(x), attention)

  def step():
    for v in ts.values():
      v.grad = None
    peer.loss(peer.forward(ts, attention), attention).backward()

  threads = torch.get_num_threads()
  timed = {}
  for n in sorted({threads, 1}):  # tiny per-diagonal ops: one thread can beat the pool
    torch.set_num_threads(n)
    timing = common.times(step, iters=iters, min_time=min_time, max_runs=MAX_RUNS)
    timed[n] = timing['median_s'], timing['min_s'], timing['runs']
  torch.set_num_threads(threads)
  best = min(timed, key=lambda n: timed[n][0])
  torch_s, torch_min_s, runs = timed[best]
  step()
  diffs = peer.check_against_fgjax(t['outputs'], p, np.asarray(x), attention)
  diffs['max_abs_diff_grad_x'] = float(np.max(np.abs(t['grad_x'] - ts['x'].grad.numpy())))
  ok = all(v < CHECK_ATOL for v in diffs.values())
  return {
      'name': f'{name}/vs_torch', 'fgjax_img_s': round(batch / t['wavefront_s'], 2),
      'peer_img_s': round(batch / torch_s, 2), 'ratio': round(torch_s / t['wavefront_s'], 2),
      'ratio_min': round(torch_min_s / t['wavefront_min_s'], 2),
      'fgjax_s': round(t['wavefront_s'], 5), 'peer_s': round(torch_s, 5),
      'peer': 'benchmarks.torch_spatial_lstm (per-diagonal loop)', 'peer_runs': runs,
      'torch': torch.__version__, 'torch_threads': best,
      'peer_s_by_threads': {str(n): round(v[0], 5) for n, v in timed.items()},
      **{k: float(f'{v:.3g}') for k, v in diffs.items()}, 'check': 'ok' if ok else 'MISMATCH',
      'check_atol': CHECK_ATOL, 'loadavg': [round(v, 2) for v in os.getloadavg()]}


def rows(grid, batch: int = 2, hidden: int = 16, features: int = 64, attention: bool = False,
         iters: int = 5, min_time: float = 1.0, peer: bool = True) -> list[dict]:
  """The benchmark rows of one setting (grid: int or (H, W)): wavefront vs per-cell, and vs torch
  (with `peer` and where torch imports)."""
  grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
  t, params, x = _timings(attention, grid, batch, hidden, features, iters, min_time)
  kind = 'attentive' if attention else 'plain'
  name = f'spatial_lstm/{kind}/{grid[0]}x{grid[1]}/h{hidden}/fwd_bwd'
  dev = jax.devices()[0]
  out = [{
      'name': name, 'grid': list(grid), 'batch': batch, 'hidden': hidden,
      'features': None if attention else features, 'attention': attention,
      'wavefront_s': round(t['wavefront_s'], 5), 'per_cell_s': round(t['per_cell_s'], 5),
      'ratio': round(t['per_cell_s'] / t['wavefront_s'], 2),
      'wavefront_min_s': round(t['wavefront_min_s'], 5),
      'per_cell_min_s': round(t['per_cell_min_s'], 5),
      'ratio_min': round(t['per_cell_min_s'] / t['wavefront_min_s'], 2),
      'wavefront_compile_s': t['wavefront_compile_s'],
      'per_cell_compile_s': t['per_cell_compile_s'],
      'scan_steps_wavefront': sum(g.cells.shape[0] for g in sl.wavefront_schedule(
          *grid, 2 if attention else 1, attention).groups),
      'scan_steps_per_cell': grid[0] * grid[1], 'runs': [t['wavefront_runs'], t['per_cell_runs']],
      'device': f'{dev.platform} ({dev.device_kind})', 'cpu_count': os.cpu_count(),
      'jax': jax.__version__, 'loadavg': [round(v, 2) for v in os.getloadavg()]}]
  if peer:
    row = _torch_row(name, attention, t, params, x, batch, iters, min_time)
    if row is not None:
      out.append(row)
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
  parser.add_argument('--peer', default='auto', choices=('auto', 'off'),
                      help='auto: add the side-by-side row vs PyTorch where torch imports')
  args = parser.parse_args()
  variants = {'both': (False, True), 'plain': (False,), 'attentive': (True,)}[args.attention]
  for grid in (int(g) for g in args.grids.split(',')):
    for hidden in (int(h) for h in args.hidden.split(',')):
      for attention in variants:
        for row in rows(grid, args.batch, hidden, args.features, attention, args.iters,
                        args.min_time, peer=args.peer == 'auto'):
          print(json.dumps(row), flush=True)


if __name__ == '__main__':
  main()
