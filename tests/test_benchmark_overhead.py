"""`overhead/<method>` rows (benchmarks.overhead): each method's train step against a classifier
on the same backbone(s), on small backbones at 64 px so the test is quick."""
import json

import jax
import pytest

from benchmarks import common, overhead, run


@pytest.fixture(scope='module')
def rows():
  return overhead.rows(64, 2, iters=1, model_overrides=overhead.SMALL_BACKBONES, num_classes=10,
                       peak=1e9)


def test_a_row_per_method_and_per_activation_attention_stage(rows):
  names = [r['name'] for r in rows]
  assert names == ['overhead/bcnn', 'overhead/bcnn_spp', 'overhead/bilinear_lstm', 'overhead/a3m',
                   'overhead/activation_attention/stage1', 'overhead/activation_attention/stage2',
                   'overhead/activation_attention/stage3', 'overhead/focus_discriminate']
  for r in rows:
    json.loads(common.dumps(r))
    assert r['backbone'] == 'small_cnn' and r['input_size'] == 64 and r['batch'] == 2
    assert r['method_s'] > 0 and r['baseline_s'] > 0
    assert r['time_ratio'] == pytest.approx(r['method_s'] / r['baseline_s'], rel=1e-2)
    assert len(r['time_ratio_spread']) == 2
    assert r['beyond_inherent'] == pytest.approx(r['time_ratio'] / r['inherent_factor'], rel=1e-2)
    assert r['flops_ratio'] == pytest.approx(
        r['method_flops_per_image'] / r['baseline_flops_per_image'], rel=1e-2)
  by = {r['name']: r for r in rows}
  assert by['overhead/bcnn']['stage'] == 'all'  # the whole-network stage, not the classifier-only
  assert [by[f'overhead/activation_attention/stage{k}']['stage'] for k in (1, 2, 3)] == [
      'scale1', 'scale2', 'scale3']


def test_inherent_factors_follow_the_design_and_xla_counts_at_least_that_work(rows):
  by = {r['name']: r for r in rows}
  fd = by['overhead/focus_discriminate']
  assert fd['inherent_factor'] == pytest.approx(1 + 6 * (32 / 64) ** 2)  # image + 6 regions of 32
  aa = [by[f'overhead/activation_attention/stage{k}'] for k in (1, 2, 3)]
  assert aa[0]['inherent_factor'] == 1.0
  assert 1.0 < aa[1]['inherent_factor'] < aa[2]['inherent_factor'] < 3.0
  # XLA's own count of the method's step covers at least the backbone work the design needs
  for r in (fd, *aa):
    assert r['flops_ratio'] >= 0.9 * r['inherent_factor'], r['name']
  # the one-backbone heads add work over the classifier's (bilinear pooling, attention, LSTM)
  for name in ('bcnn', 'bcnn_spp', 'bilinear_lstm', 'a3m'):
    assert by[f'overhead/{name}']['inherent_factor'] == 1.0
    assert by[f'overhead/{name}']['flops_ratio'] > 1.0, name


def test_gpu_suite_method_rows_carry_every_figure_it_reports():
  """The gpu suite's `methods` row builder, run here on the CPU with quick sizes (small backbones):
  one row per method with train/eval img/s, step time, utilisation, compile time and memory."""
  ctx = run.Context('gpu', run.Sizes.quick(), device=jax.devices('cpu')[0], peak=1e9)
  lines = []
  rows = run.run(ctx, ['methods'], write=lines.append)
  assert [r['name'] for r in rows] == [f'method/{m}/train_step/64/bfloat16'
                                       for m in overhead.METHODS]
  assert [json.loads(line)['name'] for line in lines] == [r['name'] for r in rows]
  for r in rows:
    assert r['compute_dtype'] == 'bfloat16' and r['batch'] == 2
    assert r['train_img_s'] == pytest.approx(2 / r['step_s'], rel=1e-3)
    assert r['eval_img_s'] > 0 and r['compile_s'] > 0 and r['peak_memory_bytes'] > 0
    assert r['utilisation'] == pytest.approx(r['achieved_flop_s'] / 1e9, rel=1e-3)
  assert rows[-2]['stage'] == 'scale3'  # activation_attention: its last, most expensive stage
