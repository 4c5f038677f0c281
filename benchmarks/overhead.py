"""What each method costs over its backbone: `overhead/<method>` rows of `python -m benchmarks.run`.

Each row times the method's train step (`fgjax.trainer.make_train_step`, the trainer's own step)
against a plain classifier (`classifier`: backbone, global average pooling, linear; the model
`fgjax.models.classifier.ImageClassifier`) on the same backbone(s), layer(s) and input, side by
side in one process. The method's model is that of its CUB config (`configs/cub_<method>.py`,
random init) at the row's input size and batch; a two-stream method's baseline is one classifier
per stream, the two steps' seconds and FLOPs added.

- `time_ratio` = method step seconds / baseline seconds (medians); `flops_ratio` the same with XLA's
  FLOPs per image (`benchmarks.common.flops`).
- `inherent_factor`: backbone work the paper's design itself needs, in units of the baseline's
  step. focus_discriminate (Feng et al. 2019) passes the image and `num_regions` zoomed regions of
  `region_size` through the backbone, all trained: 1 + num_regions (region_size / size)^2 (2.5 at
  the recipe's 448 input, 6 regions of 224). activation_attention (Shen & Liu) trains one scale per
  stage; stage k also runs the k - 1 earlier scales forward in inference mode (their crops are
  resized to the input size): 1 + (k - 1) F_eval / F_train, with F the baseline's eval and train
  FLOPs per image. bcnn, bcnn_spp, a3m and bilinear_lstm: 1 (their heads are the method: how much
  they add is `flops_ratio` - 1).
- `beyond_inherent` = time_ratio / inherent_factor: the goal is <= 1.5. `time_ratio_spread`: the
  quartiles of the ratio over the pairs of timed calls (`benchmarks.common.ratio_spread`).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np
import optax

from benchmarks import common, heads
from fgjax import cli, methods, optim

# Small backbones for every method (quick runs and tests: not figures to report).
_TWO = dict(backbone_a='small_cnn', backbone_a_kwargs={}, layer_a='conv4', backbone_b='',
            backbone_b_kwargs={}, layer_b='')
_ONE = dict(backbone='small_cnn', backbone_kwargs={}, layer='conv4')
SMALL_BACKBONES = {'bcnn': _TWO, 'bcnn_spp': _TWO, 'bilinear_lstm': {**_TWO, 'hidden': 16,
                                                                    'rank': 16},
                   'a3m': _ONE, 'activation_attention': _ONE, 'focus_discriminate': _ONE}
METHODS = ('bcnn', 'bcnn_spp', 'bilinear_lstm', 'a3m', 'activation_attention',
           'focus_discriminate')
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def method_config(method: str, size: int | None, batch: int, dtype: str = 'float32',
                  model: dict | None = None) -> ml_collections.ConfigDict:
  """configs/cub_<method>.py at `size` x `size` (None: the config's own input size) and global
  batch `batch`, random init, no pretrained weights (`model` overrides config.model fields, e.g.
  small backbones in a quick run)."""
  c = cli.load_config_file(os.path.join(CONFIG_DIR, f'cub_{method}.py'))
  with c.unlocked():
    c.compute_dtype = dtype
    for key in [k for k in c.model if k.endswith('pretrained')]:
      c.model[key] = ''
    c.model.allow_random_init = True
    for key, value in (model or {}).items():  # replaced, not merged (backbone_kwargs)
      c.model[key] = value
  if size is not None:
    c.dataset.resize_size = c.dataset.image_size = size
  c.train.global_batch_size = batch
  return c


def eval_img_s(config, num_classes: int, *, iters: int, min_time: float) -> float:
  """Inference img/s of the evaluation step (`heads.fgjax_eval_img_s`)."""
  exp, _, _ = prepare(config, num_classes)
  return heads.fgjax_eval_img_s(exp, config.train.global_batch_size, iters=iters,
                                min_time=min_time)


def baseline_configs(config) -> list[ml_collections.ConfigDict]:
  """A classifier config per backbone stream of `config.model` (same backbone, kwargs, layer)."""
  m = config.model
  if 'backbone_a' in m:
    streams = [(m.backbone_a, m.backbone_a_kwargs, m.layer_a)]
    if m.backbone_b:
      streams.append((m.backbone_b, m.backbone_b_kwargs, m.layer_b or m.layer_a))
  else:
    streams = [(m.backbone, m.backbone_kwargs, m.layer)]
  out = []
  for backbone, kwargs, layer in streams:
    c = heads.train_config('classifier', config.dataset.image_size, config.train.global_batch_size,
                           config.compute_dtype, model=dict(
                               backbone=backbone, backbone_kwargs=dict(kwargs), layer=layer,
                               allow_random_init=True))
    out.append(c)
  return out


def prepare(config, num_classes: int, stage: int | None = None):
  """(experiment, optax transformation, stage) of the train step of `config` (stage `stage` of
  config.stages, or plain SGD with momentum 0.9 when the config has no stages)."""
  exp = heads.experiment(config, num_classes)
  keys = methods.resolve_keys(exp.method.batch_keys, config)
  exp = dataclasses.replace(exp, batch_keys=keys,
                            stages=optim.make_stages(config, 1) if len(config.stages) else [])
  stage_ = exp.stages[stage] if stage is not None else None
  tx = exp.optimizer(stage_) if stage_ is not None else optax.sgd(0.01, momentum=0.9)
  return exp, tx, stage_


def time_step(config, num_classes: int, stage: int | None = None, *, iters: int,
              min_time: float, peak: float | None = None, device=None) -> dict:
  """`heads.fgjax_train_step` of `config`'s stage `stage` (timing and `common.cost_fields`:
  compile seconds, peak memory, XLA FLOPs per image, utilisation) in one dict."""
  exp, tx, stage_ = prepare(config, num_classes, stage)
  timing, costs = heads.fgjax_train_step(exp, config.train.global_batch_size, iters=iters,
                                         min_time=min_time, peak=peak, tx=tx, stage=stage_,
                                         device=device)
  return {**timing, **costs}


def eval_flops_per_image(config, num_classes: int) -> float | None:
  """XLA FLOPs per image of the classifier's forward pass in eval mode (activation_attention's
  inherent factor)."""
  exp = heads.experiment(config, num_classes)
  variables = exp.abstract_variables
  images = jax.ShapeDtypeStruct(exp.dummy_images(config.train.global_batch_size).shape, np.uint8)
  fn = jax.jit(lambda v, x: exp.model.apply(v, x, train=False)['logits'])
  total = common.flops(fn.lower(variables, images).compile())
  return None if total is None else total / config.train.global_batch_size


def inherent_factor(method: str, config, stage: int | None, eval_over_train: float) -> float:
  """The backbone work the paper's design needs, in baseline steps (module docstring)."""
  m, size = config.model, config.dataset.image_size
  if method == 'focus_discriminate' and m.use_regions:
    side = m.region_size or round(224 * size / 448)
    return 1.0 + m.num_regions * (side / size) ** 2
  if method == 'activation_attention' and stage is not None:
    return 1.0 + stage * eval_over_train  # stage index k - 1 earlier scales, forward only
  return 1.0


def timed_stages(config) -> list[int | None]:
  """Which of the config's stages a row times: every stage when the method's steps differ by stage
  (`Method.stage_inputs`: activation_attention's stage k trains scale k and runs the earlier ones
  forward), else the last stage (bcnn's is the whole network after the classifier-only one)."""
  n = len(config.stages)
  if not n:
    return [None]
  stages = optim.make_stages(config, 1)
  if any(methods.get(config.method).stage_inputs(config, s) for s in stages):
    return list(range(n))
  return [n - 1]


def rows(size: int, batch: int, dtype: str = 'float32', *, methods_=METHODS, iters: int = 3,
         min_time: float = 0.0, model_overrides: dict | None = None, num_classes: int = 200,
         peak: float | None = None, device=None):
  """One row per method (per stage for activation_attention), each against its baseline."""
  out = []
  for method in methods_:
    config = method_config(method, size, batch, dtype, (model_overrides or {}).get(method))
    bases = baseline_configs(config)
    base = [time_step(b, num_classes, iters=iters, min_time=min_time) for b in bases]
    base_s = sum(b['median_s'] for b in base)
    base_min_s = sum(b['min_s'] for b in base)
    n = min(len(b['all_s']) for b in base)  # a two-stream baseline: the streams' i-th calls added
    base_t = {'all_s': [sum(b['all_s'][i] for b in base) for i in range(n)]}
    base_flops = sum(b['flops_per_image'] or 0.0 for b in base) or None
    eval_f = eval_flops_per_image(bases[0], num_classes)
    eval_over_train = (eval_f / base[0]['flops_per_image']
                       if eval_f and base[0]['flops_per_image'] else 1 / 3)
    stages = timed_stages(config)
    for stage in stages:
      t = time_step(config, num_classes, stage, iters=iters, min_time=min_time, peak=peak,
                    device=device)
      inherent = inherent_factor(method, config, stage, eval_over_train)
      time_ratio = t['median_s'] / base_s
      name = f'overhead/{method}' + (f'/stage{stage + 1}' if len(stages) > 1 else '')
      out.append({
          'name': name, 'method': method, 'backbone': ' + '.join(
              b.model.backbone for b in bases), 'input_size': size, 'batch': batch,
          'compute_dtype': dtype, 'config': f'configs/cub_{method}.py (random init)',
          'method_s': t['median_s'], 'method_min_s': t['min_s'], 'baseline_s': base_s,
          'baseline_min_s': base_min_s, 'time_ratio': round(time_ratio, 3),
          'time_ratio_min': round(t['min_s'] / base_min_s, 3),
          'time_ratio_spread': common.ratio_spread(base_t, t),
          'method_flops_per_image': t['flops_per_image'],
          'baseline_flops_per_image': base_flops,
          'flops_ratio': (round(t['flops_per_image'] / base_flops, 3)
                          if t['flops_per_image'] and base_flops else None),
          'inherent_factor': round(inherent, 3),
          'beyond_inherent': round(time_ratio / inherent, 3),
          'method_img_s': round(batch / t['median_s'], 3),
          'stage': None if stage is None else config.stages[stage].name,
          'method_utilisation': t['utilisation'], 'peak_memory_bytes': t['peak_memory_bytes'],
          'peak_memory_how': t['peak_memory_how'],
          'baseline_img_s': round(batch / base_s, 3),
          'compile_s': [t['compile_s']] + [b['compile_s'] for b in base],
          'runs': [t['runs']] + [b['runs'] for b in base],
          'baseline': 'classifier (backbone, GAP, linear) per stream' +
                      (', steps added' if len(bases) > 1 else ''),
          'goal': 'beyond_inherent <= 1.5'})
  return out


def method_rows(batch: int, *, iters: int, min_time: float, small_backbones: bool = False,
                num_classes: int = 200, peak: float | None = None, device=None) -> list[dict]:
  """`method/<method>` rows (gpu suite): every method at its CUB config's input size in bf16,
  its last (most expensive) stage: train and eval img/s, step time, utilisation against `peak`,
  compile time, peak memory. `small_backbones`: small_cnn at 64 px (a smoke run)."""
  out = []
  for method in METHODS:
    config = method_config(method, 64 if small_backbones else None, batch, 'bfloat16',
                           SMALL_BACKBONES[method] if small_backbones else None)
    size = config.dataset.image_size
    stage = timed_stages(config)[-1]
    t = time_step(config, num_classes, stage, iters=iters, min_time=min_time, peak=peak,
                  device=device)
    row = common.side_by_side(
        f'method/{method}/train_step/{size}/bfloat16', fgjax_t=t, peer_t=None, items=batch,
        method=method, backbone=None, input_size=size, batch=batch, mode='train_step',
        compute_dtype='bfloat16', config=f'configs/cub_{method}.py (random init)',
        stage=None if stage is None else config.stages[stage].name,
        peer_skipped='no peer: the method at its real config',
        **{k: t[k] for k in common.COST_FIELDS})
    row.update(train_img_s=row['fgjax_img_s'], step_s=t['median_s'],
               eval_img_s=eval_img_s(config, num_classes, iters=iters, min_time=min_time))
    out.append(row)
  return out
