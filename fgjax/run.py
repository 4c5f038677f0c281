"""A run directory and how to get a run back from it.

`python -m fgjax.train --workdir=DIR` writes DIR/config.json (`write_config`) next to
DIR/checkpoints/; every command that reads a run (evaluate, export, predict) rebuilds it from
there: `load_config` (the config it was trained with) and `restore` (the experiment and the state
of one of its checkpoints).

A config.json written by an older fgjax is read as today's fgjax understands it:
1. the method's `migrate_model_config` (fgjax.methods.common.Method) rewrites its `model` section
   into today's fields and values (e.g. a placeholder an older fgjax resolved when building the
   model), each change logged;
2. a field added to fgjax since (absent from the file) gets today's default, logged too;
3. a `model` field the method no longer has (and no migration removed) is an error naming it and
   the method's fields (`load_config`), or a difference '-> <absent>' on resumption.
Resuming compares the new config with the saved one read this way, so a run written by an older
fgjax resumes with the command that started it, without train.allow_config_change.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from fgjax import checkpoint, experiment, methods, sharding, state as state_lib
from fgjax.default_config import ConfigError, derive_resize, get_base_config

# Fields that may change between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = ('train.log_every_steps', 'train.eval_every_steps',
                     'train.checkpoint_every_steps', 'train.max_checkpoints_to_keep',
                     'train.allow_config_change', 'dataset.num_threads', 'dataset.prefetch',
                     'dataset.data_dir', 'dataset.manual_dir', 'eval.batch_size',
                     'profile_steps')

# Config fields that hold paths (besides every config.model.*_pretrained): `resolve_config` expands
# `~` and environment variables in them.
PATH_FIELDS = ('dataset.data_dir', 'dataset.manual_dir', 'dataset.path', 'init_from.path')


def expand_path(path: str | None) -> str | None:
  """`path` with environment variables ($HOME, ${VAR}) and `~` expanded (None and '' unchanged):
  a shell leaves `~` alone after `=` (--config.model.backbone_pretrained=~/weights/resnet50)."""
  return os.path.expanduser(os.path.expandvars(path)) if path else path


def path_fields(config) -> list[str]:
  """The dotted names of the path fields `config` has (PATH_FIELDS, config.model.*_pretrained)."""
  model = [f'model.{k}' for k in config.get('model', {}) if k.endswith('_pretrained')]
  return [f for f in PATH_FIELDS if _has(config, f)] + model


def _has(config, dotted: str) -> bool:
  node = config
  for key in dotted.split('.'):
    if not isinstance(node, (dict, ml_collections.ConfigDict)) or key not in node:
      return False
    node = node[key]
  return True


def resolve_config(config: ml_collections.ConfigDict, overridden=(),
                   log=lambda m: None) -> ml_collections.ConfigDict:
  """The config as fgjax runs it (a locked copy; `config` is not changed):

  1. `~` and environment variables expanded in every path field (`path_fields`);
  2. when `overridden` (the dotted fields set on the command line) has config.dataset.image_size
     (image_width) but not resize_size (resize_width), the resize side derived from the new input
     side (`fgjax.default_config.derive_resize`), so that --config.dataset.image_size=448 alone
     works on a config written for 64x64 inputs. Each derived value is named through `log`.
  """
  config = config.copy_and_resolve_references()
  for dotted in path_fields(config):
    *parents, leaf = dotted.split('.')
    node = config
    for key in parents:
      node = node[key]
    if isinstance(node[leaf], str):
      node[leaf] = expand_path(node[leaf])
  _derive_resize(config, set(overridden), log)
  config.lock()
  return config


def _derive_resize(config, overridden: set, log) -> None:
  if 'dataset' not in config or config.dataset.get('resize', 'fixed') == 'none':
    return
  d = config.dataset
  height = 'dataset.image_size' in overridden
  width = 'dataset.image_width' in overridden or (height and not d.image_width)
  derived = derive_resize(d, height and 'dataset.resize_size' not in overridden,
                          width and 'dataset.resize_width' not in overridden)
  if derived:
    log(f'{", ".join(derived)}: derived from the input size set on the command line (set it '
        'too to choose another)')


def _fill_missing(raw: dict, defaults: dict, prefix: str = '', depth: int = 2) -> list[str]:
  """Adds to `raw` (in place) every field of `defaults` it lacks, looking `depth` levels down
  (top-level fields and the fields of sections such as `model`; a dict inside a section, e.g.
  `optim.lr_multipliers`, is a value: never merged). Returns the added fields' dotted names."""
  added = []
  for key, value in defaults.items():
    if key not in raw:
      raw[key] = value
      added.append(prefix + key)
    elif depth > 1 and isinstance(value, dict) and isinstance(raw[key], dict):
      added += _fill_missing(raw[key], value, f'{prefix}{key}.', depth - 1)
  return added


def _lookup(tree: dict, dotted: str):
  for key in dotted.split('.'):
    tree = tree[key]
  return tree


def _read(path: str, log) -> tuple[dict, list[str]]:
  """(the saved config as a dict, read as today's fgjax reads it: migrated and missing fields
  filled, steps 1 and 2 of the module docstring; the names of the method's `model` fields)."""
  with open(path) as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e}); it should be the config.json that '
                       'fgjax.train wrote') from e
  if (not isinstance(raw, dict) or 'method' not in raw or 'dataset' not in raw
      or not isinstance(raw.get('model', {}), dict)):
    raise ValueError(f'{path} is not an fgjax run config (expected a JSON object with "method" '
                     'and "dataset")')
  method = methods.get(raw['method'])
  for message in method.migrate_model_config(raw.setdefault('model', {})):
    log(f'{path}: {message}')
  defaults = get_base_config().to_dict()
  defaults['model'] = method.default_model_config().to_dict()
  for name in _fill_missing(raw, defaults):
    log(f'{path} has no {name} (added to fgjax later): using the default '
        f'{_lookup(defaults, name)!r}')
  return raw, list(defaults['model'])


def load_config(workdir: str, log=lambda m: None) -> ml_collections.ConfigDict:
  """The config a run was trained with: WORKDIR/config.json (written by fgjax.train), locked.

  Used by the commands that take only --workdir (predict, export) and by evaluate without --config.
  JSON lists stand where the config file had tuples; every consumer accepts both. The file is read
  as the module docstring says: migrated by the method, fields added later filled with today's
  defaults (the base config's and the method's `default_model_config`), each change named through
  `log`; fields a newer fgjax default changed keep the run's value. A `model` field the method
  does not have (any more), and that no migration removed, is a ValueError naming it.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: --workdir must be a directory written by '
                            'python -m fgjax.train --config=... --workdir=DIR')
  raw, valid = _read(path, log)
  unknown = [k for k in raw['model'] if k not in valid]
  if unknown:
    raise ValueError(
        f'{path} sets {", ".join("config.model." + k for k in unknown)}, which method '
        f'{raw["method"]!r} does not have (removed from fgjax since the run was written); its '
        f'fields: {", ".join(valid)}')
  return resolve_config(ml_collections.ConfigDict(raw))


def _flat_json(tree, prefix=''):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat_json(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def write_config(config, workdir: str, log) -> None:
  """Save `config` as WORKDIR/config.json. When the workdir has one already (a resumed run), that
  one is first read as `load_config` reads it (migrated, missing fields defaulted) and compared
  with `config`: a difference outside RESUMABLE_CHANGES is a ConfigError listing the fields,
  unless config.train.allow_config_change (then a warning)."""
  path = os.path.join(workdir, 'config.json')
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    try:
      old, _ = _read(path, log)  # a removed model field shows in the diff as '-> <absent>'
    except ValueError as e:
      raise ConfigError(f'{e}; use another --workdir') from e
    old_flat = _flat_json(json.loads(ml_collections.ConfigDict(old).to_json_best_effort()))
    new_flat = _flat_json(new)
    diff = sorted(k for k in set(old_flat) | set(new_flat)
                  if old_flat.get(k) != new_flat.get(k) and k not in RESUMABLE_CHANGES)
    if diff and not config.train.allow_config_change:
      lines = '\n'.join(f'  {k}: {old_flat.get(k, "<absent>")!r} -> {new_flat.get(k, "<absent>")!r}'
                        for k in diff)
      raise ConfigError(f'{path} was written by a run with a different config:\n{lines}\nUse '
                        'another --workdir, or set config.train.allow_config_change=True to '
                        'resume anyway.')
    if diff:
      log(f'WARNING: resuming {workdir} with a changed config ({", ".join(diff)})')
  with open(path, 'w') as f:
    json.dump(new, f, indent=2, sort_keys=True)


class RunUnreadable(Exception):
  """`restore_one_device`: the workdir holds no run this fgjax can rebuild (the message says
  what is missing or wrong); the commands that read a run report it as a user error."""


def restore_one_device(workdir: str, step: int | None = None, mesh=None,
                       log=lambda m: None):
  """(experiment, state, step) of the run in `workdir` on one device (`mesh` None), as
  predict, search and export_model read a run: its config.json (`load_config`) and checkpoint
  `step` (None: the latest). Any reason the run cannot be rebuilt is a `RunUnreadable`."""
  try:
    config = load_config(workdir, log)
  except (FileNotFoundError, ValueError) as e:
    raise RunUnreadable(str(e)) from None
  mesh = sharding.make_mesh(jax.devices()[:1]) if mesh is None else mesh
  try:
    return restore(config, workdir, mesh, log, step)
  except FileNotFoundError as e:
    raise RunUnreadable(str(e)) from None
  except (ValueError, checkpoint.CheckpointError) as e:
    raise RunUnreadable(f'cannot rebuild the run in {workdir} from its config.json: {e}') from None


def restore(config, workdir: str, mesh=None, log=lambda m: None, step: int | None = None):
  """(experiment, state, step) of checkpoint `step` (None: the latest) in `workdir`; config None =
  the run's own WORKDIR/config.json (`load_config`). FileNotFoundError names what is missing
  (config, checkpoints, the step, with the steps there are); nothing is created in `workdir`."""
  if config is None:
    config = load_config(workdir, log)
  train_first = f'train first with python -m fgjax.train --config=... --workdir={workdir}'
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise FileNotFoundError(f'{workdir} has no checkpoints/ folder; {train_first}')
  ckpts = checkpoint.Checkpoints(workdir)
  steps = ckpts.all_steps()
  if not steps:
    raise FileNotFoundError(f'no checkpoint in {ckpts.directory}; {train_first}')
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise FileNotFoundError(f'--step={step}: no such checkpoint in {ckpts.directory} (steps: '
                            f'{", ".join(map(str, steps))})')
  exp = experiment.setup(config, mesh=mesh, log=log)
  state, _ = state_lib.restore(exp, ckpts, step)
  return exp, state, step
