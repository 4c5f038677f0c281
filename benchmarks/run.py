"""The benchmark suite: fgjax side by side with its PyTorch / NumPy peers, one JSON line per row.

    python -m benchmarks.run --suite cpu [--only NAME,...] [--quick] [--out FILE]
    python -m benchmarks.run --suite gpu [...]        # exits 2 with a message when no GPU is seen
    python -m benchmarks.run --only overhead --overhead_methods bcnn,bcnn_spp --overhead_batch 8

Needs PyTorch next to fgjax for the peers (benchmark-only extra; docs/benchmarks.md):
    python3 -m venv ~/fgjax-bench && ~/fgjax-bench/bin/pip install -e ".[test]"
    ~/fgjax-bench/bin/pip install torch==2.13.0 && ~/fgjax-bench/bin/pip install --no-deps \
        "torchvision==0.28.*"
Without PyTorch the peer columns are null and each such row says why (`peer_skipped`).

Rows (`--only` takes these names; docs/benchmarks.md says what each one measures):
  matmul_peak     the device's jitted matmul peak (first row; every row's `utilisation` uses it)
  resnet50        ResNet-50 train step (fgjax.trainer step vs torchvision + SGD, NCHW and
                  channels_last; ratio against the faster layout)
  bcnn_head       B-CNN head fwd+bwd on a (B, 28, 28, 512) map, symmetric and asymmetric
  bcnn_train      B-CNN [D,D] VGG-16 train step
  nms_crop        NTS-Net region proposal: hard NMS top-4 at IoU 0.25 + crops resized to 224
  a3m_head        A3M head fwd+bwd on a (B, 7, 7, 2048) map
  reid_metrics    distance matrix + CMC/mAP, 3k queries x 20k gallery (torchreid eval_market1501)
  pipeline        input pipeline img/s vs the ResNet-50 train step img/s at the same input size
  spatial_lstm    wavefront vs per-cell scan and the PyTorch per-diagonal peer
                  (`benchmarks.spatial_lstm.rows`)
  bilinear_lstm   (gpu suite) bilinear_lstm train step with configs/cub_bilinear_lstm.py's model
  overhead        overhead/<method>: each method's train step against a classifier on the same
                  backbone(s) and input (`benchmarks.overhead`: time and FLOP ratios, the factor
                  the paper's design needs, what is beyond it; 224 float32 on CPU, 448 bf16 on GPU;
                  `--overhead_methods` / `--overhead_batch` pick the methods and the batch)
  methods         (gpu suite) method/<method>: every method at its CUB config's input size, bf16:
                  train and eval img/s, step time, utilisation (MFU against matmul_peak), compile
                  time, peak memory

`--quick` shrinks every size (a smoke run, ~2 min; not figures to report). Every row carries
`loadavg` (os.getloadavg() when it was written): rows measured while other jobs ran are visible;
and `host_cpu` (common.host_cpu): ratios against PyTorch move between hosts.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import jax

from benchmarks import common, heads, overhead, pipeline, spatial_lstm, torch_peers
from benchmarks.sizes import Sizes
from fgjax.default_config import get_base_config
from fgjax.methods.a3m import CUB_ATTRIBUTE_GROUPS
from fgjax.methods.bilinear_lstm import bilinear_lstm_recipe

CPU_ROWS = ('matmul_peak', 'resnet50', 'bcnn_head', 'bcnn_train', 'nms_crop', 'a3m_head',
            'reid_metrics', 'pipeline', 'spatial_lstm', 'overhead')
GPU_ROWS = ('matmul_peak', 'resnet50', 'bcnn_head', 'bcnn_train', 'nms_crop', 'a3m_head',
            'bilinear_lstm', 'spatial_lstm', 'overhead', 'methods')


@dataclasses.dataclass
class Context:
  suite: str
  sizes: Sizes
  torch: object = None
  torchvision: object = None
  torch_reason: str = ''
  peak: float | None = None
  device: object = None
  results: dict = dataclasses.field(default_factory=dict)  # rows may read earlier rows' figures

  @property
  def gpu(self) -> bool:
    return self.suite == 'gpu'

  def peer_ok(self, needs_torchvision: bool = False) -> tuple[bool, str]:
    if self.gpu:
      return False, 'PyTorch peers run on CPU only (GPU peers not implemented)'
    if self.torch is None:
      return False, self.torch_reason
    if needs_torchvision and self.torchvision is None:
      return False, self.torch_reason
    return True, ''


def _peer_name(ctx) -> str | None:
  return torch_peers.describe(ctx.torch, ctx.torchvision) if ctx.torch is not None else None


# ------------------------------------------------------------------------------------------------
# Row builders: each takes the Context and returns a list of row dicts.
# ------------------------------------------------------------------------------------------------

def row_matmul_peak(ctx: Context) -> list[dict]:
  peak = common.matmul_peak(ctx.device, n=1024 if ctx.sizes.iters == 1 else None)
  ctx.peak = peak['matmul_peak_flop_s']
  return [{'name': 'matmul_peak', 'method': None, 'backbone': None, 'input_size': None,
           'batch': None, **peak}]


def _train_row(ctx, name, method, backbone, size, batch, exp, peer_t, peer_fields=None):
  s = ctx.sizes
  fg_t, costs = heads.fgjax_train_step(exp, batch, iters=s.iters, min_time=s.min_time,
                                       peak=ctx.peak)
  row = common.side_by_side(name, fgjax_t=fg_t, peer_t=peer_t, items=batch, peer=_peer_name(ctx)
                            if peer_t else None, method=method, backbone=backbone,
                            input_size=size, batch=batch, mode='train_step',
                            compute_dtype=exp.config.compute_dtype, **costs)
  row['train_img_s'] = row['fgjax_img_s']
  row['eval_img_s'] = heads.fgjax_eval_img_s(exp, batch, iters=s.iters, min_time=s.min_time)
  row.update(peer_fields or {})
  return row


def row_resnet50(ctx: Context) -> list[dict]:
  s = ctx.sizes
  rows = []
  configs = [(s.resnet_size, 'float32')]
  if ctx.gpu:
    configs.append((s.resnet_bf16_size, 'bfloat16'))
  for size, dtype in configs:
    config = heads.train_config('resnet50_classifier', size, s.resnet_batch, dtype)
    exp = heads.experiment(config, s.classes, heads.classifier_method())
    ok, reason = ctx.peer_ok(needs_torchvision=True)
    peer_t, extra = None, {'peer_skipped': reason or None}
    if ok:
      layouts = {}
      for layout in ('nchw', 'channels_last'):
        layouts[layout] = torch_peers.torch_resnet50_train_step(
            ctx.torch, ctx.torchvision, s.resnet_batch, size, s.classes,
            channels_last=layout == 'channels_last', iters=s.iters, min_time=s.min_time)
      best = min(layouts, key=lambda k: layouts[k]['median_s'])
      peer_t = layouts[best]
      extra.update({f'peer_{k}_img_s': round(s.resnet_batch / v['median_s'], 4)
                    for k, v in layouts.items()})
      extra['peer_layout'] = best
    name = f'resnet50/train_step/{size}/{dtype}'
    row = _train_row(ctx, name, 'classification (ResNet-50 + fc, CE, SGD momentum 0.9)',
                     'resnet50', size, s.resnet_batch, exp, peer_t, extra)
    row['fgjax_step'] = 'fgjax.trainer.make_train_step on an in-memory Experiment'
    ctx.results[f'resnet50/{size}'] = row
    rows.append(row)
  return rows


def row_bcnn_head(ctx: Context) -> list[dict]:
  s = ctx.sizes
  rows = []
  for symmetric in (True, False):
    fg_t, costs = heads.fgjax_bcnn_head(s.bcnn_head_batch, s.bcnn_grid, s.bcnn_channels, s.classes,
                                        symmetric, iters=s.iters, min_time=s.min_time,
                                        peak=ctx.peak)
    ok, reason = ctx.peer_ok()
    peer_t = torch_peers.torch_bcnn_head(ctx.torch, s.bcnn_head_batch, s.bcnn_grid,
                                         s.bcnn_channels, s.classes, symmetric, iters=s.iters,
                                         min_time=s.min_time) if ok else None
    kind = 'symmetric' if symmetric else 'asymmetric'
    rows.append(common.side_by_side(
        f'bcnn_head/{kind}/{s.bcnn_grid}x{s.bcnn_grid}x{s.bcnn_channels}', fgjax_t=fg_t,
        peer_t=peer_t, items=s.bcnn_head_batch, peer=_peer_name(ctx) if ok else None,
        peer_skipped=reason or None, method='bcnn', backbone=None,
        input_size=[s.bcnn_grid, s.bcnn_grid, s.bcnn_channels], batch=s.bcnn_head_batch,
        mode='fwd_bwd (pool, signed sqrt, l2, linear, CE)', **costs))
  return rows


def row_bcnn_train(ctx: Context) -> list[dict]:
  s = ctx.sizes
  config = heads.train_config('bcnn', s.bcnn_train_size, s.bcnn_train_batch, model=dict(
      backbone_a='vgg16', layer_a='relu5_3', allow_random_init=True))
  exp = heads.experiment(config, s.classes)
  ok, reason = ctx.peer_ok(needs_torchvision=True)
  peer_t = torch_peers.torch_bcnn_train_step(
      ctx.torch, ctx.torchvision, s.bcnn_train_batch, s.bcnn_train_size, s.classes,
      iters=s.iters, min_time=s.min_time) if ok else None
  return [_train_row(ctx, f'bcnn/train_step/vgg16_DD/{s.bcnn_train_size}',
                     'bcnn [D,D] (VGG-16 relu5_3)', 'vgg16', s.bcnn_train_size,
                     s.bcnn_train_batch, exp, peer_t, {'peer_skipped': reason or None})]


def row_nms_crop(ctx: Context) -> list[dict]:
  s = ctx.sizes
  fg_t, costs = heads.fgjax_nms_crop(s.nms_batch, s.nms_size, s.nms_topn, s.nms_out,
                                     iters=s.iters, min_time=s.min_time, peak=ctx.peak)
  ok, reason = ctx.peer_ok()
  peer_t = None
  if ok:
    images, scores, boxes, pad = heads.nms_crop_inputs(s.nms_batch, s.nms_size)
    peer_t, _ = torch_peers.torch_nms_crop(ctx.torch, images, scores, boxes, pad, s.nms_topn,
                                           s.nms_out, iters=s.iters, min_time=s.min_time)
  return [common.side_by_side(
      f'nms_crop/{s.nms_size}/top{s.nms_topn}/{s.nms_out}', fgjax_t=fg_t, peer_t=peer_t,
      items=s.nms_batch, peer=(_peer_name(ctx) + ' + NumPy hard_nms (NTS-Net)') if ok else None,
      peer_skipped=reason or None, method='focus_discriminate (region proposal)', backbone=None,
      input_size=s.nms_size, batch=s.nms_batch, mode='forward (NMS IoU 0.25 + crop_and_resize)',
      **costs)]


def row_a3m_head(ctx: Context) -> list[dict]:
  s = ctx.sizes
  groups = s.a3m_groups or CUB_ATTRIBUTE_GROUPS
  fg_t, costs = heads.fgjax_a3m_head(s.a3m_batch, s.a3m_grid, s.a3m_channels, s.classes, groups,
                                     s.a3m_embed, iters=s.iters, min_time=s.min_time,
                                     peak=ctx.peak)
  ok, reason = ctx.peer_ok()
  peer_t = None
  if ok:
    x, labels, attr = heads.a3m_inputs(s.a3m_batch, s.a3m_grid, s.a3m_channels, s.classes, groups)
    peer_t = torch_peers.torch_a3m_head(ctx.torch, x, labels, attr, s.classes, groups, s.a3m_embed,
                                        iters=s.iters, min_time=s.min_time)
  return [common.side_by_side(
      f'a3m_head/{s.a3m_grid}x{s.a3m_grid}x{s.a3m_channels}/K{len(groups)}', fgjax_t=fg_t,
      peer_t=peer_t, items=s.a3m_batch, peer=_peer_name(ctx) if ok else None,
      peer_skipped=reason or None, method='a3m (paper variant head)', backbone=None,
      input_size=[s.a3m_grid, s.a3m_grid, s.a3m_channels], batch=s.a3m_batch,
      mode='fwd_bwd (category + attribute + final CE)', embed_dim=s.a3m_embed, **costs)]


def row_reid_metrics(ctx: Context) -> list[dict]:
  s = ctx.sizes
  inputs = heads.reid_inputs(s.reid_query, s.reid_gallery, s.reid_ids, s.reid_cams, s.reid_dim)
  fg_t, fg = heads.fgjax_reid_metrics(inputs, iters=1 if s.iters > 1 else s.iters)
  torch = None if ctx.gpu else ctx.torch
  peer_t, pr = torch_peers.peer_reid_metrics(torch, inputs, iters=1)
  peer = ('torchreid eval_market1501 (pure Python) + ' +
          ('torch addmm distances, ' + torch_peers.describe(torch) if torch is not None
           else 'float32 NumPy distances (PyTorch missing)'))
  return [common.side_by_side(
      f'reid_metrics/{s.reid_query}x{s.reid_gallery}', fgjax_t=fg_t, peer_t=peer_t,
      items=s.reid_query, unit='queries/s', peer=peer, method='reid evaluation (CMC/mAP)',
      backbone=None, input_size=[s.reid_query, s.reid_gallery, s.reid_dim], batch=s.reid_query,
      mode='distance matrix + CMC/mAP (host)', fgjax_map=fg['map'], peer_map=float(pr['map']),
      fgjax_rank1=float(fg['cmc'][0]), peer_rank1=float(pr['cmc'][0]),
      identities=s.reid_ids, cameras=s.reid_cams)]


def row_pipeline(ctx: Context) -> list[dict]:
  s = ctx.sizes
  key = f'resnet50/{s.resnet_size}'
  if key not in ctx.results:
    ctx.results[key] = row_resnet50(dataclasses.replace(ctx, torch=None, torchvision=None,
                                                        torch_reason='not needed'))[0]
  train = ctx.results[key]['fgjax_img_s']
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # seconds to import: only this row needs it
  tfds.disable_progress_bar()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    pipeline.write_cars_fixture(f'{tmp}/cars', n=max(64, s.pipeline_batch * 4))
    for name, manual in (('cars196', f'{tmp}/cars'), ('synthetic_parts', None)):
      img_s = heads.pipeline_img_s(name, manual, f'{tmp}/data', s.resnet_size, s.pipeline_batch,
                              s.pipeline_batches)
      rows.append({'name': f'pipeline/{name}/{s.resnet_size}', 'method': None,
                   'backbone': 'resnet50', 'input_size': s.resnet_size, 'batch': s.pipeline_batch,
                   'pipeline_img_s': round(img_s, 2), 'train_step_img_s': train,
                   'ratio': round(img_s / train, 3), 'unit': 'img/s',
                   'ratio_is': 'pipeline img/s / fgjax ResNet-50 train step img/s (target >= 4)',
                   'read_threads': 2, 'batches': s.pipeline_batches,
                   'augment': f'resize {s.resnet_size + 6}x{s.resnet_size + 10}, crop '
                              f'{s.resnet_size}, flip, shift +-3/+-5 without padding'})
  return rows


def row_spatial_lstm(ctx: Context) -> list[dict]:
  s = ctx.sizes
  try:
    rows_fn = spatial_lstm.rows
  except AttributeError as e:
    return [{'name': 'spatial_lstm', 'method': 'bilinear_lstm', 'backbone': None,
             'input_size': s.lstm_grid, 'batch': 2,
             'skipped': f'benchmarks.spatial_lstm.rows is not available yet ({e})'}]
  out = []
  for hidden in s.lstm_hidden:
    for attention in (False, True):
      kwargs = {} if not ctx.gpu else {'peer': False}  # its PyTorch peer is CPU code
      for r in rows_fn(grid=s.lstm_grid, batch=2, hidden=hidden, features=64,
                       attention=attention, iters=max(s.iters, 3), min_time=s.min_time / 2,
                       **kwargs):
        r.setdefault('method', 'bilinear_lstm')
        r.setdefault('backbone', None)
        r.setdefault('input_size', s.lstm_grid)
        r.setdefault('batch', 2)
        out.append(r)
  return out


def row_bilinear_lstm(ctx: Context) -> list[dict]:
  s = ctx.sizes
  model = bilinear_lstm_recipe(get_base_config()).model.to_dict()
  model['allow_random_init'] = True
  if s.iters == 1:  # quick: a small LSTM
    model.update(hidden=16, rank=16)
  config = heads.train_config('bilinear_lstm', s.bilinear_lstm_size, s.bilinear_lstm_batch,
                              'bfloat16' if ctx.gpu else 'float32', model=model)
  exp = heads.experiment(config, s.classes)
  return [_train_row(ctx, f'bilinear_lstm/train_step/{s.bilinear_lstm_size}',
                     'bilinear_lstm (configs/cub_bilinear_lstm.py model)', 'vgg19 x vggm',
                     s.bilinear_lstm_size, s.bilinear_lstm_batch, exp, None,
                     {'peer_skipped': 'no PyTorch bilinear_lstm peer'})]


def row_overhead(ctx: Context) -> list[dict]:
  s = ctx.sizes
  size, batch = ((s.overhead_gpu_size, s.overhead_gpu_batch) if ctx.gpu
                 else (s.overhead_size, s.overhead_batch))
  return overhead.rows(size, batch, 'bfloat16' if ctx.gpu else 'float32',
                       methods_=s.overhead_methods or overhead.METHODS, iters=s.iters,
                       min_time=s.min_time,
                       model_overrides=overhead.SMALL_BACKBONES if s.small_backbones else None,
                       num_classes=s.classes, peak=ctx.peak, device=ctx.device)


def row_methods(ctx: Context) -> list[dict]:
  s = ctx.sizes
  return overhead.method_rows(s.methods_batch, iters=s.iters, min_time=s.min_time,
                              small_backbones=s.small_backbones, num_classes=s.classes,
                              peak=ctx.peak, device=ctx.device)


BUILDERS = {name[4:]: fn for name, fn in globals().items() if name.startswith('row_')}


def run(ctx: Context, names, write=print) -> list[dict]:
  """Runs the rows `names` in order, writing each as one JSON line as soon as it is done."""
  env = common.environment(ctx.device)
  out = []
  for name in names:
    t = time.perf_counter()
    for row in BUILDERS[name](ctx):
      row = {**row, **env, 'loadavg': [round(x, 2) for x in os.getloadavg()],
             'row_wall_s': round(time.perf_counter() - t, 2), 'suite': ctx.suite,
             'matmul_peak_flop_s': ctx.peak}
      out.append(row)
      write(common.dumps(row))
  return out


def _comma_list(text: str, valid) -> tuple[list[str], list[str]]:
  """(the names in comma-separated `text`, those of them not in `valid`)."""
  names = [n for n in text.split(',') if n]
  return names, [n for n in names if n not in valid]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--suite', choices=('cpu', 'gpu'), default='cpu')
  parser.add_argument('--only', default='', help='comma-separated row names (see above)')
  parser.add_argument('--quick', action='store_true', help='tiny sizes: a smoke run')
  parser.add_argument('--out', default='', help='also append the JSON lines to this file')
  parser.add_argument('--overhead_methods', default='',
                      help='comma-separated methods of the overhead rows (default: all)')
  parser.add_argument('--overhead_batch', type=int, default=0,
                      help=f"the overhead rows' batch (default: {Sizes.overhead_batch} on "
                           f'cpu, {Sizes.overhead_gpu_batch} on gpu)')
  args = parser.parse_args(argv)
  overhead_methods, bad = _comma_list(args.overhead_methods, overhead.METHODS)
  if bad:
    print(f'ERROR: --overhead_methods: unknown method(s) {", ".join(bad)}; valid: '
          f'{", ".join(overhead.METHODS)}', file=sys.stderr)
    return 2
  if args.overhead_batch < 0:
    print(f'ERROR: --overhead_batch must be >= 1 (0: the suite\'s default), got '
          f'{args.overhead_batch}', file=sys.stderr)
    return 2
  rows = CPU_ROWS if args.suite == 'cpu' else GPU_ROWS
  names, unknown = _comma_list(args.only, rows)
  names = names or list(rows)
  if unknown:
    print(f'ERROR: --only: unknown row(s) {", ".join(unknown)} for --suite {args.suite}; '
          f'valid: {", ".join(rows)}', file=sys.stderr)
    return 2
  if args.suite == 'gpu':
    gpus = [d for d in jax.devices() if d.platform == 'gpu']
    if not gpus:
      print(f'ERROR: --suite gpu needs a GPU, but JAX sees only {jax.devices()} (install the CUDA '
            'build: pip install -U "jax[cuda12]==0.10.2"); nothing was measured', file=sys.stderr)
      return 2
    device = gpus[0]
  else:
    device = jax.devices('cpu')[0]
  torch, torchvision, reason = common.torch_or_none()
  if 'matmul_peak' not in names:
    names.insert(0, 'matmul_peak')
  batch = ({'overhead_batch': args.overhead_batch, 'overhead_gpu_batch': args.overhead_batch}
           if args.overhead_batch else {})
  sizes = dataclasses.replace(Sizes.quick() if args.quick else Sizes(),
                              overhead_methods=tuple(overhead_methods), **batch)
  ctx = Context(args.suite, sizes, torch, torchvision, reason, device=device)
  sink = open(args.out, 'a') if args.out else None  # pylint: disable=consider-using-with

  def write(line):
    print(line, flush=True)
    if sink:
      sink.write(line + '\n')
      sink.flush()

  try:
    run(ctx, names, write)
  finally:
    if sink:
      sink.close()
  return 0


if __name__ == '__main__':
  sys.exit(main())
