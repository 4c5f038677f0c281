"""Optimisers from config with optax: schedules, parameter groups, frozen groups, training stages.

Parameter groups are chosen by regexes on '/'-joined parameter paths ('backbone_a/conv1/kernel'):
`optim.frozen` marks params that are not updated (no optimizer state is kept for them) and
`optim.lr_multipliers` = {regex: multiplier} scales the learning rate of matching params (first match
wins; e.g. {'^backbone': 0.1} for pretrained layers at 0.1x). Weight decay is L2 added to the
gradient (caffe/torch SGD semantics) on params matching `optim.weight_decay_pattern`; for 'adamw'
it is decoupled.

Stages (config.stages) run in order, each with its own optimizer state (a new solver, as in the
seeds' two-step fine-tuning: train the new head first, then fine-tune everything). A stage's
schedule runs over that stage's steps.
"""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import ml_collections
import optax

FROZEN = 'frozen'


@dataclasses.dataclass(frozen=True)
class Stage:
  index: int
  name: str
  start_step: int
  end_step: int
  optim: ml_collections.ConfigDict  # config.optim with the stage's overrides applied

  @property
  def num_steps(self) -> int:
    return self.end_step - self.start_step


def make_stages(config: ml_collections.ConfigDict, steps_per_epoch: int) -> list[Stage]:
  """The list of training stages, with absolute [start, end) step ranges."""
  specs = list(config.stages) or [ml_collections.ConfigDict(
      {'name': 'train', 'num_epochs': config.train.num_epochs})]
  stages, start = [], 0
  for i, spec in enumerate(specs):
    spec = ml_collections.ConfigDict(spec)
    if 'num_epochs' not in spec:
      raise ValueError(f'config.stages[{i}] needs num_epochs')
    optim = ml_collections.ConfigDict(config.optim.to_dict())
    for key, value in spec.items():
      if key in ('name', 'num_epochs'):
        continue
      if key not in optim:
        raise ValueError(f'config.stages[{i}].{key} is not an optim field; valid: '
                         f'{", ".join(sorted(optim.keys()))}')
      optim[key] = value
    steps = max(1, round(spec.num_epochs * steps_per_epoch))
    stages.append(Stage(i, spec.get('name', f'stage{i}'), start, start + steps, optim))
    start += steps
  return stages


def param_labels(params, optim: ml_collections.ConfigDict):
  """Pytree of group labels: 'frozen' or 'lr_x<multiplier>'."""
  frozen = re.compile(optim.frozen) if optim.frozen else None
  mults = [(re.compile(p), float(m)) for p, m in optim.lr_multipliers.items()]

  def label(path, _):
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    if frozen is not None and frozen.search(name):
      return FROZEN
    mult = next((m for p, m in mults if p.search(name)), 1.0)
    return FROZEN if mult == 0 else f'lr_x{mult:g}'
  return jax.tree_util.tree_map_with_path(label, params)


def schedule(optim: ml_collections.ConfigDict, num_steps: int, steps_per_epoch: int):
  """The base learning-rate schedule of one stage (step counted from the stage's start)."""
  lr = float(optim.learning_rate)
  warmup = int(round(optim.warmup_epochs * steps_per_epoch))
  if optim.schedule == 'constant':
    main = optax.constant_schedule(lr)
  elif optim.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(1, num_steps - warmup))
  elif optim.schedule == 'step':
    bounds = {int(round(e * steps_per_epoch)) - warmup: optim.decay_factor
              for e in optim.decay_epochs}
    main = optax.piecewise_constant_schedule(lr, bounds)
  else:
    raise ValueError(f"optim.schedule must be 'constant', 'cosine' or 'step', got "
                     f'{optim.schedule!r}')
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _base(optim, lr_fn, decay_mask):
  if optim.optimizer == 'sgd':
    return optax.sgd(lr_fn, momentum=optim.momentum or None, nesterov=optim.nesterov)
  if optim.optimizer == 'adam':
    return optax.adam(lr_fn)
  if optim.optimizer == 'adamw':
    return optax.adamw(lr_fn, weight_decay=optim.weight_decay, mask=decay_mask)
  raise ValueError(f"optim.optimizer must be 'sgd', 'adam' or 'adamw', got {optim.optimizer!r}")


def make_optimizer(stage: Stage, params, steps_per_epoch: int) -> optax.GradientTransformation:
  optim = stage.optim
  base_lr = schedule(optim, stage.num_steps, steps_per_epoch)
  pattern = re.compile(optim.weight_decay_pattern)

  def decay_mask(tree):
    return jax.tree_util.tree_map_with_path(
        lambda p, _: bool(pattern.search(jax.tree_util.keystr(p, simple=True, separator='/'))),
        tree)

  labels = param_labels(params, optim)
  groups = {}
  for label in set(jax.tree.leaves(labels)):
    if label == FROZEN:
      groups[label] = optax.set_to_zero()
    else:
      mult = float(label[len('lr_x'):])
      groups[label] = _base(optim, lambda s, m=mult: base_lr(s) * m, decay_mask)
  parts = []
  if optim.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  if optim.weight_decay and optim.optimizer != 'adamw':
    parts.append(optax.add_decayed_weights(optim.weight_decay, mask=decay_mask))
  parts.append(optax.multi_transform(groups, labels))
  return optax.chain(*parts)


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  return max(1, math.floor(num_examples / global_batch))
