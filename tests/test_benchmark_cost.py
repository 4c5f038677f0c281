"""benchmarks.cost: compile-only costs of a config (FLOPs, parameters, XLA memory, batch fit).

One row of a shrunk synthetic_bcnn (32x32 input, the small CNN without BatchNorm and max-pools:
XLA:CPU computes bf16 convolutions in float32 and max-pool gradients through int32 index maps,
so only a model whose stored activations dominate shows bf16's saving here), then checks of its
fields against independent computations and a third compile.
"""
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from benchmarks import cost
from fgjax import methods
from fgjax.data import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/synthetic_bcnn.py'
BATCH = 16
FIT_TOLERANCE = 0.02  # a third batch's compiled peak vs the line through two others


@pytest.fixture(scope='module')
def shrunk():
  os.chdir(ROOT)
  config = cost.load(CONFIG)
  config.dataset.image_size, config.dataset.resize_size = 32, 40
  config.model.backbone_a_kwargs = ml_collections.ConfigDict(
      {'use_bn': False, 'downsample': (2, 1, 1, 1)})
  config.train.global_batch_size = config.eval.batch_size = BATCH
  meta, specs, source = cost.static_meta(config)
  return config, meta, specs, source


@pytest.fixture(scope='module')
def row(shrunk):
  config, meta, specs, source = shrunk
  return cost.cost_row(CONFIG, config, meta, specs, source)


def test_fields_and_flops(row):
  assert row['method'] == 'bcnn' and row['dataset'] == 'synthetic_parts'
  assert row['input_hw'] == [32, 32] and row['global_batch'] == BATCH
  assert row['remat'] == 'not offered' and row['train_stage'] == 'train (stage 1 of 1)'
  for dtype in cost.DTYPES:
    r = row[dtype]
    assert r['flops_per_image_train'] > r['flops_per_image_eval'] > 0
    a, b = r['fit']['flops_per_image']  # the train step at two batch sizes
    assert r['fit']['batches'] == [BATCH, 2 * BATCH]
    assert abs(a - b) <= 0.01 * a, (a, b)
    assert r['train_compile_s'] > 0 and r['eval_compile_s'] > 0
    for m in (r['train_memory'], r['eval_memory']):
      assert m['peak_bytes'] == (m['argument_bytes'] + m['output_bytes'] + m['temp_bytes']
                                 - m['alias_bytes'])
    # The donated state is aliased to the new state; evaluation donates nothing.
    assert r['train_memory']['alias_bytes'] >= row['param_bytes']
    assert r['eval_memory']['alias_bytes'] == 0
    assert r['eval_memory']['argument_bytes'] >= row['param_bytes']


def test_params_match_an_independent_init(shrunk, row):
  config, meta, _, _ = shrunk
  model = methods.get(config.method).build_model(config, meta)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8), train=False))
  leaves = jax.tree.leaves(variables['params'])
  assert row['param_count'] == sum(math.prod(x.shape) for x in leaves) > 0
  assert row['param_bytes'] == 4 * row['param_count']  # params stay float32 in every dtype
  # SGD + Nesterov momentum: one trace per parameter (+ a few scalar counts).
  assert row['param_bytes'] <= row['optimizer_state_bytes'] <= row['param_bytes'] + 1024


def test_bfloat16_saves_activation_memory(row):
  assert row['bfloat16']['train_memory']['temp_bytes'] < row['float32']['train_memory'][
      'temp_bytes']
  assert row['bfloat16']['flops_per_image_train'] > 0


def test_largest_batch_per_budget(row):
  for dtype in cost.DTYPES:
    fit, best = row[dtype]['fit'], row[dtype]['max_batch_per_device']
    assert list(best) == [str(g) for g in cost.BUDGETS_GIB]
    values = list(best.values())
    assert all(v > 0 for v in values) and values == sorted(values)
    for gib, n in best.items():  # n fits the budget, n + 1 does not
      fixed, per = fit['fixed_bytes'], fit['per_image_bytes']
      assert fixed + per * n <= int(gib) * cost.GIB < fixed + per * (n + 1) + 1
    assert 'linear fit' in row['fit_how']


def test_fit_predicts_a_third_batch(shrunk, row):
  config, meta, specs, _ = shrunk
  fit = row['float32']['fit']
  third = 3 * BATCH // 2
  compiled, _, _ = cost.compile_train(cost.build(config, meta), specs, third)
  actual = cost.memory_fields(compiled)['peak_bytes']
  predicted = fit['fixed_bytes'] + fit['per_image_bytes'] * third
  assert abs(predicted - actual) <= FIT_TOLERANCE * actual, (predicted, actual)


def test_markdown_rows(row):
  failed = {'config': 'configs/x.py', 'method': 'bcnn', 'dataset': 'cub2011', 'error': 'E: why'}
  table = cost.markdown([row, failed], cost.environment()).splitlines()
  assert table[0].startswith('Generated ') and 'jaxlib' in table[0]
  header, body = table[2], table[4:]
  assert len(body) == 2
  for line in body:
    assert line.count('|') == header.count('|')
  assert body[0].startswith('| synthetic_bcnn.py | bcnn | synthetic_parts | 32x32 | 16 |')
  assert 'failed: E: why' in body[1]


def test_static_metadata_of_the_real_configs():
  os.chdir(ROOT)
  configs = [os.path.basename(p) for p in cost.real_configs()]
  assert 'cub_bilinear_lstm.py' in configs and 'market1501_a3m.py' in configs
  assert not [c for c in configs if c.startswith('synthetic') or c in cost.EXCLUDED]
  for name, n in cost.OFFICIAL_NUM_CLASSES.items():  # the count each builder's text states
    cls = datasets.builder_class(name)
    assert f'{n} ' in (sys.modules[cls.__module__].__doc__ + cls.__doc__), name
  config = cost.load('configs/market1501_a3m.py')
  meta, specs, source = cost.static_meta(config)
  assert (meta.num_classes, source) == (751, 'builder ClassLabel')
  assert specs['attributes'] == ((27,), jnp.dtype(jnp.int32))  # int64 -> int32 in batches
  assert config.model.allow_random_init


def test_cli_errors():
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  for args, names in ((['--config=configs/no_such.py'], 'configs/no_such.py'),
                      ([], '--all')):
    p = subprocess.run([sys.executable, '-m', 'benchmarks.cost', *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2, p.stderr
    errors = [l for l in p.stderr.splitlines() if l.startswith('ERROR:')]
    assert len(errors) == 1 and names in errors[0] and 'cub_bcnn.py' in errors[0], p.stderr
    assert 'Traceback' not in p.stderr and not p.stdout


def test_table_of_an_out_file(row, tmp_path, capsys):
  path = tmp_path / 'rows.jsonl'
  path.write_text(cost.common.dumps({**row, **cost.environment()}) + '\n')
  assert cost.main(['--table', str(path)]) == 0
  out = capsys.readouterr().out
  assert '| synthetic_bcnn.py | bcnn |' in out and out.startswith('Generated ')
  assert cost.main(['--table', str(tmp_path / 'none.jsonl')]) == 2
  assert capsys.readouterr().err.startswith('ERROR: --table=')
