"""What a run leaves behind and prints: TensorBoard events, metrics.jsonl, progress lines.

Only process 0 writes (`active=False` elsewhere). TensorBoard files come from tensorboardX, which
needs no TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys
import time

from tensorboardX import SummaryWriter


class MetricWriter:
  """Scalars to WORKDIR/tensorboard (event files) and WORKDIR/metrics.jsonl (one JSON per write).

  metrics.jsonl holds one record per (step, split), in the order written. A run resumed from the
  checkpoint of step k passes `resume_step=k` (0 for a run started from scratch): the records after
  step k, written by steps the run is about to repeat (a crash between checkpoints), are dropped,
  as is a torn last line; a record for a (step, split) the file already holds (the final
  evaluation of a run stopped right after its last checkpoint) is not written again; and
  TensorBoard hides the events after step k of the earlier event files (`purge_step`).
  `resume_step=None` only appends.
  """

  def __init__(self, workdir: str, active: bool = True, resume_step: int | None = None):
    self.active = active
    self.tensorboard_dir = os.path.join(workdir, 'tensorboard')
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    self._written = set()  # (step, split) already in metrics.jsonl (when resuming)
    if active:
      if resume_step is not None:
        self._written = _keep_until(self.jsonl_path, resume_step)
      self._tb = SummaryWriter(self.tensorboard_dir,
                               purge_step=None if resume_step is None else resume_step + 1)

  def write(self, step: int, scalars: dict, prefix: str) -> None:
    if not self.active or (int(step), prefix) in self._written:
      return
    for k, v in scalars.items():
      self._tb.add_scalar(f'{prefix}/{k}', float(v), step)
    self._tb.flush()
    with open(self.jsonl_path, 'a') as f:
      f.write(json.dumps({'step': int(step), 'split': prefix,
                          **{k: float(v) for k, v in scalars.items()}}) + '\n')

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _keep_until(path: str, step: int) -> set[tuple[int, str]]:
  """Rewrites the JSON-lines file `path` (if any) without its records after `step` and its
  unreadable lines; returns the (step, split) of the records kept."""
  if not os.path.exists(path):
    return set()
  kept, changed = [], False
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
        key = (int(record['step']), str(record['split']))
      except (ValueError, KeyError, TypeError):
        changed = True
        continue
      if key[0] > step:
        changed = True
        continue
      if not line.endswith('\n'):  # a complete record cut before its newline
        line, changed = line + '\n', True
      kept.append((key, line))
  if changed:
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
      f.writelines(line for _, line in kept)
    os.replace(tmp, path)
  return {key for key, _ in kept}


def _duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


class Progress:
  """The training progress line, e.g.

    step 120/600 (epoch 2.40) mean of 50 steps: accuracy 0.562 grad_norm 1.2 loss 1.234 | lr 0.05
    skipped_nonfinite 0 | 812.3 img/s | ETA 1m20s

  (one line, shown on two). `means` are the train step's metrics averaged over the `mean_of` steps
  since the previous line: one batch's accuracy is too noisy to read. (metrics.jsonl keeps the
  logged step's own values.) `scalars` are values at `step` (learning rate, counters). The rate
  counts images since the previous line or `reset_clock`.
  """

  def __init__(self, total_steps: int, global_batch: int, steps_per_epoch: int, first_step: int):
    self.total, self.batch, self.spe = total_steps, global_batch, steps_per_epoch
    self._t, self._step = time.perf_counter(), first_step

  def reset_clock(self, step: int) -> None:
    """Restart the rate measurement (e.g. after compilation or an evaluation)."""
    self._t, self._step = time.perf_counter(), step

  def line(self, step: int, scalars: dict, means: dict | None = None,
           mean_of: int = 1) -> tuple[str, float]:
    now = time.perf_counter()
    rate = (step - self._step) * self.batch / max(now - self._t, 1e-9)
    self._t, self._step = now, step
    eta = (self.total - step) * self.batch / rate if rate > 0 else float('nan')
    values = ' '.join(f'{k} {v:.4g}' for k, v in scalars.items())
    if means:
      plural = 's' if mean_of != 1 else ''
      values = (f'mean of {mean_of} step{plural}: '
                + ' '.join(f'{k} {v:.4g}' for k, v in means.items()) + f' | {values}')
    return (f'step {step}/{self.total} (epoch {step / self.spe:.2f}) {values} | '
            f'{rate:.1f} img/s | ETA {_duration(eta)}'), rate


class StatusLine:
  """'LABEL: 128/600 (312.4 img/s)' rewritten in place on `stream` (default stderr), a newline once
  done reaches total. The rate counts from the first call, so the first batch (which includes
  compilation) is left out of it. `clear()` wipes the line before other output to the same
  terminal; the next call redraws it. Disabled (`enabled=False`) it writes nothing. Usable as
  `evaluation.collect`'s `progress(done, total)`."""

  def __init__(self, label: str, stream=None, enabled: bool = True):
    self.label, self.stream, self.enabled = label, stream, enabled
    self._t0 = self._first = self._last = None
    self._width = 0

  def __call__(self, done: int, total: int) -> None:
    if not self.enabled or total <= 0 or (done, total) == self._last:
      return
    self._last = (done, total)
    now = time.perf_counter()
    if self._t0 is None:
      self._t0, self._first = now, done
      rate = ''
    else:
      rate = f' ({(done - self._first) / max(now - self._t0, 1e-9):.1f} img/s)'
    line = f'{self.label}: {done}/{total}{rate}'
    self._write('\r' + line.ljust(self._width) + ('\n' if done >= total else ''))
    self._width = 0 if done >= total else len(line)

  def clear(self) -> None:
    if self.enabled and self._width:
      self._write('\r' + ' ' * self._width + '\r')
      self._width, self._last = 0, None

  def _write(self, text: str) -> None:
    stream = self.stream or sys.stderr  # looked up late: tests swap sys.stderr
    stream.write(text)
    stream.flush()
