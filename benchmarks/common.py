"""Measurement helpers shared by the benchmark suite (`python -m benchmarks.run`).

What every number means (the suite's rows are built from these):
- `times(fn)`: wall-clock seconds of `fn()` (which must block until its result exists), after
  `warmup` untimed calls; at least `iters` timed calls and more until `min_time` seconds are spent
  (at most `max_runs`). Rows report the median (`*_s`) and the minimum (`*_min_s`): the median is
  the figure, the minimum is less sensitive to other processes on a shared machine.
- `compile_jax(jitted, *args)`: `jitted.lower(*args).compile()`, timed (`compile_s`: trace + lower
  + XLA compile, nothing cached by an earlier call with the same shapes).
- `flops(compiled)`: `compiled.cost_analysis()['flops']`, XLA's count for one call of the whole
  program (a multiply-add counts 2; dots and convolutions dominate; element-wise ops count 1 per
  element). Divided by the images in the call it is `flops_per_image`.
- `memory(compiled, device)`: on CPU, `compiled.memory_analysis()`: argument + output + temp
  bytes, minus aliased (donated) bytes (`peak_memory_how` says so); that is the buffer space the
  executable needs at once, not the process's RSS. On GPU/TPU, `device.memory_stats()
  ['peak_bytes_in_use']` after the timed runs (the allocator's high-water mark of the whole
  process so far, so rows run in order only ever raise it).
- `matmul_peak(device)`: the best of several timed square matmuls, jitted, on the same device
  and in the same process (float32 4096^2 on CPU, bfloat16 8192^2 on GPU), 2*n^3 / seconds.
  `utilisation` = achieved FLOP/s of a row / that peak.
- `ratio(fgjax_s, peer_s)`: fgjax speed / peer speed = peer seconds / fgjax seconds for the same
  work (> 1: fgjax faster).
- `ratio_spread` of a side-by-side row: the 25th and 75th percentiles of peer_s / fgjax_s over
  every pair of one timed peer call and one timed fgjax call: how far the ratio moves with the
  repeats of this run (a wide spread means other processes or frequency changes got in).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Fields every row has (run.py fills the environment ones); side-by-side rows also have SIDE_FIELDS.
ROW_FIELDS = ('name', 'method', 'backbone', 'input_size', 'batch', 'device', 'host_cpu', 'loadavg',
              'jax')
SIDE_FIELDS = ('fgjax_img_s', 'peer_img_s', 'ratio', 'unit', 'fgjax_s', 'peer_s', 'peer')
COST_FIELDS = ('compile_s', 'peak_memory_bytes', 'peak_memory_how', 'flops_per_image',
               'achieved_flop_s', 'utilisation')


def times(fn: Callable[[], Any], iters: int = 3, min_time: float = 0.0, warmup: int = 1,
          max_runs: int = 200) -> dict:
  """{'median_s', 'min_s', 'runs', 'all_s'} of `fn()` (see the module docstring)."""
  for _ in range(warmup):
    fn()
  runs = []
  while len(runs) < iters or (sum(runs) < min_time and len(runs) < max_runs):
    t = time.perf_counter()
    fn()
    runs.append(time.perf_counter() - t)
  return {'median_s': statistics.median(runs), 'min_s': min(runs), 'runs': len(runs),
          'all_s': runs}


def compile_jax(jitted, *args, **kwargs):
  """(compiled executable, compile seconds) of `jitted` for these arguments."""
  t = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile()
  return compiled, time.perf_counter() - t


def _first(analysis):
  # cost_analysis() is a dict in current jax; older versions return a list with one dict.
  if isinstance(analysis, (list, tuple)):
    return analysis[0] if analysis else {}
  return analysis or {}


def flops(compiled) -> float | None:
  """XLA's FLOP count of one call of `compiled`, or None when the backend gives none."""
  try:
    value = _first(compiled.cost_analysis()).get('flops')
  except Exception:  # pylint: disable=broad-except
    return None
  return None if value is None or value < 0 else float(value)


def memory(compiled, device=None) -> tuple[int | None, str]:
  """(bytes, how) of the peak memory of `compiled` on `device` (see the module docstring)."""
  device = device or jax.devices()[0]
  if device.platform != 'cpu':
    stats = device.memory_stats() or {}
    if 'peak_bytes_in_use' in stats:
      return int(stats['peak_bytes_in_use']), 'device.memory_stats peak_bytes_in_use (process)'
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None, 'unavailable'
  if m is None:
    return None, 'unavailable'
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           - m.alias_size_in_bytes)
  return int(total), 'memory_analysis: argument + output + temp - alias bytes'


def matmul_peak(device=None, n: int | None = None, dtype=None, repeats: int = 10) -> dict:
  """Best FLOP/s of a jitted n x n matmul on `device` (float32 on CPU, bfloat16 elsewhere)."""
  device = device or jax.devices()[0]
  cpu = device.platform == 'cpu'
  n = n or (4096 if cpu else 8192)
  dtype = dtype or (jnp.float32 if cpu else jnp.bfloat16)
  keys = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(keys[0], (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(keys[1], (n, n), dtype), device)
  f = jax.jit(lambda x, y: x @ y)
  t = times(lambda: f(a, b).block_until_ready(), iters=repeats, warmup=1)
  return {'matmul_peak_flop_s': 2.0 * n ** 3 / t['min_s'], 'matmul_n': n,
          'matmul_dtype': jnp.dtype(dtype).name, 'matmul_median_flop_s': 2.0 * n ** 3 / t['median_s']}


def ratio(fgjax_s: float | None, peer_s: float | None) -> float | None:
  """fgjax speed / peer speed for the same work (peer seconds / fgjax seconds)."""
  if not fgjax_s or not peer_s:
    return None
  return round(peer_s / fgjax_s, 3)


def cost_fields(compiled, step_s: float, images: int, peak: float | None, compile_s: float,
                device=None) -> dict:
  """compile_s, peak memory, flops_per_image, achieved FLOP/s and utilisation of one jitted call
  that processes `images` images in `step_s` seconds."""
  total = flops(compiled)
  mem, how = memory(compiled, device)
  achieved = total / step_s if total and step_s else None
  return {'compile_s': round(compile_s, 3), 'peak_memory_bytes': mem, 'peak_memory_how': how,
          'flops_per_image': None if total is None else total / images,
          'achieved_flop_s': achieved,
          'utilisation': None if not (achieved and peak) else achieved / peak}


def ratio_spread(fgjax_t: dict | None, peer_t: dict | None) -> list[float] | None:
  """[25th, 75th] percentile of peer / fgjax seconds over all pairs of timed calls, or None
  when a side or its individual timings are missing."""
  fg, pr = (fgjax_t or {}).get('all_s'), (peer_t or {}).get('all_s')
  if not fg or not pr:
    return None
  pairs = np.array([p / f for p in pr for f in fg if f > 0])
  return [round(float(q), 3) for q in np.percentile(pairs, [25, 75])] if pairs.size else None


def side_by_side(name: str, *, fgjax_t: dict | None, peer_t: dict | None, items: int,
                 unit: str = 'img/s', peer: str | None = None, **fields) -> dict:
  """A side-by-side row: `fgjax_img_s`, `peer_img_s` (items per second; `unit` names the items),
  `ratio` = fgjax / peer (None when a side is missing), the median and min seconds of both."""
  fg = fgjax_t['median_s'] if fgjax_t else None
  pr = peer_t['median_s'] if peer_t else None
  row = {'name': name,
         'fgjax_img_s': None if fg is None else round(items / fg, 4),
         'peer_img_s': None if pr is None else round(items / pr, 4),
         'ratio': ratio(fg, pr), 'unit': unit,
         'fgjax_s': fg, 'peer_s': pr,
         'fgjax_min_s': fgjax_t['min_s'] if fgjax_t else None,
         'peer_min_s': peer_t['min_s'] if peer_t else None,
         'ratio_min': ratio(fgjax_t and fgjax_t['min_s'], peer_t and peer_t['min_s']),
         'ratio_spread': ratio_spread(fgjax_t, peer_t),
         'runs': [fgjax_t and fgjax_t['runs'], peer_t and peer_t['runs']],
         'peer': peer}
  row.update(fields)
  return row


_CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_tile', 'asimd', 'sve')


def host_cpu(cpuinfo: str) -> str:
  """The host CPU from the text of /proc/cpuinfo: model name, x86 family/model/stepping (which
  tell processor generations apart where the name is generic, e.g. 'AMD EPYC'), and the vector
  extensions that matmul libraries dispatch on. Ratios against PyTorch move between hosts (its
  and XLA's matmul kernels are tuned differently), so every row names the host it ran on."""
  first = {}
  for line in cpuinfo.splitlines():
    key, sep, value = line.partition(':')
    key = key.strip().lower()
    if sep and key not in first:
      first[key] = value.strip()
  parts = [first.get('model name') or first.get('cpu model') or platform.machine()]
  ident = [f'{k} {first[k]}' for k in ('cpu family', 'model', 'stepping') if first.get(k)]
  if ident:
    parts.append(', '.join(ident))
  flags = set((first.get('flags') or first.get('features') or '').split())
  vector = [f for f in _CPU_FLAGS if f in flags]
  if vector:
    parts.append(' '.join(vector))
  return '; '.join(parts)


def _read_cpuinfo() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return f.read()
  except OSError:  # not Linux
    return ''


def environment(device=None) -> dict:
  """Fields describing where a row ran (added to every row by run.py)."""
  device = device or jax.devices()[0]
  kind = device.device_kind
  return {'device': f'{device.platform} ({kind}, {os.cpu_count()} host cores, '
                    f'{platform.processor() or platform.machine()})',
          'host_cpu': host_cpu(_read_cpuinfo()),
          'jax': jax.__version__, 'loadavg': [round(x, 2) for x in os.getloadavg()],
          'xla_flags': os.environ.get('XLA_FLAGS', '')}


def dumps(row: dict) -> str:
  """One JSON line; numpy scalars become Python numbers."""
  def default(o):
    if isinstance(o, np.generic):
      return o.item()
    raise TypeError(f'not JSON serialisable: {type(o).__name__}')
  return json.dumps(row, default=default)


def torch_or_none():
  """(torch, torchvision or None, reason) when PyTorch is importable, else (None, None, reason).

  torchvision's CPU wheel is not installable here; its pure-Python models import once the C++ op
  schemas exist (docs/benchmarks.md), which is done here when the plain import fails.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return None, None, f'PyTorch is not installed ({e}); see docs/benchmarks.md'
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
    return torch, torchvision, ''
  except Exception:  # pylint: disable=broad-except
    pass
  global _TV_LIB
  try:
    if _TV_LIB is None:
      _TV_LIB = torch.library.Library('torchvision', 'DEF')
      _TV_LIB.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
      _TV_LIB.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    import sys  # pylint: disable=g-import-not-at-top
    for mod in [m for m in sys.modules if m == 'torchvision' or m.startswith('torchvision.')]:
      del sys.modules[mod]
    import torchvision  # pylint: disable=g-import-not-at-top,redefined-outer-name
    return torch, torchvision, ''
  except Exception as e:  # pylint: disable=broad-except
    return torch, None, f'torchvision is not importable ({type(e).__name__}: {e})'


_TV_LIB = None
