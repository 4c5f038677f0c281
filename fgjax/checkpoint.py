"""Orbax checkpoints in the workdir, and `init_from` weight loading.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. Orbax writes each step into a temporary directory
and renames it when complete, so a crash mid-save never leaves a partial `<step>`; a checkpoint
that is unreadable anyway (a torn copy, a disk error) is moved to `torn_<step>` by the trainer, which
then resumes from the previous one. `state` is the TrainState pytree (params,
batch_stats, opt_state, step, rng key data); `meta` is JSON: step, data_position (global batches
consumed by the input pipeline), stage index and name. A rerun with the same workdir restores the
latest step and continues exactly where it stopped.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp



class CheckpointError(RuntimeError):
  pass


class CheckpointMismatchError(CheckpointError):
  """The checkpoint's arrays do not fit the model built from the config (not a torn file)."""


class Checkpoints:
  """Thin wrapper over `ocp.CheckpointManager` with a `state` item and a JSON `meta` item."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore_meta(self, step: int) -> dict:
    return dict(self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta'])

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def check_structure(self, step: int, abstract_state) -> None:
    """Raise CheckpointMismatchError naming every path whose presence or shape differs."""
    metadata = self._manager.item_metadata(step)['state']
    if metadata is None:
      raise KeyError(f'checkpoint {step} has no readable `state` metadata')
    stored = _flatten(metadata.tree)
    wanted = _flatten(abstract_state)
    lines = [f'  in the model, not in the checkpoint: {k}' for k in sorted(set(wanted) - set(stored))]
    lines += [f'  in the checkpoint, not in the model: {k}' for k in sorted(set(stored) - set(wanted))]
    lines += [f'  shape {k}: checkpoint {tuple(stored[k].shape)} vs model {tuple(wanted[k].shape)}'
              for k in sorted(set(stored) & set(wanted))
              if tuple(stored[k].shape) != tuple(wanted[k].shape)]
    if lines:
      raise CheckpointMismatchError(
          f'checkpoint {self.directory}/{step} does not match the model built from this config:\n'
          + '\n'.join(lines))

  def restore_state(self, step: int, abstract_state):
    """Restore the state at `step` into the structure/shardings of `abstract_state`."""
    self.check_structure(step, abstract_state)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    return self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))['state']

  def quarantine(self, step: int) -> str:
    """Move an unreadable step out of the way (to torn_<step>[_n]); returns the new path."""
    src = os.path.join(self.directory, str(step))
    dst, n = os.path.join(self.directory, f'torn_{step}'), 1
    while os.path.exists(dst):
      dst, n = os.path.join(self.directory, f'torn_{step}_{n}'), n + 1
    os.rename(src, dst)
    self._manager.reload()
    return dst

  def save(self, step: int, state, meta: dict) -> None:
    if step in self._manager.all_steps():
      return
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    except OSError as e:
      raise self._write_error(step, e) from e

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except OSError as e:
      raise self._write_error(None, e) from e

  def _write_error(self, step, e) -> CheckpointError:
    try:  # let earlier, healthy saves finish so that "latest" is complete on disk
      self._manager.wait_until_finished()
    except OSError:
      pass
    latest = self._manager.latest_step()
    return CheckpointError(
        f'could not write checkpoint {step if step is not None else "(async)"} to '
        f'{self.directory}: {type(e).__name__}: {e}. The latest complete checkpoint is '
        f'{latest}; fix the problem (e.g. free disk space) and rerun to resume from it.')

  def close(self) -> None:
    self._manager.close()


def _flatten(tree) -> dict[str, object]:
  return {jax.tree_util.keystr(p, simple=True, separator='/'): v
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def read_variables(path: str) -> dict:
  """Variables ({'params': ..., 'batch_stats': ...}) from a workdir, a step dir or a pytree dir.

  Accepts: a training workdir (its latest checkpoint), a `checkpoints/<step>` directory, a weight
  directory written by `python -m fgjax.pretrained convert` (its `weights/`), or a directory holding
  a plain Orbax pytree with a `params` key.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(f'config.init_from.path {path!r} is not a directory')
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    manager = ocp.CheckpointManager(os.path.join(path, 'checkpoints'), item_names=('state',))
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'no checkpoint under {path}/checkpoints (config.init_from.path)')
    path = os.path.join(path, 'checkpoints', str(step))
  for sub in ('state', 'weights'):
    if os.path.isdir(os.path.join(path, sub)):
      path = os.path.join(path, sub)
      break
  tree = ocp.StandardCheckpointer().restore(path)
  if 'params' not in tree:
    raise ValueError(f'{path} holds no `params` (keys: {", ".join(tree)}); not a fgjax checkpoint')
  return {k: tree[k] for k in ('params', 'batch_stats') if k in tree and tree[k]}


def merge_variables(target: dict, source: dict, skip: tuple[str, ...] = (), into: str = ''):
  """Copy `source` leaves into `target` by path; returns (merged, report).

  Target leaves whose path matches a `skip` regex keep their initial values. `into` prefixes every
  source path (e.g. 'backbone_a/' to load a bare backbone into a B-CNN stream). Raises ValueError
  listing target leaves missing from the source and leaves with mismatched shapes; source leaves
  with no target are reported as `unused`.
  """
  skips = [re.compile(s) for s in skip]
  merged, loaded, skipped, missing, mismatched, unused = {}, [], [], [], [], []
  for collection, tree in target.items():
    src = {f'{into}{k}': v for k, v in _flatten(source.get(collection, {})).items()}
    flat_target = _flatten(tree)
    used = set()
    new_leaves = []
    for name, value in flat_target.items():
      full = f'{collection}/{name}'
      if any(s.search(name) for s in skips):
        skipped.append(full)
        new_leaves.append(value)
      elif name not in src:
        missing.append(full)
        new_leaves.append(value)
      elif tuple(np.shape(src[name])) != tuple(value.shape):
        mismatched.append(f'{full}: checkpoint {tuple(np.shape(src[name]))} vs model '
                          f'{tuple(value.shape)}')
        new_leaves.append(value)
      else:
        used.add(name)
        loaded.append(full)
        new_leaves.append(np.asarray(src[name]).astype(value.dtype))
    merged[collection] = jax.tree.unflatten(jax.tree.structure(tree), new_leaves)
    unused += [f'{collection}/{k}' for k in src if k not in used]
  if missing or mismatched:
    lines = [f'  missing in checkpoint: {m}' for m in missing]
    lines += [f'  wrong shape: {m}' for m in mismatched]
    raise ValueError('config.init_from does not match the model (add regexes to '
                     'config.init_from.skip for params that should keep their init):\n' +
                     '\n'.join(lines))
  return merged, {'loaded': loaded, 'skipped': skipped, 'unused': unused}
