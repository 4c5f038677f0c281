"""The fgjax side of the benchmark suite: what each row times, built from the library's own code.

Every `fgjax_*` function returns `(timing, costs)`: `timing` from `common.times` (median / min
seconds of one call), `costs` from `common.cost_fields` (compile seconds, peak memory, XLA FLOPs,
achieved FLOP/s, utilisation against `peak`). Inputs are random but seeded; shapes are arguments so
the tests can run every function on tiny sizes.

- `fgjax_train_step`: the trainer's own step (`fgjax.trainer.make_train_step`: forward, loss,
  backward, grad norm, finiteness flag, optimizer update, donated state) on an `Experiment` built in
  memory (no dataset files: only `config`, `method`, `model` and `mesh` are read by the step).
  `classifier_method()` is the plain ResNet-50 classifier (torchvision layout with its `fc`, cross
  entropy); `bcnn` and `bilinear_lstm` come from the registry with their model config.
- `fgjax_bcnn_head`: `fgjax.ops.bilinear.bilinear_features` (pool, signed sqrt, l2) + a linear
  classifier, forward + backward (gradients w.r.t. the map(s) and the classifier), on NHWC maps.
- `fgjax_a3m_head`: `fgjax.models.a3m.A3M` (paper variant) with an identity backbone on a
  (B, h, w, C) map, forward + backward of the category, attribute and final cross entropies.
- `fgjax_nms_crop`: focus_discriminate's region proposal: `hard_nms` (top-k, IoU 0.25) over
  NTS-Net's integer anchors per image, then `crop_and_resize` of the kept boxes (align_corners)
  from the (B, S, S, 3) images, one jitted call.
- `fgjax_reid_metrics`: `fgjax.metrics.distance_matrix` (float64 NumPy) + `reid_cmc_map` on
  random embeddings (host NumPy; no compile, no FLOP count).
"""
from __future__ import annotations

import contextlib
import sys
import time
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from benchmarks import common
from fgjax import experiment as experiment_lib
from fgjax import losses, methods, metrics, sharding, trainer
from fgjax.data import datasets, pipeline
from fgjax.default_config import get_base_config
from fgjax.evaluation import protocols
from fgjax.models.a3m import A3M, split_attribute_logits
from fgjax.models.backbones.resnet import ResNet50
from fgjax.ops import anchors, bilinear as bops
from fgjax.ops.crop import crop_and_resize
from fgjax.ops.nms import hard_nms


# ------------------------------------------------------------------------------------------------
# Train steps through fgjax.trainer
# ------------------------------------------------------------------------------------------------

def classifier_method() -> methods.Method:
  """A plain image classifier (not in METHODS): ResNet-50 with its `fc`, cross entropy."""
  return methods.Method(name='resnet50_classifier', model=ResNet50,
                        fixed_fields={'include_top': True}, loss_fn=losses.classification,
                        predict_fn=lambda o: {'logits': o['logits']})


def train_config(method: str, size: int, batch: int, dtype: str = 'float32',
                 model: dict | None = None) -> ml_collections.ConfigDict:
  c = get_base_config()
  with c.unlocked():
    c.method = method
    c.compute_dtype = dtype
    if method != 'resnet50_classifier':
      c.model = methods.get(method).default_model_config()
    for k, v in (model or {}).items():
      c.model[k] = v
  c.dataset.resize_size = c.dataset.image_size = size
  c.train.global_batch_size = batch
  return c


def experiment(config, num_classes: int, method: methods.Method | None = None):
  """An `Experiment` without dataset files (meta is just the class count)."""
  method = method or methods.get(config.method)
  meta = types.SimpleNamespace(num_classes=num_classes, name='random')
  model = method.build_model(config, meta)
  mesh = sharding.make_mesh(jax.devices()[:1])
  return experiment_lib.Experiment(config, method, meta, model, mesh, stages=[],
                                   steps_per_epoch=1, builder=None, batch_keys=('image', 'label'))


def random_batch(exp, batch: int, seed: int = 0) -> dict:
  """Seeded random uint8 images, labels and, for a method whose batch has them (`exp.batch_keys`),
  attribute labels: one class index per group of `config.model.attribute_classes` (a3m)."""
  rng = np.random.default_rng(seed)
  data = {'image': rng.integers(0, 256, exp.dummy_images(batch).shape).astype(np.uint8),
          'label': rng.integers(0, exp.meta.num_classes, (batch,)).astype(np.int32)}
  for key in exp.batch_keys:
    if key not in data:
      classes = exp.config.model.attribute_classes
      data[key] = np.stack([rng.integers(0, c, (batch,)) for c in classes], 1).astype(np.int32)
  return data


def fgjax_train_step(exp, batch: int, *, lr: float = 0.01, momentum: float = 0.9, iters: int = 3,
                     min_time: float = 0.0, peak: float | None = None, tx=None, stage=None,
                     device=None):
  """Times `trainer.make_train_step(exp, tx, stage)` (default tx: sgd(lr, momentum), no stage) on
  `random_batch`, the state donated from call to call."""
  tx = tx if tx is not None else optax.sgd(lr, momentum=momentum)
  step = trainer.make_train_step(exp, tx, stage)
  state = trainer.init_state(exp, tx)
  data = jax.device_put(random_batch(exp, batch), sharding.batch_sharded(exp.mesh))
  compiled, compile_s = common.compile_jax(step, state, data)
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], data)
    jax.block_until_ready(metrics['loss'])

  timing = common.times(run, iters=iters, min_time=min_time)
  return timing, common.cost_fields(compiled, timing['median_s'], batch, peak, compile_s, device)


def fgjax_eval_img_s(exp, batch: int, *, iters: int = 3, min_time: float = 0.0) -> float:
  """Inference img/s of `protocols.make_eval_step(exp)` (the step evaluation runs: forward in
  eval mode + predict_fn, logits out) on random uint8 images, after a warm-up call."""
  tx = optax.sgd(0.01)
  state = trainer.init_state(exp, tx)
  rng = np.random.default_rng(1)
  data = {'image': jnp.asarray(rng.integers(0, 256, exp.dummy_images(batch).shape), jnp.uint8),
          'mask': jnp.ones((batch,), bool), 'index': jnp.arange(batch, dtype=jnp.int32)}
  data = jax.device_put(data, sharding.batch_sharded(exp.mesh))
  step = protocols.make_eval_step(exp, outputs=('logits',), batch_keys=())
  timing = common.times(lambda: jax.block_until_ready(step(state, data)['logits']), iters=iters,
                        min_time=min_time)
  return round(batch / timing['median_s'], 4)


# ------------------------------------------------------------------------------------------------
# Heads
# ------------------------------------------------------------------------------------------------

def _timed_jit(fn, args, images, iters, min_time, peak):
  jitted = jax.jit(fn)
  compiled, compile_s = common.compile_jax(jitted, *args)
  timing = common.times(lambda: jax.block_until_ready(compiled(*args)), iters=iters,
                        min_time=min_time)
  return timing, common.cost_fields(compiled, timing['median_s'], images, peak, compile_s)


def fgjax_bcnn_head(batch: int, grid: int, channels: int, num_classes: int, symmetric: bool, *,
                    iters: int = 3, min_time: float = 0.0, peak: float | None = None,
                    dtype=jnp.float32):
  """B-CNN head fwd+bwd: bilinear_features (+ crop/pool/sqrt/l2) -> linear -> cross entropy."""
  rng = np.random.default_rng(0)
  a = jnp.asarray(np.maximum(rng.normal(size=(batch, grid, grid, channels)), 0), dtype)
  b = None if symmetric else jnp.asarray(
      np.maximum(rng.normal(size=(batch, grid, grid, channels)), 0), dtype)
  w = jnp.asarray(rng.normal(size=(channels * channels, num_classes)) * 0.01, jnp.float32)
  bias = jnp.zeros((num_classes,), jnp.float32)
  labels = jnp.asarray(rng.integers(0, num_classes, (batch,)), jnp.int32)

  def loss(params, a, b):
    z = bops.bilinear_features(a, b)
    logits = z @ params[0] + params[1]
    return losses.cross_entropy(logits, labels)

  grad = jax.grad(loss, argnums=(0, 1) if symmetric else (0, 1, 2))
  return _timed_jit(grad, ((w, bias), a, b), batch, iters, min_time, peak)


class _Identity(nn.Module):
  """A 'backbone' returning its input as the map `x` (the head benchmarks start at the map)."""
  @nn.compact
  def __call__(self, x, train: bool = False):
    return {'features': {'x': x}}


def a3m_head_model(num_classes: int, attribute_classes, embed_dim: int):
  return A3M(num_classes=num_classes, backbone=_Identity(), layer='x',
             attribute_classes=tuple(attribute_classes), embed_dim=embed_dim, variant='paper',
             attention_norm='none')  # the literal head, as its PyTorch peer


def a3m_loss(outputs, labels, attr_labels, attribute_classes):
  """CE(final) + CE(category) + sum_k CE(attribute k): paper eq. 2, 4, 10 with unit weights."""
  total = losses.cross_entropy(outputs['logits'], labels)
  total += losses.cross_entropy(outputs['category_logits'], labels)
  for k, logits in enumerate(split_attribute_logits(outputs['attribute_logits'],
                                                    attribute_classes)):
    total += losses.cross_entropy(logits, attr_labels[:, k])
  return total


def a3m_inputs(batch, grid, channels, num_classes, attribute_classes, seed=0):
  rng = np.random.default_rng(seed)
  x = np.maximum(rng.normal(size=(batch, grid, grid, channels)), 0).astype(np.float32)
  labels = rng.integers(0, num_classes, (batch,)).astype(np.int32)
  attr = np.stack([rng.integers(0, c, (batch,)) for c in attribute_classes], 1).astype(np.int32)
  return x, labels, attr


def fgjax_a3m_head(batch: int, grid: int, channels: int, num_classes: int, attribute_classes,
                   embed_dim: int, *, iters: int = 3, min_time: float = 0.0,
                   peak: float | None = None):
  """A3M head (paper variant) fwd+bwd w.r.t. its parameters and the input map."""
  model = a3m_head_model(num_classes, attribute_classes, embed_dim)
  x, labels, attr = (jnp.asarray(v) for v in a3m_inputs(batch, grid, channels, num_classes,
                                                         attribute_classes))
  params = jax.jit(model.init)(jax.random.key(0), x)['params']

  def loss(params, x):
    return a3m_loss(model.apply({'params': params}, x, train=True), labels, attr,
                    attribute_classes)

  return _timed_jit(jax.grad(loss, argnums=(0, 1)), (params, x), batch, iters, min_time, peak)


def nms_crop_inputs(batch: int, size: int, seed: int = 0):
  """(images (B,S,S,3) float32, scores (B, A) float32, integer boxes (A,4) unpadded, pad)."""
  pad = size // 2
  _, edge = anchors.nts_default_anchors(size, geometry_scale=size / 448)
  boxes = anchors.padded_integer_boxes(edge, pad) - pad
  rng = np.random.default_rng(seed)
  images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
  scores = rng.normal(size=(batch, len(boxes))).astype(np.float32)
  return images, scores, boxes, pad


def fgjax_nms_crop(batch: int, size: int, topn: int, out_size: int, *, iou: float = 0.25,
                   iters: int = 3, min_time: float = 0.0, peak: float | None = None):
  """hard_nms per image (vmapped) + crop_and_resize of the kept boxes, one jitted call."""
  images, scores, boxes, _ = nms_crop_inputs(batch, size)
  boxes_f = jnp.asarray(boxes, jnp.float32)

  def propose(images, scores):
    keep = jax.vmap(lambda s: hard_nms(boxes_f, s, topn, iou))(scores)
    return crop_and_resize(images, boxes_f[keep], out_size, align_corners=True), keep

  return _timed_jit(propose, (jnp.asarray(images), jnp.asarray(scores)), batch, iters, min_time,
                    peak)


def reid_inputs(num_query: int, num_gallery: int, num_ids: int, num_cams: int, dim: int,
                seed: int = 0):
  """Random embeddings with identities and cameras; every query id appears in the gallery."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_ids, dim)).astype(np.float32)
  q_ids = rng.integers(0, num_ids, num_query)
  g_ids = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_gallery - num_ids)])
  q_cams = rng.integers(0, num_cams, num_query)
  g_cams = rng.integers(0, num_cams, num_gallery)
  q = centres[q_ids] + rng.normal(size=(num_query, dim)).astype(np.float32) * 2
  g = centres[g_ids] + rng.normal(size=(num_gallery, dim)).astype(np.float32) * 2
  return q, g, q_ids, g_ids, q_cams, g_cams


def fgjax_reid_metrics(inputs, *, max_rank: int = 50, iters: int = 1, min_time: float = 0.0):
  """distance_matrix (squared Euclidean, float64) + reid_cmc_map, as fgjax's evaluation does."""
  q, g, q_ids, g_ids, q_cams, g_cams = inputs
  result = {}

  def run():
    dist = metrics.distance_matrix(q, g, 'euclidean')
    result['cmc'], result['map'] = metrics.reid_cmc_map(dist, q_ids, g_ids, q_cams, g_cams,
                                                        max_rank)

  timing = common.times(run, iters=iters, min_time=min_time, warmup=0)
  return timing, result


def pipeline_img_s(name, manual_dir, data_dir, size, batch, batches) -> float:
  """benchmarks/pipeline.py's measurement at `size` (resize size+6 x size+10, crop, flip, shifts)."""
  c = get_base_config()
  d = c.dataset
  d.name, d.config, d.data_dir, d.manual_dir = name, None, data_dir, manual_dir
  if name == 'synthetic_parts':
    d.config = 'default'
  d.resize, d.resize_size, d.resize_width, d.image_size = 'fixed', size + 6, size + 10, size
  d.random_crop, d.hflip, d.shift_y, d.shift_x, d.shift_padding = False, True, 3, 5, False
  d.num_threads = 2
  with contextlib.redirect_stdout(sys.stderr):  # tfds prints progress; stdout is JSON lines only
    builder, _ = datasets.prepare(d, log=lambda m: None)
  mesh = sharding.make_mesh(jax.devices()[:1])
  it = pipeline.train_batches(datasets.data_source(builder, 'train'), d, keys=('image', 'label'),
                              global_batch=batch, mesh=mesh, seed=0)
  for _ in range(3):
    jax.block_until_ready(next(it))
  t = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(next(it))
  return batch * batches / (time.perf_counter() - t)
