"""The benchmark suite's structure (benchmarks/run.py, common.py, heads.py, torch_peers.py).

Runs without PyTorch (the project venv has none): the JAX-only parts, the measurement arithmetic
on known programs and fake timings, the row schema on tiny sizes, the NumPy peers against fgjax,
and the GPU suite's refusal without a GPU. Rows that need PyTorch are checked to carry the reason
in `peer_skipped` when it is missing, and a peer figure when it is there.
"""
from __future__ import annotations

import dataclasses
import json
import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common, heads, run, torch_peers


def test_cost_analysis_flops_of_a_matmul_are_2mnk():
  m, k, n = 64, 32, 48
  compiled, compile_s = common.compile_jax(jax.jit(lambda a, b: a @ b), jnp.ones((m, k)),
                                           jnp.ones((k, n)))
  assert compile_s > 0
  assert common.flops(compiled) == 2 * m * n * k


def test_cpu_peak_memory_is_argument_plus_output_plus_temp():
  m, k, n = 64, 32, 48
  compiled, _ = common.compile_jax(jax.jit(lambda a, b: a @ b), jnp.ones((m, k)), jnp.ones((k, n)))
  mem, how = common.memory(compiled, jax.devices('cpu')[0])
  # float32 arguments (m*k + k*n) and output (m*n); a single dot needs no temporaries here, and
  # any it did need would only add to this lower bound
  assert mem >= 4 * (m * k + k * n + m * n)
  assert mem < 4 * (m * k + k * n + m * n) + (1 << 20)
  assert 'argument + output + temp' in how


def test_host_cpu_names_the_processor_generation_and_vector_extensions():
  # the first processor's block of an x86 /proc/cpuinfo (abridged), then a second processor's
  cpuinfo = ('processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n'
             'model name\t: AMD EPYC\nstepping\t: 1\n'
             'flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 avx512_vnni\n\n'
             'processor\t: 1\ncpu family\t: 99\nmodel\t\t: 98\n')
  assert common.host_cpu(cpuinfo) == (
      'AMD EPYC; cpu family 25, model 17, stepping 1; avx2 avx512f avx512_bf16 avx512_vnni')
  arm = 'processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd0c\n'
  assert common.host_cpu(arm).endswith('; asimd sve')
  assert common.host_cpu('') == platform.machine()  # nothing to read (not Linux)


def test_side_by_side_ratio_arithmetic_on_fake_timings():
  fg = {'median_s': 0.5, 'min_s': 0.4, 'runs': 3}
  peer = {'median_s': 2.0, 'min_s': 1.0, 'runs': 5}
  row = common.side_by_side('x', fgjax_t=fg, peer_t=peer, items=8, peer='p', batch=8)
  assert row['fgjax_img_s'] == 16.0  # 8 images / 0.5 s
  assert row['peer_img_s'] == 4.0  # 8 / 2.0
  assert row['ratio'] == 4.0  # fgjax 4x faster
  assert row['ratio_min'] == 2.5  # 1.0 / 0.4
  assert row['runs'] == [3, 5]
  slower = common.side_by_side('y', fgjax_t=peer, peer_t=fg, items=8)
  assert slower['ratio'] == 0.25
  missing = common.side_by_side('z', fgjax_t=fg, peer_t=None, items=8)
  assert missing['peer_img_s'] is None and missing['ratio'] is None
  assert row['ratio_spread'] is None and missing['ratio_spread'] is None  # no single timings


def test_ratio_spread_is_the_quartiles_of_every_pair_of_timed_calls():
  fg = {'median_s': 1.0, 'min_s': 1.0, 'runs': 2, 'all_s': [1.0, 2.0]}
  peer = {'median_s': 2.0, 'min_s': 2.0, 'runs': 2, 'all_s': [2.0, 4.0]}
  row = common.side_by_side('x', fgjax_t=fg, peer_t=peer, items=1)
  # pairs peer / fgjax: 2/1, 2/2, 4/1, 4/2 = 2, 1, 4, 2 -> quartiles (numpy linear) 1.75, 2.5
  assert row['ratio_spread'] == [1.75, 2.5]
  t = common.times(lambda: None, iters=3, warmup=0)
  assert len(t['all_s']) == t['runs'] == 3 and min(t['all_s']) == t['min_s']


def test_times_runs_at_least_iters_and_reports_median_and_min():
  calls = []
  t = common.times(lambda: calls.append(1), iters=4, warmup=2)
  assert len(calls) == 6 and t['runs'] == 4
  assert 0 <= t['min_s'] <= t['median_s']


def _tiny_sizes():
  return dataclasses.replace(run.Sizes.quick(), bcnn_grid=4, bcnn_channels=8, nms_size=64,
                             nms_out=16, a3m_channels=16, a3m_embed=8, reid_query=20,
                             reid_gallery=80, reid_ids=10, reid_dim=8)


def _context(torch=None, torchvision=None, reason='PyTorch is not installed (test)'):
  return run.Context('cpu', _tiny_sizes(), torch, torchvision, reason,
                     device=jax.devices('cpu')[0])


def test_jax_rows_have_every_required_field_and_serialise():
  lines = []
  rows = run.run(_context(), ['matmul_peak', 'bcnn_head', 'nms_crop', 'a3m_head', 'reid_metrics'],
                 write=lines.append)
  assert [json.loads(line)['name'] for line in lines] == [r['name'] for r in rows]
  assert rows[0]['name'] == 'matmul_peak' and rows[0]['matmul_peak_flop_s'] > 0
  side = rows[1:]
  assert len(side) == 5  # two bcnn heads, nms_crop, a3m_head, reid_metrics
  for row in side:
    for field in common.ROW_FIELDS + common.SIDE_FIELDS:
      assert field in row, (row['name'], field)
    assert row['fgjax_img_s'] > 0 and row['fgjax_s'] > 0
    assert len(row['loadavg']) == 3
    assert row['host_cpu']
  for row in side[:4]:  # jitted rows: XLA costs and utilisation against the measured peak
    for field in common.COST_FIELDS:
      assert row[field] is not None, (row['name'], field)
    assert row['utilisation'] == pytest.approx(
        row['achieved_flop_s'] / rows[0]['matmul_peak_flop_s'], rel=1e-3)
    assert row['flops_per_image'] * row['batch'] == pytest.approx(
        row['achieved_flop_s'] * row['fgjax_s'], rel=1e-3)
    assert row['peer_img_s'] is None and row['ratio'] is None
    assert 'PyTorch is not installed' in row['peer_skipped']
  # the metrics peer needs no PyTorch (NumPy distances) and computes the same numbers
  reid = side[4]
  assert reid['peer_img_s'] > 0 and reid['ratio'] > 0
  assert reid['fgjax_map'] == pytest.approx(reid['peer_map'], abs=1e-6)
  assert reid['fgjax_rank1'] == pytest.approx(reid['peer_rank1'], abs=1e-6)


def test_trainer_step_row_on_a_small_model():
  config = heads.train_config('bcnn', 32, 2, model=dict(backbone_a='small_cnn', layer_a='conv4'))
  exp = heads.experiment(config, num_classes=5)
  timing, costs = heads.fgjax_train_step(exp, 2, iters=2, peak=1e9)
  assert timing['runs'] == 2 and timing['median_s'] > 0
  assert costs['flops_per_image'] > 0 and costs['peak_memory_bytes'] > 0
  assert 0 < costs['utilisation']
  assert heads.fgjax_eval_img_s(exp, 2, iters=2) > 0  # the eval step's inference rate


def test_peers_that_need_torch_are_skipped_with_a_reason_or_measured():
  torch, torchvision, reason = common.torch_or_none()
  rows = run.run(run.Context('cpu', _tiny_sizes(), torch, torchvision, reason,
                             device=jax.devices('cpu')[0]), ['bcnn_head'], write=lambda s: None)
  for row in rows:
    if torch is None:
      assert row['peer_img_s'] is None and 'PyTorch is not installed' in row['peer_skipped']
    else:
      assert row['peer_img_s'] > 0 and row['ratio'] > 0 and row['peer_skipped'] is None


def test_ntsnet_numpy_hard_nms_picks_what_fgjax_picks_on_the_benchmark_inputs():
  from fgjax.ops.nms import hard_nms
  images, scores, boxes, pad = heads.nms_crop_inputs(3, 448)
  assert images.shape == (3, 448, 448, 3) and boxes.shape == (1614, 4)
  edge = (boxes + pad).astype(np.float64)
  for s in scores:
    cdds = np.concatenate((s.reshape(-1, 1), edge, np.arange(len(s)).reshape(-1, 1)), axis=1)
    ref = torch_peers.hard_nms_ntsnet(cdds, topn=4, iou_thresh=0.25)[:, -1].astype(int)
    ours = np.asarray(hard_nms(jnp.asarray(boxes, jnp.float32), jnp.asarray(s), 4, 0.25))
    np.testing.assert_array_equal(ours, ref)


def test_torchreid_eval_market1501_agrees_with_fgjax_metrics():
  from fgjax import metrics
  q, g, q_ids, g_ids, q_cams, g_cams = heads.reid_inputs(40, 200, 15, 3, 8, seed=1)
  dist = torch_peers.numpy_distance(q, g).astype(np.float64)
  cmc_ref, map_ref = torch_peers.eval_market1501(dist, q_ids, g_ids, q_cams, g_cams, 10)
  cmc, mean_ap = metrics.reid_cmc_map(dist, q_ids, g_ids, q_cams, g_cams, 10)
  np.testing.assert_allclose(cmc, cmc_ref, atol=1e-6)
  assert mean_ap == pytest.approx(map_ref, abs=1e-9)


def test_gpu_suite_exits_2_without_a_gpu(capsys):
  if any(d.platform == 'gpu' for d in jax.devices()):
    pytest.skip('a GPU is present')
  assert run.main(['--suite', 'gpu', '--quick']) == 2
  err = capsys.readouterr()
  assert err.err.startswith('ERROR: --suite gpu needs a GPU') and err.out == ''
  assert len(err.err.strip().splitlines()) == 1


def test_unknown_row_name_exits_2(capsys):
  assert run.main(['--suite', 'cpu', '--only', 'resnet5O']) == 2
  err = capsys.readouterr().err
  assert err.startswith('ERROR: --only: unknown row(s) resnet5O') and 'resnet50' in err


def test_overhead_options_name_the_valid_methods_and_batch(capsys):
  assert run.main(['--only', 'overhead', '--overhead_methods', 'bcnn,a3n']) == 2
  err = capsys.readouterr().err
  assert err.startswith('ERROR: --overhead_methods: unknown method(s) a3n; valid: bcnn, ')
  assert len(err.strip().splitlines()) == 1
  assert run.main(['--only', 'overhead', '--overhead_batch', '-1']) == 2
  assert capsys.readouterr().err.startswith('ERROR: --overhead_batch must be >= 1')


def test_overhead_rows_of_the_chosen_methods_at_the_chosen_batch(tmp_path, capsys):
  out = tmp_path / 'rows.jsonl'
  assert run.main(['--quick', '--only', 'overhead', '--overhead_methods', 'a3m',
                   '--overhead_batch', '4', '--out', str(out)]) == 0
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r['name'] for r in rows] == ['matmul_peak', 'overhead/a3m']
  assert rows[1]['batch'] == 4 and rows[1]['method_img_s'] > 0
