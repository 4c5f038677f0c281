"""fgjax.models.activation_attention: eq. 1 as one 1x1 conv, attention/Otsu mask, boxes in input
pixels, crop-and-zoom between scales, per-scale parameters, predictions; against NumPy oracles
written here (float64; tolerances stated per test)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.filters import threshold_otsu

from fgjax.models import activation_attention as aa
from fgjax.models.backbones import get_backbone

L, N, HW = 5, 3, 32


def _model(**kw):
  kw = {'num_classes': L, 'backbone': get_backbone('small_cnn', widths=(8, 8, 8, 8)),
        'layer': 'conv4', 'num_scales': 3, 'num_local': 4, **kw}
  return aa.ActivationAttention(**kw)


@pytest.fixture(scope='module')
def run():
  model = _model()
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (N, HW, HW, 3)), jnp.uint8)
  variables = model.init(jax.random.key(0), images, train=False)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  # Intermediate feature maps of every scale (the inputs of the local classifiers).
  _, inter = model.apply(variables, images, train=False, capture_intermediates=True)
  return model, images, variables, out, inter['intermediates']


def test_output_shapes_and_per_scale_params(run):
  model, _, variables, out, _ = run
  g = 4  # small_cnn conv4 stride 8 on 32x32
  assert out['activations'].shape == (N, 3, g, g, L + 1)
  assert out['mask'].shape == out['attention'].shape == (N, 3, g, g)
  for k in ('local_probs', 'object_probs', 'scale_probs', 'object_logits'):
    assert out[k].shape == (N, 3, L), k
  assert out['boxes'].shape == (N, 3, 4) and out['logits'].shape == (N, L)
  params = variables['params']
  assert sorted(params) == ['scale1', 'scale2', 'scale3']
  for s in params:
    # n local classifiers over L + 1 classes are ONE 1x1 conv with n * (L + 1) outputs.
    assert params[s]['local']['kernel'].shape == (1, 1, 8, 4 * (L + 1))
    assert params[s]['object']['kernel'].shape == (8, L)
  # Each scale has its own parameters (different initialisations).
  assert not np.allclose(params['scale1']['backbone']['conv1']['kernel'],
                         params['scale2']['backbone']['conv1']['kernel'])


def _features(inter, s):
  return np.asarray(inter[f'scale{s}']['backbone']['__call__'][0]['features']['conv4'],
                    np.float64)


def test_eq1_attention_mask_object_and_predictions_match_numpy(run):
  """Oracle: per classifier i, A_i = f W_i + b_i; A = max_i A_i; M = max_{k<L} A; Otsu by skimage.

  Tolerance 1e-5 (float32 model vs float64 oracle; values are O(1)).
  """
  _, _, variables, out, inter = run
  for s in (1, 2, 3):
    p = variables['params'][f'scale{s}']
    f = _features(inter, s)  # (N, h, w, C)
    kernel = np.asarray(p['local']['kernel'], np.float64)[0, 0]
    bias = np.asarray(p['local']['bias'], np.float64)
    per_classifier = [f @ kernel[:, i * (L + 1):(i + 1) * (L + 1)] + bias[i * (L + 1):(i + 1) * (L + 1)]
                      for i in range(4)]
    a = np.max(np.stack(per_classifier), axis=0)
    np.testing.assert_allclose(out['activations'][:, s - 1], a, atol=1e-5, rtol=1e-5)
    m = a[..., :L].max(-1)
    np.testing.assert_allclose(out['attention'][:, s - 1], m, atol=1e-5, rtol=1e-5)
    mask = np.asarray(out['mask'][:, s - 1])
    for n in range(N):  # skimage on the model's own float32 map: masks must be identical
      att = np.asarray(out['attention'][n, s - 1])
      np.testing.assert_array_equal(mask[n], (att > threshold_otsu(att)).astype(np.float32))
    pooled = np.max(mask[..., None] * f, axis=(1, 2))
    logits = pooled @ np.asarray(p['object']['kernel'], np.float64) + np.asarray(
        p['object']['bias'], np.float64)
    np.testing.assert_allclose(out['object_logits'][:, s - 1], logits, atol=1e-5, rtol=1e-5)
    local = a[..., :L].mean(axis=(1, 2))
    local = np.exp(local - local.max(-1, keepdims=True))
    local /= local.sum(-1, keepdims=True)
    np.testing.assert_allclose(out['local_probs'][:, s - 1], local, atol=1e-6)
  obj = np.exp(np.asarray(out['object_logits'], np.float64))
  obj /= obj.sum(-1, keepdims=True)
  final = ((np.asarray(out['local_probs'], np.float64) + obj) / 2).mean(1)
  np.testing.assert_allclose(np.exp(out['logits']), final, atol=1e-6)


def _numpy_box(mask, size):
  """Oracle: bounding box of the mask's cells, cell i -> pixels [i*size/h, (i+1)*size/h)."""
  h = mask.shape[0]
  rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
  if len(rows) == 0:
    return np.array([0, 0, size, size], np.float64)
  c = size / h
  return np.array([rows[0] * c, cols[0] * c, (rows[-1] + 1) * c, (cols[-1] + 1) * c])


def test_box_from_mask_in_input_pixels():
  rng = np.random.default_rng(1)
  masks = (rng.random((20, 7, 7)) < 0.15).astype(np.float32)
  masks[3] = 0  # empty mask -> whole image
  masks[4] = 0
  masks[4, 2, 5] = 1  # a single cell
  boxes = np.asarray(jax.jit(lambda m: aa.box_from_mask(m, 448, 448))(masks))
  for m, b in zip(masks, boxes):
    np.testing.assert_allclose(b, _numpy_box(m, 448), atol=1e-4)
  np.testing.assert_allclose(boxes[4], [128, 320, 192, 384], atol=1e-4)
  # Minimum size: a one-cell box grows about its centre to half the image, kept inside.
  grown = np.asarray(aa.box_from_mask(masks[4:5], 448, 448, min_box_fraction=0.5))[0]
  # 64-px cell at rows [128, 192), cols [320, 384): grows 80 px each side; x is shifted back by 16.
  np.testing.assert_allclose(grown, [48, 224, 272, 448], atol=1e-4)


def test_compose_boxes():
  outer = jnp.array([[10.0, 20.0, 42.0, 84.0]])  # a 32 x 64 box zoomed to 64 x 64
  inner = jnp.array([[0.0, 16.0, 32.0, 64.0]])
  np.testing.assert_allclose(aa.compose_boxes(outer, inner, 64, 64), [[10, 36, 26, 84]])


def test_next_scale_sees_the_zoomed_attention_box(run):
  """Scale 2's input is crop_and_resize(image, box of scale 1's mask); scale 3's of the composed
  box (crop_source='original'). Oracle: bilinear resampling written here in NumPy (half-pixel
  centres, align_corners=False) of the box computed by _numpy_box. Tolerance 1e-3 on [0, 255]."""
  _, images, _, out, inter = run
  img = np.asarray(images, np.float64)
  captured = {}

  def spy(next_fun, args, kwargs, context):
    if isinstance(context.module, aa.ScaleNet) and context.method_name == '__call__':
      captured[context.module.name] = args[0]
    return next_fun(*args, **kwargs)

  model, _, variables, _, _ = run
  with nn.intercept_methods(spy):
    out2 = model.apply(variables, images, train=False)
  np.testing.assert_array_equal(out2['boxes'], out['boxes'])
  frame = np.tile([0.0, 0.0, HW, HW], (N, 1))
  for s in (2, 3):
    local = np.stack([_numpy_box(m, HW) for m in np.asarray(out['mask'][:, s - 2])])
    sy = (frame[:, 2] - frame[:, 0]) / HW
    sx = (frame[:, 3] - frame[:, 1]) / HW
    frame = np.stack([frame[:, 0] + local[:, 0] * sy, frame[:, 1] + local[:, 1] * sx,
                      frame[:, 0] + local[:, 2] * sy, frame[:, 1] + local[:, 3] * sx], -1)
    np.testing.assert_allclose(out['boxes'][:, s - 2], frame / HW, atol=1e-6)
    expected = np.stack([_numpy_crop(img[n], frame[n], HW) for n in range(N)])
    np.testing.assert_allclose(np.asarray(captured[f'scale{s}']), expected, atol=1e-3)


def _numpy_crop(image, box, size):
  """Bilinear samples at y0 + max((d + 0.5) * L / size - 0.5, 0), clipped to [0, L - 1]."""
  def axis(start, end, n):
    length = end - start
    src = np.clip(np.maximum((np.arange(size) + 0.5) * length / size - 0.5, 0), 0,
                  max(length - 1, 0))
    pos = start + src
    i0 = np.floor(pos).astype(int)
    w = pos - i0
    return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), w, (i0 + 1 < n)
  y0, y1, wy, vy = axis(box[0], box[2], image.shape[0])
  x0, x1, wx, vx = axis(box[1], box[3], image.shape[1])
  rows = image[y0] * (1 - wy)[:, None, None] + image[y1] * (wy * vy)[:, None, None]
  return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * (wx * vx)[None, :, None]


def test_constant_attention_gives_empty_mask_and_whole_image_box():
  m = jnp.full((2, 4, 4), 0.3)
  mask = aa.otsu_mask(m)
  assert float(mask.sum()) == 0.0
  np.testing.assert_array_equal(aa.box_from_mask(mask, 64, 48), [[0, 0, 64, 48]] * 2)


def test_heads_and_options_change_predictions_as_documented():
  images = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, HW, HW, 3)), jnp.uint8)
  base = _model(num_scales=1)
  variables = base.init(jax.random.key(1), images, train=False)
  outs = {h: _model(num_scales=1, losses=h).apply(variables, images) for h in aa.LOSSES}
  np.testing.assert_allclose(np.exp(outs['local']['logits']), outs['both']['local_probs'][:, 0],
                             atol=1e-6)
  np.testing.assert_allclose(np.exp(outs['object']['logits']),
                             outs['both']['object_probs'][:, 0], atol=1e-6)
  probs = _model(num_scales=1, attention_source='probabilities').apply(variables, images)
  a = np.asarray(outs['both']['activations'][:, 0], np.float64)
  sm = np.exp(a - a.max(-1, keepdims=True))
  sm /= sm.sum(-1, keepdims=True)
  np.testing.assert_allclose(probs['attention'][:, 0], sm[..., :L].max(-1), atol=1e-6)
  stp = _model(num_scales=1, local_prediction='softmax_then_pool').apply(variables, images)
  ref = sm[..., :L].mean((1, 2))
  np.testing.assert_allclose(stp['local_probs'][:, 0], ref / ref.sum(-1, keepdims=True), atol=1e-6)


def test_previous_crop_source_runs_and_differs_from_original_only_after_scale2(run):
  _, images, variables, out, _ = run
  prev = _model(crop_source='previous').apply(variables, images)
  # Scale 2 sees the same crop either way (its source frame is the original image).
  np.testing.assert_allclose(prev['activations'][:, :2], out['activations'][:, :2], atol=1e-5)
  np.testing.assert_allclose(prev['boxes'], out['boxes'], atol=1e-6)


def test_train_scale_runs_earlier_scales_in_inference_mode_and_skips_later_ones(run):
  """train_scale=2 (stage 2 of sequential training): scale 1 as in evaluation (BatchNorm on its
  running averages, statistics kept, no gradient), scale 2 in training mode, no scale 3."""
  model, images, variables, out, _ = run
  staged, updates = model.apply(variables, images, train=True, train_scale=2,
                                mutable=['batch_stats'])
  assert staged['activations'].shape[1] == 2 and staged['boxes'].shape[1] == 2
  for key in ('activations', 'attention', 'mask', 'object_logits', 'boxes'):
    np.testing.assert_allclose(staged[key][:, 0], out[key][:, 0], atol=1e-5, err_msg=key)
  stats, new = variables['batch_stats'], updates['batch_stats']
  assert jax.tree.structure(new) == jax.tree.structure(stats)  # the tree checkpoints hold
  same = lambda s: all(jax.tree.leaves(jax.tree.map(np.array_equal, stats[s], new[s])))
  assert same('scale1') and same('scale3') and not same('scale2')

  def loss(params):
    o, _ = model.apply({**variables, 'params': params}, images, train=True, train_scale=2,
                       mutable=['batch_stats'])
    return jnp.sum(o['object_logits'] ** 2) + jnp.sum(o['activations'] ** 2)
  grads = jax.grad(loss)(variables['params'])
  nonzero = lambda s: any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads[s]))
  assert nonzero('scale2') and not nonzero('scale1') and not nonzero('scale3')


def test_train_scale_one_and_every_scale(run):
  model, images, variables, _, _ = run
  one, _ = model.apply(variables, images, train=True, train_scale=1, mutable=['batch_stats'])
  every, _ = model.apply(variables, images, train=True, mutable=['batch_stats'])
  assert one['activations'].shape[1] == 1 and every['activations'].shape[1] == 3
  np.testing.assert_allclose(one['activations'][:, 0], every['activations'][:, 0], atol=1e-5)
  for bad in (0, 4):
    with pytest.raises(ValueError, match='train_scale'):
      model.apply(variables, images, train=True, train_scale=bad, mutable=['batch_stats'])


def test_frozen_scales_value_check():
  with pytest.raises(ValueError, match='config.model.frozen_scales'):
    _model(frozen_scales='sometimes')
