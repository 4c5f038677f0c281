"""A `jax.profiler` trace of chosen training steps (`config.profile_steps = 'START,N'`).

python -m fgjax.train --config=configs/X.py --workdir=DIR --config.profile_steps=100,5

traces steps START .. START+N-1 (global step numbers, 1-based, as the progress lines count them)
into DIR/profile: `jax.profiler.start_trace` before step START is dispatched, each step inside a
`StepTraceAnnotation` (so the viewers separate the steps), and `stop_trace` once step START+N-1's
outputs are ready. Open it with TensorBoard's profile plugin (`tensorboard --logdir DIR/profile`)
or XProf. Pick START after the first steps (compilation and the input pipeline's warm-up are not
what a run spends its time on). A stage boundary or the end of training inside the window ends
the trace there.

What to look for on a GPU / TPU (the trace viewer and the op profile): the step time split into
device compute and the gaps between steps (a gap = the host or the input pipeline is the
bottleneck: raise `config.dataset.num_threads` / `prefetch`); the top ops by time (bilinear_lstm:
the `while` of the anti-diagonal scan, whose body should be one fused block per diagonal;
focus_discriminate: the crop-and-resize gathers and the region backbone); host-device copies
inside a step (there should be none); and the achieved FLOP rate of the convolutions against the
chip's peak (bf16: `--config.compute_dtype=bfloat16`).
"""

from __future__ import annotations

import dataclasses
import os

import jax


@dataclasses.dataclass(frozen=True)
class Window:
  start: int  # first traced step (1-based global step)
  count: int  # number of traced steps

  @property
  def last(self) -> int:
    return self.start + self.count - 1


def parse(spec: str, field: str = 'config.profile_steps') -> Window | None:
  """'START,N' -> Window; '' -> None. A malformed value is a ValueError naming `field`."""
  if not spec:
    return None
  parts = str(spec).split(',')
  try:
    start, count = (int(p) for p in parts)
  except ValueError:
    start = count = 0
  if len(parts) != 2 or start < 1 or count < 1:
    raise ValueError(f"{field}={spec!r}: expected 'START,N' with integers START >= 1 (the first "
                     "traced step) and N >= 1 (how many steps), e.g. '100,5'; '' traces nothing")
  return Window(start, count)


def trace_dir(workdir: str) -> str:
  return os.path.join(workdir, 'profile')


def wrap_steps(step_fn, first_step: int, last_step: int, window: Window | None, workdir: str,
               log):
  """`step_fn(state, batch)` that traces the steps of `window` (see the module docstring).

  `first_step`: the global step the wrapped function runs first (state.step + 1); `last_step`:
  the last one it will run (the stage's end), where an open trace is stopped at the latest.
  Only process 0 traces (each host's trace would hold only its own devices).
  """
  if window is None or jax.process_index() != 0 or window.last < first_step or \
      window.start > last_step:
    return step_fn
  stop_at = min(window.last, last_step)
  step = first_step - 1
  active = False

  def traced(state, batch):
    nonlocal step, active
    step += 1
    if not active and window.start <= step <= stop_at:
      jax.profiler.start_trace(trace_dir(workdir))
      active = True
      log(f'profile: tracing steps {step}-{stop_at} into {trace_dir(workdir)}')
    if not active:
      return step_fn(state, batch)
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      out = step_fn(state, batch)
    if step == stop_at:
      jax.block_until_ready(out)
      jax.profiler.stop_trace()
      active = False
      log(f'profile: trace written to {trace_dir(workdir)} (tensorboard --logdir '
          f'{trace_dir(workdir)}, profile tab)')
    return out
  return traced
