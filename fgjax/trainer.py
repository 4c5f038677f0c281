"""One trainer for every method: TrainState, jitted train/eval steps, the loop, evaluation.

The trainer knows a method only through `fgjax.methods.Method` (model builder, loss, predict).
Steps are `jax.jit`s with NamedShardings over the mesh (state replicated, batch sharded on
``data``) and donate the state. Each step function is compiled ahead of time once per stage
(`.lower().compile()`), so compile time is reported separately from throughput.

Stopping: SIGTERM (preemption) and SIGINT (Ctrl-C) stop the run after the current step with a
checkpoint of it; rerunning the command resumes there and ends with an uninterrupted run's
parameters. After SIGTERM `train_and_evaluate` returns None (exit 0: schedulers that requeue
expect it); after SIGINT it prints 'interrupted at step N; ...' and raises `Interrupted` (exit
130). Further signals while stopping are ignored, so a second Ctrl-C cannot tear the checkpoint.
Several processes agree on the step to stop at (`_Run.stop_agreed`).

One run per workdir: process 0 holds WORKDIR/.lock while it trains (`fgjax.workdir_lock`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fgjax import checkpoint as ckpt_lib
from fgjax import experiment as experiment_lib
from fgjax import optim, profiling, run as run_lib, sharding, workdir_lock, writers
from fgjax.data import pipeline
from fgjax.evaluation import protocols
from fgjax.state import TrainState, init_state, restore, variables


class NonFiniteError(FloatingPointError):
  pass


class Interrupted(KeyboardInterrupt):
  """Training stopped by SIGINT (Ctrl-C) after writing the checkpoint of step `step`; rerunning
  the same command resumes there. A KeyboardInterrupt, so that `except Exception` passes it on."""

  def __init__(self, step: int):
    super().__init__(f'interrupted at step {step}; rerun the same command to resume')
    self.step = step


def make_train_step(exp: experiment_lib.Experiment, tx: optax.GradientTransformation,
                    stage: optim.Stage | None = None):
  """The jitted `(state, batch) -> (state, metrics)` for one stage's optimizer; `stage` adds the
  method's `stage_inputs` for it to `model.apply` (None: none)."""
  method, config, model = exp.method, exp.config, exp.model
  stage_inputs = dict(method.stage_inputs(config, stage)) if stage is not None else {}

  def train_step(state: TrainState, batch: dict):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      extra_inputs = {arg: batch[key] for arg, key in method.train_inputs}
      outputs, updates = model.apply(
          variables(params, state.batch_stats), batch['image'], train=True,
          rngs={'dropout': key}, mutable=['batch_stats'], **extra_inputs, **stage_inputs)
      loss, extra = method.loss_fn(outputs, batch, config)
      return loss, (extra, updates)

    (loss, (extra, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    step_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = (optax.apply_updates(state.params, step_updates),
           updates.get('batch_stats', state.batch_stats), opt_state)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if config.train.skip_nonfinite_steps:  # keep the previous params/stats/optimizer state
      old = (state.params, state.batch_stats, state.opt_state)
      new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    step = state.step + 1
    new_state = state.replace(
        step=step, params=new[0], batch_stats=new[1], opt_state=new[2],
        first_nonfinite=jnp.where((state.first_nonfinite < 0) & ~finite, step,
                                  state.first_nonfinite),
        num_skipped=state.num_skipped + (~finite).astype(jnp.int32))
    return new_state, {'loss': loss, **extra, 'grad_norm': grad_norm}

  rep, data = sharding.replicated(exp.mesh), sharding.batch_sharded(exp.mesh)
  return jax.jit(train_step, in_shardings=(rep, data), out_shardings=(rep, rep),
                 donate_argnums=0)


class _Run:
  """Mutable bookkeeping of one training run (kept out of the pure step functions)."""

  def __init__(self, exp, workdir, log):
    self.exp, self.workdir, self.log = exp, workdir, log
    self.is_main = jax.process_index() == 0
    self.ckpts = ckpt_lib.Checkpoints(workdir, exp.config.train.max_checkpoints_to_keep)
    self.writer = None  # a writers.MetricWriter once the resumed step is known (open_writer)
    self.preempted = False  # set by SIGTERM (see _on_signal)
    self.interrupted = False  # set by SIGINT

  def open_writer(self, resume_step: int) -> None:
    self.writer = writers.MetricWriter(self.workdir, active=self.is_main, resume_step=resume_step)

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    # os.write: print() is not safe in a signal handler (it may interrupt a print to stderr).
    if self.interrupted or self.preempted:
      os.write(2, b'already stopping: writing the checkpoint, please wait\n')
    elif signum == signal.SIGINT:
      os.write(2, b'interrupt: stopping after this step and writing a checkpoint\n')
    if signum == signal.SIGINT:
      self.interrupted = True
    else:
      self.preempted = True

  def stop_agreed(self, step: int) -> str | None:
    """'SIGINT' or 'SIGTERM' when the run stops after `step`, else None. Several processes decide
    together (an all-gather every train.preemption_sync_every_steps), so all of them checkpoint the
    same step and stop the same way: as interrupted when any process got SIGINT."""
    if jax.process_count() == 1:
      interrupted, stop = self.interrupted, self.interrupted or self.preempted
    elif step % self.exp.config.train.preemption_sync_every_steps:
      return None
    else:
      stop = sharding.any_process(self.interrupted or self.preempted)
      interrupted = stop and sharding.any_process(self.interrupted)  # all processes call it
    return ('SIGINT' if interrupted else 'SIGTERM') if stop else None

  def catch_signals(self):
    """Install the SIGTERM and SIGINT handlers (main thread only); returns a function restoring
    the previous ones."""
    if threading.current_thread() is not threading.main_thread():
      return lambda: None
    previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore_previous():
      for s, handler in previous.items():
        signal.signal(s, handler)
    return restore_previous

  def check_finite(self, state) -> None:
    """Stop (unless skipping) once any step so far had a non-finite loss or gradient."""
    bad = int(state.first_nonfinite)
    if bad >= 0 and not self.exp.config.train.skip_nonfinite_steps:
      self.ckpts.wait()
      raise NonFiniteError(
          f'non-finite loss or gradient at step {bad}: training stopped without saving this '
          f'state; the last good checkpoint is step {self.ckpts.latest_step()} in '
          f'{self.ckpts.directory}. Lower the learning rate or set '
          'config.train.skip_nonfinite_steps=True to skip such steps.')

  def save(self, state, stage, position):
    self.check_finite(state)  # never checkpoint a state that saw a non-finite step
    step = int(state.step)
    self.ckpts.save(step, state, {'step': step, 'data_position': position,
                                  'stage': stage.index, 'stage_name': stage.name,
                                  'skipped_nonfinite_steps': int(state.num_skipped)})


def _restore_or_init(run: _Run):
  exp, log = run.exp, run.log
  latest = run.ckpts.latest_step()
  if latest is None:
    state = init_state(exp, exp.optimizer(exp.stages[0]))
    for directory, prefix in exp.method.pretrained(exp.config):
      # Everything outside the stream keeps its init; unused source arrays (an ImageNet head the
      # stream does not use) are reported, not an error.
      state, report = _load_into(exp, state, directory, (f'^(?!{re.escape(prefix)})',), prefix)
      log(f'pretrained {directory} -> {prefix}: loaded {len(report["loaded"])} arrays, unused '
          f'in source: {len(report["unused"])} ({", ".join(report["unused"]) or "-"})')
    cfg = exp.config.init_from
    if cfg.path:
      state, report = _load_into(exp, state, cfg.path, tuple(cfg.skip), cfg.into)
      log(f'init_from {cfg.path}: loaded {len(report["loaded"])} arrays, kept init for '
          f'{len(report["skipped"])} ({", ".join(report["skipped"]) or "-"}), unused in source: '
          f'{len(report["unused"])}')
    return state, 0, 0
  for step in reversed(run.ckpts.all_steps()):
    try:
      state, meta = restore(exp, run.ckpts, step)
    except ckpt_lib.CheckpointMismatchError:
      raise
    except (OSError, KeyError, ValueError) as e:  # torn / unreadable files (not code errors)
      moved = run.ckpts.quarantine(step)
      log(f'WARNING: checkpoint {step} is unreadable ({type(e).__name__}: {str(e)[:200]}); '
          f'moved it to {moved} and trying the previous one')
      continue
    log(f'resumed from {run.ckpts.directory}/{step}: step {step}, stage '
        f'{meta["stage_name"]!r}, data position {meta["data_position"]}')
    return state, meta['stage'], meta['data_position']
  log('WARNING: no readable checkpoint left; starting from scratch')
  return _restore_or_init(run)


def _load_into(exp, state: TrainState, path: str, skip: tuple[str, ...], into: str):
  merged, report = ckpt_lib.merge_variables(
      {'params': state.params, 'batch_stats': state.batch_stats},
      ckpt_lib.read_variables(path), skip, into)
  rep = sharding.replicated(exp.mesh)
  return state.replace(params=jax.device_put(merged['params'], rep),
                       batch_stats=jax.device_put(merged['batch_stats'], rep)), report


def _train_stage(run: _Run, stage: optim.Stage, state: TrainState, position: int, batches,
                 progress: writers.Progress, eval_step, stop_after_steps: int | None):
  """Steps of one stage from state.step to stage.end_step; returns (state, position, stopped)."""
  exp, log, cfg = run.exp, run.log, run.exp.config.train
  lr_fn = optim.schedule(stage.optim, stage.num_steps, exp.steps_per_epoch)
  batch = next(batches)
  t0 = time.perf_counter()
  train_step = make_train_step(exp, exp.optimizer(stage), stage).lower(state, batch).compile()
  log(f'stage {stage.name!r} (steps {stage.start_step}-{stage.end_step}): compiled train step '
      f'in {time.perf_counter() - t0:.1f}s')
  step = int(state.step)
  train_step = profiling.wrap_steps(train_step, step + 1, stage.end_step,
                                    profiling.parse(exp.config.profile_steps), run.workdir, log)
  progress.reset_clock(step)
  window = []  # the step metrics since the last progress line (device arrays: no sync per step)
  while True:
    state, step_metrics = train_step(state, batch)
    step, position = step + 1, position + 1
    window.append(step_metrics)
    if step % cfg.log_every_steps == 0 or step == stage.end_step:
      window = jax.device_get(window)
      scalars = {k: float(v) for k, v in window[-1].items()}
      scalars['lr'] = float(lr_fn(step - stage.start_step - 1))
      scalars['skipped_nonfinite'] = float(state.num_skipped)
      run.check_finite(state)
      line, rate = progress.line(step, {k: scalars[k] for k in ('lr', 'skipped_nonfinite')},
                                 means=_finite_means(window), mean_of=len(window))
      window = []
      log(line)
      run.writer.write(step, {**scalars, 'img_per_s': rate}, 'train')
    if cfg.eval_every_steps and step % cfg.eval_every_steps == 0 and step < exp.total_steps:
      result = protocols.evaluate(exp, state, eval_step=eval_step)
      log(f'eval at step {step}: ' + json.dumps(result))
      run.writer.write(step, {k: v for k, v in result.items() if k != 'split'}, 'eval')
      progress.reset_clock(step)
    if step % cfg.checkpoint_every_steps == 0 or step == stop_after_steps:
      run.save(state, stage, position)
    signalled = run.stop_agreed(step)
    if step == stop_after_steps or signalled:
      if signalled:
        run.save(state, stage, position)
      run.ckpts.wait()
      why = {'SIGTERM': 'SIGTERM (preemption)', 'SIGINT': 'SIGINT',
             None: 'stop_after_steps'}[signalled]
      log(f'stopped after step {step} ({why}): checkpoint written to {run.ckpts.directory}; '
          'rerun the same command to resume')
      if signalled == 'SIGINT':
        raise Interrupted(step)
      return state, position, True
    if step >= stage.end_step:
      return state, position, False
    batch = next(batches)


def _finite_means(window: list[dict]) -> dict:
  """Each metric's mean over the steps of `window` whose value is finite (a skipped non-finite
  step is counted in skipped_nonfinite, not averaged in); NaN when none is."""
  means = {}
  for k in window[0]:
    values = np.asarray([m[k] for m in window], np.float64)
    finite = values[np.isfinite(values)]
    means[k] = float(finite.mean()) if finite.size else float('nan')
  return means


def _train_stages(run: _Run, state: TrainState, state_stage: int, position: int, batches,
                  progress, eval_step, stop_after_steps):
  """Every remaining stage; (state, position) at the end, or None when stopped early."""
  exp = run.exp
  for stage in exp.stages:
    if int(state.step) >= stage.end_step:
      continue
    if stage.index != state_stage:  # a new stage starts with a fresh optimizer state
      state = state.replace(opt_state=jax.jit(exp.optimizer(stage).init, out_shardings=(
          sharding.replicated(exp.mesh)))(state.params))
      state_stage = stage.index
    state, position, stopped = _train_stage(run, stage, state, position, batches, progress,
                                            eval_step, stop_after_steps)
    if stopped:
      return None
  return state, position


def _lock_workdir(workdir: str, log) -> workdir_lock.WorkdirLock | None:
  """Process 0 takes WORKDIR/.lock (the others share its run); every process raises
  `workdir_lock.WorkdirLockedError` when it could not."""
  lock, error = None, None
  if jax.process_index() == 0:
    lock = workdir_lock.WorkdirLock(workdir, log)
    try:
      lock.acquire()
    except workdir_lock.WorkdirLockedError as e:
      error = e
  if jax.process_count() > 1 and sharding.any_process(error is not None) and error is None:
    error = workdir_lock.WorkdirLockedError(
        f'workdir {workdir} is in use by another training run (process 0 says which)')
  if error is not None:
    raise error
  return lock


def train_and_evaluate(config, workdir: str, *, stop_after_steps: int | None = None,
                       mesh=None, log=None) -> dict | None:
  """Train (resuming from WORKDIR if it has checkpoints), evaluate, write metrics.json.

  `stop_after_steps` ends the run early at that global step with a checkpoint, as if interrupted
  (for tests and debugging); the next call with the same workdir resumes there. Returns the final
  evaluation metrics, or None when stopped early (stop_after_steps, SIGTERM). Raises `Interrupted`
  after SIGINT (see the module doc) and `workdir_lock.WorkdirLockedError` (a ConfigError) when
  another run trains in WORKDIR.
  """
  is_main = jax.process_index() == 0
  log = log or ((lambda msg: print(msg, flush=True)) if is_main else (lambda msg: None))
  try:
    exp = experiment_lib.setup(config, mesh=mesh, log=log)
  except FileNotFoundError as e:  # e.g. dataset files missing: the message says what to do
    raise run_lib.ConfigError(str(e)) from e
  workdir = os.path.abspath(os.path.expanduser(workdir))
  workdir_lock.check_writable(workdir)
  lock = _lock_workdir(workdir, log)
  try:
    return _train_and_evaluate_locked(exp, config, workdir, stop_after_steps, log)
  except Interrupted as e:
    if is_main:
      print(e, file=sys.stderr, flush=True)
    raise
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate_locked(exp, config, workdir, stop_after_steps, log) -> dict | None:
  """train_and_evaluate once WORKDIR is locked: config.json, restore, the metric writers."""
  is_main = jax.process_index() == 0
  if is_main:
    run_lib.write_config(config, workdir, log)
  run = _Run(exp, workdir, log)
  log(f'method {exp.method.name}, dataset {exp.meta.name} ({exp.meta.split_sizes}), '
      f'{exp.mesh.devices.size} device(s) on {jax.process_count()} process(es), '
      f'{exp.total_steps} steps ({exp.steps_per_epoch} per epoch)')
  state, state_stage, position = _restore_or_init(run)
  run.open_writer(int(state.step))
  log(f'workdir {workdir}: checkpoints in {run.ckpts.directory}, TensorBoard in '
      f'{run.writer.tensorboard_dir}, metrics in {run.writer.jsonl_path}')
  try:
    return _train_and_evaluate_run(run, state, state_stage, position, stop_after_steps)
  finally:
    run.writer.close()


def _train_and_evaluate_run(run: _Run, state, state_stage, position, stop_after_steps):
  """The stages from the restored state, the final checkpoint, the final evaluation."""
  exp, log, workdir = run.exp, run.log, run.workdir
  cfg = exp.config.train
  batches = pipeline.train_batches(
      exp.source(exp.config.dataset.train_split), exp.config.dataset, keys=exp.batch_keys,
      global_batch=cfg.global_batch_size, mesh=exp.mesh, seed=exp.config.seed,
      start_position=position)
  progress = writers.Progress(exp.total_steps, cfg.global_batch_size, exp.steps_per_epoch,
                              int(state.step))
  eval_step = protocols.make_eval_step(exp)
  restore_signals = run.catch_signals()  # until the final checkpoint is on disk
  try:
    stopped = _train_stages(run, state, state_stage, position, batches, progress, eval_step,
                            stop_after_steps)
    if stopped is None:
      return None
    state, position = stopped
    run.save(state, exp.stages[-1], position)
    run.ckpts.wait()
    interrupted = (sharding.any_process(run.interrupted) if jax.process_count() > 1
                   else run.interrupted)
  finally:
    restore_signals()
  step = int(state.step)
  if interrupted:
    raise Interrupted(step)
  try:
    result = {**protocols.evaluate(exp, state, eval_step=eval_step), 'step': step}
  except KeyboardInterrupt:  # Ctrl-C during the final evaluation: the checkpoint is written
    raise Interrupted(step) from None
  run.writer.write(step, {k: v for k, v in result.items() if k not in ('split', 'step')}, 'eval')
  if run.is_main:
    with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
      json.dump(result, f, indent=2)
  log('final evaluation: ' + json.dumps(result))
  for warning in exp.method.diagnose(result):
    log(f'WARNING: {warning}')
  log(f'wrote {os.path.join(workdir, "metrics.json")}')
  return result
