"""What each real config needs on a GPU/TPU, from compiling its steps without running them.

    python -m benchmarks.cost --config=configs/cub_bilinear_lstm.py [--config=...] [--markdown]
                              [--out FILE]
    python -m benchmarks.cost --all [--markdown] [--out FILE]
    python -m benchmarks.cost --table FILE          # the table of an --out file, no compile

`--all` takes every config in configs/ except the CPU-sized ones (synthetic*, demo.py) and
image_folder_bcnn.py (its dataset is the user's folder). For each config, on one device and for
`config.compute_dtype` float32 and bfloat16, the trainer's train step (`trainer.make_train_step`
with the optimizer of the config's last training stage, `Experiment.optimizer`) and the
evaluation step (`protocols.make_eval_step` with the outputs and dataset fields the config's
protocol gathers) are traced and compiled at the config's input size with
`jitted.lower(ShapeDtypeStruct trees).compile()`: no parameter is materialised, no step runs,
no dataset file and no weight file is read (`config.model.allow_random_init=True`).

Every row (one JSON line per config, printed as it goes) holds:
- `flops_per_image` (train / eval): XLA's `cost_analysis()['flops']` of one call of the compiled
  step (`common.flops`: a multiply-add counts 2) / the images in the call (global batch; eval:
  `config.eval.batch_size`). Train = forward + backward + optimizer update.
- `param_count`, `param_bytes`: the model's `params` (float32 in every dtype); `batch_stats_bytes`;
  `optimizer_state_bytes`: the leaves of the last stage's optax state (frozen groups keep none).
- `train_memory` / `eval_memory`: `compiled.memory_analysis()`: argument, output, temp and alias
  (donated state) bytes, and `peak_bytes` = argument + output + temp - alias, the buffer space
  the executable needs at once (the definition of `common.memory` on CPU). `memory_backend` says
  whose buffer assignment it is: run on a CPU it is XLA:CPU's, an estimate of a GPU's (GPU
  fusion, layouts and convolution workspaces differ), not a measurement on one.
- `max_batch_per_device`: per budget in `BUDGETS_GIB` (GiB = 2^30 bytes), the largest per-device
  batch whose predicted train peak fits: `fit_how` says how (a line through the peaks of the train
  step compiled at two per-device batches, `fit` holds them). A budget is the whole card; JAX on
  a GPU preallocates 75% of it unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise.
- `train_compile_s` / `eval_compile_s` (`common.compile_jax`: trace + lower + compile), `remat`
  ('not offered': no fgjax model has a rematerialisation option), date, jax / jaxlib, backend.

Dataset metadata comes from the tfds builder without preparing it (`static_meta`): the fields a
batch holds and their shapes (`info.features`, declared in each builder's `_info`); the class
count from the builder's ClassLabel where it declares `num_classes` (market1501 751, cuhk03 1367,
viper 316: the largest label space, constants of the builder modules) or from a prepared dataset's
info; the other builders name their classes from the dataset files at build time, so their count
is `OFFICIAL_NUM_CLASSES` (the official releases' lists, as each builder's description states).
Split sizes are unknown before a build: the schedule uses one step per epoch, which changes no
shape and no buffer of a compiled step. Attribute group sizes come from the config
(`config.model.attribute_classes`), not the dataset. The train step is the last stage's: every
recipe's last stage trains the most (bcnn / bilinear_lstm: all layers after the new ones alone;
activation_attention: the last scale, with the earlier ones run forward); an earlier stage
computes no gradient and keeps no optimizer state for its frozen parameters.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import sys
import types

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from benchmarks import common, heads
from fgjax import cli, methods, optim, sharding, state as state_lib, trainer
from fgjax.data import augment, datasets
from fgjax.default_config import ConfigError, error_text
from fgjax.evaluation import protocols

BUDGETS_GIB = (16, 24, 40, 80, 141)
GIB = 2 ** 30
DTYPES = ('float32', 'bfloat16')
EXCLUDED = ('demo.py', 'image_folder_bcnn.py')  # + synthetic*: `real_configs`
# Classes of the datasets whose builder reads the class list from the files at build time
# (classes.txt; devkit/cars_meta.mat; variants.txt; the model ids of train.txt + test.txt), as
# each builder's description and docstring state them.
OFFICIAL_NUM_CLASSES = {'cub2011': 200, 'cars196': 196, 'fgvc_aircraft': 100, 'compcars': 431}
STEPS_PER_EPOCH = 1  # split sizes are unknown before a build; no compiled shape depends on it
FIT_HOW = ('linear fit peak(b) = fixed + per_image * b through the train step peaks '
           '(memory_analysis, compiled not run) at per-device batches {b1} and {b2}; '
           'max batch = floor((budget - fixed) / per_image), budget = N GiB (2^30 bytes)')


def real_configs(directory: str | None = None) -> list[str]:
  """The config files `--all` takes (module docstring), sorted; default: ./configs, else the
  source tree's (`cli.config_dir`)."""
  directory = directory or cli.config_dir()
  return [os.path.join(directory, name) for name, _ in cli.list_configs(directory)
          if not name.startswith('synthetic') and name not in EXCLUDED] if directory else []


def load(value: str):
  """`--config=FILE[:ARG]` as the trainer loads it, with `allow_random_init` set (no weights)."""
  config = cli.load_config_file(value)
  if 'allow_random_init' in config.model:
    config.model.allow_random_init = True
  return config


def _feature_spec(feature) -> tuple[tuple[int, ...], np.dtype]:
  """(per-example shape, dtype in a batch) of a tfds feature: int64 becomes int32 in the input
  pipeline (`fgjax.data.pipeline`)."""
  dtype = np.dtype(feature.np_dtype)
  return tuple(feature.shape), np.dtype(np.int32) if dtype == np.int64 else dtype


def static_meta(config) -> tuple[datasets.DatasetMeta, dict, str]:
  """(DatasetMeta, {field: (shape, dtype)}, where num_classes came from), read from the builder
  class without preparing the dataset (module docstring)."""
  d = config.dataset
  try:
    builder = datasets.make_builder(d)
    info = builder.info
  except Exception as e:  # pylint: disable=broad-except  # e.g. image_folder without a folder
    raise ConfigError(f'dataset {d.name!r}: no metadata without its files ({error_text(e)})') from e
  label = info.features['label']
  num_classes, source = getattr(label, 'num_classes', None), 'builder ClassLabel'
  if builder.is_prepared():
    source = 'prepared dataset_info'
  elif not num_classes:
    num_classes, source = OFFICIAL_NUM_CLASSES.get(d.name), 'OFFICIAL_NUM_CLASSES (official list)'
  if not num_classes:
    raise ConfigError(f'dataset {d.name!r} declares no class count before it is built; known: '
                      f'{", ".join(sorted(OFFICIAL_NUM_CLASSES))} and the builders with one')
  specs = {k: _feature_spec(v) for k, v in info.features.items() if k != 'image'}
  meta = datasets.DatasetMeta(name=d.name, num_classes=int(num_classes),
                              split_sizes={k: int(v.num_examples) for k, v in info.splits.items()},
                              features=tuple(info.features), data_dir=str(builder.data_dir))
  return meta, specs, source


def check(config, meta) -> None:
  """The checks the trainer runs before compiling that need neither files nor weights."""
  method = methods.get(config.method)
  methods.compute_dtype(config)
  method.check_config(config)
  keys = methods.resolve_keys(method.batch_keys, config)
  missing = [k for k in keys if k not in meta.features]
  if missing:
    raise ConfigError(f'method {method.name!r} needs dataset fields {missing}, which dataset '
                      f'{meta.name!r} does not have')


def build(config, meta):
  """The `Experiment` the trainer would build (`heads.experiment`, one device), with the
  dataset's metadata, the config's stages and the method's batch fields."""
  method = methods.get(config.method)
  exp = heads.experiment(config, meta.num_classes, method)
  return dataclasses.replace(exp, meta=meta, stages=optim.make_stages(config, STEPS_PER_EPOCH),
                             steps_per_epoch=STEPS_PER_EPOCH,
                             batch_keys=methods.resolve_keys(method.batch_keys, config))


def abstract_batch(exp, specs: dict, keys, batch: int, evaluation: bool = False) -> dict:
  """ShapeDtypeStructs of a global batch: uint8 images at the model input size, `keys` fields
  (+ `mask`, `index` for evaluation), sharded on the mesh's data axis."""
  sh = sharding.batch_sharded(exp.mesh)
  out = {'image': jax.ShapeDtypeStruct((batch, *augment.input_hw(exp.config.dataset), 3),
                                       jnp.uint8, sharding=sh)}
  for k in keys:
    if k != 'image':
      shape, dtype = specs[k]
      out[k] = jax.ShapeDtypeStruct((batch, *shape), dtype, sharding=sh)
  if evaluation:
    out['mask'] = jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=sh)
    out['index'] = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=sh)
  return out


def compile_train(exp, specs: dict, batch: int, stage=None):
  """(compiled train step of `stage` (default: the last), compile seconds, abstract state)."""
  stage = exp.stages[-1] if stage is None else stage
  tx = exp.optimizer(stage)
  state = state_lib.abstract_state(exp, tx)
  step = trainer.make_train_step(exp, tx, stage)
  compiled, seconds = common.compile_jax(step, state,
                                         abstract_batch(exp, specs, exp.batch_keys, batch))
  return compiled, seconds, state


def compile_eval(exp, specs: dict, batch: int, state):
  """(compiled evaluation step, compile seconds): `make_eval_step(exp)` on the state's params and
  batch_stats only (the optimizer state never enters it)."""
  eval_step = protocols.make_eval_step(exp)
  keys = protocols.batch_keys_needed(exp.config, exp.method, exp.meta.features)
  jitted = jax.jit(lambda params, stats, batch: eval_step(
      types.SimpleNamespace(params=params, batch_stats=stats), batch))
  return common.compile_jax(jitted, state.params, state.batch_stats,
                            abstract_batch(exp, specs, keys, batch, evaluation=True))


def nbytes(tree) -> int:
  return int(sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def memory_fields(compiled) -> dict:
  """argument / output / temp / alias bytes of `compiled.memory_analysis()` and
  peak_bytes = argument + output + temp - alias."""
  m = compiled.memory_analysis()
  f = {'argument_bytes': int(m.argument_size_in_bytes), 'output_bytes': int(m.output_size_in_bytes),
       'temp_bytes': int(m.temp_size_in_bytes), 'alias_bytes': int(m.alias_size_in_bytes)}
  f['peak_bytes'] = (f['argument_bytes'] + f['output_bytes'] + f['temp_bytes']
                     - f['alias_bytes'])
  return f


def linear_fit(batches, peaks) -> tuple[float, float]:
  """(fixed bytes, bytes per image) of the line through two (batch, peak bytes) points."""
  (b1, b2), (m1, m2) = batches, peaks
  per_image = (m2 - m1) / (b2 - b1)
  return m1 - per_image * b1, per_image


def max_batch(fixed: float, per_image: float, budget_bytes: float) -> int | None:
  """Largest batch b with fixed + per_image * b <= budget (0: not even one image; None: the
  fit has no positive slope)."""
  if per_image <= 0:
    return None
  return max(0, math.floor((budget_bytes - fixed) / per_image))


def fit_batches(global_batch: int) -> tuple[int, int]:
  """The two per-device batches of the fit: the config's global batch and twice it."""
  return global_batch, 2 * global_batch


def dtype_costs(config, meta, specs, log=lambda m: None) -> dict:
  """The costs of `config` at its compute dtype (module docstring); also 'abstract_state'."""
  exp = build(config, meta)
  b1, b2 = fit_batches(config.train.global_batch_size)
  train, train_s, state = compile_train(exp, specs, b1)
  log(f'train step b={b1} compiled in {train_s:.1f} s')
  second, second_s, _ = compile_train(exp, specs, b2)
  log(f'train step b={b2} compiled in {second_s:.1f} s')
  evaluation, eval_s = compile_eval(exp, specs, config.eval.batch_size, state)
  log(f'eval step b={config.eval.batch_size} compiled in {eval_s:.1f} s')
  peaks = (memory_fields(train)['peak_bytes'], memory_fields(second)['peak_bytes'])
  fixed, per_image = linear_fit((b1, b2), peaks)
  flops = (common.flops(train), common.flops(second), common.flops(evaluation))
  return {
      'flops_per_image_train': flops[0] and flops[0] / b1,
      'flops_per_image_eval': flops[2] and flops[2] / config.eval.batch_size,
      'train_memory': memory_fields(train), 'eval_memory': memory_fields(evaluation),
      'train_compile_s': round(train_s, 2), 'eval_compile_s': round(eval_s, 2),
      'fit': {'batches': [b1, b2], 'peak_bytes': list(peaks),
              'flops_per_image': [flops[0] and flops[0] / b1, flops[1] and flops[1] / b2],
              'compile_s': round(second_s, 2), 'fixed_bytes': round(fixed),
              'per_image_bytes': round(per_image)},
      'max_batch_per_device': {str(g): max_batch(fixed, per_image, g * GIB)
                               for g in BUDGETS_GIB},
      'abstract_state': state, 'train_stage': exp.stages[-1]}


def environment() -> dict:
  """Date, versions and whose memory analysis the numbers are."""
  device = jax.devices()[0]
  backend = f'XLA:{device.platform.upper()} buffer assignment (compiled.memory_analysis)'
  if device.platform == 'cpu':
    backend += ", an estimate of a GPU's, not a measurement on one"
  return {**common.environment(device), 'date': datetime.date.today().isoformat(),
          'jaxlib': jaxlib.__version__, 'backend': jax.default_backend(),
          'memory_backend': backend}


def cost_row(value: str, config, meta, specs, source: str, log=lambda m: None) -> dict:
  """One row (module docstring) for the loaded `config` of `--config=value`."""
  row = {'config': value, 'method': config.method, 'dataset': meta.name,
         'input_hw': list(augment.input_hw(config.dataset)),
         'global_batch': config.train.global_batch_size, 'eval_batch': config.eval.batch_size,
         'num_classes': meta.num_classes, 'num_classes_from': source, 'remat': 'not offered',
         'budgets_gib': list(BUDGETS_GIB)}
  for dtype in DTYPES:
    c = config.copy_and_resolve_references()
    c.compute_dtype = dtype
    costs = dtype_costs(c, meta, specs, lambda m, d=dtype: log(f'{d}: {m}'))
    state, stage = costs.pop('abstract_state'), costs.pop('train_stage')
    row[dtype] = costs
  row['train_stage'] = f'{stage.name} (stage {stage.index + 1} of {len(config.stages) or 1})'
  row['param_count'] = int(sum(math.prod(x.shape) for x in jax.tree.leaves(state.params)))
  row['param_bytes'] = nbytes(state.params)
  row['batch_stats_bytes'] = nbytes(state.batch_stats)
  row['optimizer_state_bytes'] = nbytes(state.opt_state)
  b1, b2 = fit_batches(config.train.global_batch_size)
  row['fit_how'] = FIT_HOW.format(b1=b1, b2=b2)
  row['compile_s'] = round(sum(row[d]['train_compile_s'] + row[d]['fit']['compile_s']
                               + row[d]['eval_compile_s'] for d in DTYPES), 1)
  return row


def _num(x, unit: float) -> str:
  return '-' if x is None else f'{x / unit:.1f}'


def markdown(rows: list[dict], env: dict) -> str:
  """The table of docs/benchmarks.md: one row per config (GiB with one decimal)."""
  budgets = '/'.join(map(str, BUDGETS_GIB))
  lines = [f'Generated {env["date"]} with jax {env["jax"]} / jaxlib {env["jaxlib"]}; memory: '
           f'{env["memory_backend"]}. Train = the last stage at the global batch; max batch per '
           f'device for {budgets} GiB from a linear fit of two compiles (`fit_how`).', '',
           '| config | method | dataset | input | batch | params (M) | GFLOP/img train | '
           'GFLOP/img eval | train peak GiB f32 | train peak GiB bf16 | eval peak GiB f32 | '
           f'max batch f32 ({budgets} GiB) | max batch bf16 | compile s |',
           '|' + '---|' * 14]
  for r in rows:
    name = os.path.basename(r['config'])
    if 'error' in r:
      lines.append(f'| {name} | {r.get("method", "-")} | {r.get("dataset", "-")} | '
                   + '| ' * 10 + f'failed: {r["error"][:120]} |')
      continue
    f32, bf16 = r['float32'], r['bfloat16']
    lines.append(' | '.join([
        f'| {name}', r['method'], r['dataset'], 'x'.join(map(str, r['input_hw'])),
        str(r['global_batch']), f'{r["param_count"] / 1e6:.1f}',
        _num(f32['flops_per_image_train'], 1e9), _num(f32['flops_per_image_eval'], 1e9),
        _num(f32['train_memory']['peak_bytes'], GIB), _num(bf16['train_memory']['peak_bytes'], GIB),
        _num(f32['eval_memory']['peak_bytes'], GIB),
        '/'.join(str(v) for v in f32['max_batch_per_device'].values()),
        '/'.join(str(v) for v in bf16['max_batch_per_device'].values()),
        f'{r["compile_s"]:.0f} |']))
  return '\n'.join(lines)


def _error(message: str) -> int:
  print(f'ERROR: {message}', file=sys.stderr, flush=True)
  return 2


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='real configs (--all): ' + ', '.join(map(os.path.basename, real_configs())))
  parser.add_argument('--config', action='append', default=[],
                      help='a config file (FILE[:ARG]); repeat for several')
  parser.add_argument('--all', action='store_true', help='every real config in configs/')
  parser.add_argument('--markdown', action='store_true', help='print the table at the end')
  parser.add_argument('--out', help='also write the JSON lines to this file')
  parser.add_argument('--table', help='print the table of the rows in this --out file; no compile')
  args = parser.parse_args(argv)
  if args.table:
    if not os.path.isfile(args.table):
      return _error(f'--table={args.table}: no such file (write one with --out)')
    with open(args.table) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    print(markdown(rows, rows[0]))
    return 0
  if bool(args.config) == bool(args.all):
    return _error('give --config=FILE (repeatable) or --all, not both; real configs: '
                  + ', '.join(real_configs()))
  values = real_configs() if args.all else args.config
  if args.all:
    print(f'--all: {len(values)} configs: {", ".join(values)}', file=sys.stderr, flush=True)
  loaded = []
  for value in values:  # every config, its metadata and checks, before any compilation
    try:
      config = load(value)
      meta, specs, source = static_meta(config)
      check(config, meta)
    except (ConfigError, ValueError, KeyError) as e:
      text = error_text(e)
      if value.split(':', 1)[0] not in text:
        text = f'--config={value}: {text}'
      if not os.path.isfile(value.split(':', 1)[0]):
        text += '; real configs: ' + ', '.join(real_configs())
      return _error(text)
    loaded.append((value, config, meta, specs, source))
  env = environment()
  out = open(args.out, 'w') if args.out else None  # pylint: disable=consider-using-with
  rows = []
  try:
    for i, (value, config, meta, specs, source) in enumerate(loaded, 1):
      log = lambda m, i=i, v=value: print(f'[{i}/{len(loaded)}] {v}: {m}', file=sys.stderr,
                                          flush=True)
      try:
        row = cost_row(value, config, meta, specs, source, log)
      except Exception as e:  # pylint: disable=broad-except  # recorded; the others go on
        row = {'config': value, 'method': config.method, 'dataset': meta.name,
               'error': f'{type(e).__name__}: {error_text(e)}'}
      row.update(env, loadavg=[round(x, 2) for x in os.getloadavg()])  # when the row ended
      rows.append(row)
      line = common.dumps(row)
      print(line, flush=True)
      if out:
        out.write(line + '\n')
        out.flush()
  finally:
    if out:
      out.close()
  if args.markdown:
    print(markdown(rows, env))
  failed = [r['config'] for r in rows if 'error' in r]
  if failed:
    print(f'ERROR: {len(failed)} config(s) failed to compile: {", ".join(failed)}',
          file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
