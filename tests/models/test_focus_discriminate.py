"""focus_discriminate model pieces against float64 NumPy oracles written here (and scipy for the
Gaussian smoothing): CAM attention (eq. 2), anchor scoring, the NMS/crop/backbone wiring, hybrid
feature and the ablation switches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from fgjax.models.focus_discriminate import FocusDiscriminate, anchor_scores
from fgjax.ops.anchors import nts_default_anchors, padded_integer_boxes
from fgjax.ops.gaussian import gaussian_blur, gaussian_kernel1d

H = W = 64
SCALE = 64 / 448
PAD = REGION = 32


class StubBackbone(nn.Module):
  """features['x'] = 8x8 average pool of (image - mean): region features are crop means."""
  mean = 10.0

  @nn.compact
  def __call__(self, images, train=False):
    x = images.astype(jnp.float32) - self.mean
    return {'features': {'x': nn.avg_pool(x, (8, 8), strides=(8, 8))}}


def make_model(**kw):
  args = dict(num_classes=5, backbone=StubBackbone(), layer='x', input_hw=(H, W),
              geometry_scale=SCALE, pad=PAD, region_size=REGION, sigma=0.0)
  args.update(kw)
  return FocusDiscriminate(**args)


def images(n=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8))


# ---- Gaussian smoothing (oracle: scipy.ndimage.gaussian_filter) --------------------------------

@pytest.mark.parametrize('mode', ['reflect', 'nearest', 'mirror', 'constant'])
@pytest.mark.parametrize('sigma', [0.7, 1.0, 2.5])  # 2.5: radius 10 > map size 7 (re-reflection)
def test_gaussian_blur_matches_scipy(mode, sigma):
  x = np.random.default_rng(0).normal(size=(2, 7, 9)).astype(np.float32)
  want = np.stack([scipy.ndimage.gaussian_filter(x[i].astype(np.float64), sigma, mode=mode)
                   for i in range(2)])
  got = jax.jit(gaussian_blur, static_argnums=(1, 2, 3))(jnp.asarray(x), sigma, 4.0, mode)
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-6)
  assert abs(gaussian_kernel1d(sigma).sum() - 1) < 1e-6


# ---- anchor scores ------------------------------------------------------------------------------

def _upsample_half_pixel(m, out):
  """float64 bilinear upsampling with half-pixel centres and edge clamping."""
  n = m.shape[0]
  src = np.clip((np.arange(out) + 0.5) * n / out - 0.5, 0, n - 1)
  i0 = np.floor(src).astype(int)
  i1 = np.minimum(i0 + 1, n - 1)
  w = src - i0
  rows = m[i0] * (1 - w)[:, None] + m[i1] * w[:, None]
  return rows[:, i0] * (1 - w)[None] + rows[:, i1] * w[None]


@pytest.mark.parametrize('mode', ['mean_full', 'mean_inside'])
def test_anchor_scores_are_box_means_of_normalised_upsampled_attention(mode):
  rng = np.random.default_rng(1)
  att = rng.normal(size=(2, 8, 8)).astype(np.float32)
  _, edge = nts_default_anchors(64, SCALE)
  boxes = padded_integer_boxes(edge, PAD) - PAD
  got = np.asarray(anchor_scores(jnp.asarray(att), boxes, (H, W), mode))
  for b in range(2):
    m = att[b].astype(np.float64)
    up = _upsample_half_pixel((m - m.min()) / (m.max() - m.min()), H)
    padded = np.pad(up, PAD)
    for k in range(0, len(boxes), 37):
      y0, x0, y1, x1 = boxes[k] + PAD
      region = padded[y0:y1, x0:x1]
      if mode == 'mean_full':
        want = region.mean()
      else:
        inside = np.pad(np.ones((H, W)), PAD)[y0:y1, x0:x1]
        want = region.sum() / inside.sum()
      assert abs(got[b, k] - want) < 1e-4, (b, k, got[b, k], want)


# ---- attention (eq. 2) --------------------------------------------------------------------------

def test_attention_is_max_over_class_activation_maps():
  model = make_model()
  x = images()
  v = model.init(jax.random.key(0), x)
  out = model.apply(v, x)
  p = v['params']['image_classifier']
  z = np.asarray(StubBackbone().apply({}, x)['features']['x'], np.float64)  # (2, 8, 8, 3)
  kernel = np.asarray(p['kernel'], np.float64)
  cams = z @ kernel  # no bias
  np.testing.assert_allclose(np.asarray(out['attention']), cams.max(-1), rtol=1e-5, atol=1e-3)
  logits = z.mean((1, 2)) @ kernel + np.asarray(p['bias'])
  np.testing.assert_allclose(np.asarray(out['image_logits']), logits, rtol=1e-5, atol=1e-3)
  # single CAM: the given class, else the predicted one.
  single = make_model(attention='single_cam')
  labels = jnp.array([3, 1])
  np.testing.assert_allclose(np.asarray(single.apply(v, x, labels=labels)['attention']),
                             cams[np.arange(2), :, :, [3, 1]], rtol=1e-5, atol=1e-3)
  pred = logits.argmax(-1)
  np.testing.assert_allclose(np.asarray(single.apply(v, x)['attention']),
                             cams[np.arange(2), :, :, pred], rtol=1e-5, atol=1e-3)
  # Smoothing is applied to M (scipy oracle, mode 'nearest').
  smooth = make_model(sigma=1.0)
  want = np.stack([scipy.ndimage.gaussian_filter(cams.max(-1)[i], 1.0, mode='nearest')
                   for i in range(2)])
  np.testing.assert_allclose(np.asarray(smooth.apply(v, x)['attention']), want, rtol=1e-5,
                             atol=1e-3)


# ---- proposals, crops, regions, hybrid ------------------------------------------------------

def _numpy_nms(boxes, scores, topn, thr):
  order = list(np.argsort(-scores, kind='stable'))
  keep = []
  while order and len(keep) < topn:
    j = order.pop(0)
    keep.append(j)
    def iou(k):
      a, b = boxes[j], boxes[k]
      ih = max(0, min(a[2], b[2]) - max(a[0], b[0]))
      iw = max(0, min(a[3], b[3]) - max(a[1], b[1]))
      inter = ih * iw
      return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    order = [k for k in order if iou(k) < thr]
  return np.array(keep)


def _crop_oracle(image, box, fill):
  """NTS-Net crop: pad with `fill`, slice, torch bilinear align_corners=True to REGION."""
  x = np.pad(image.astype(np.float64), ((PAD, PAD), (PAD, PAD), (0, 0)), constant_values=fill)
  y0, x0, y1, x1 = (int(v) + PAD for v in box)
  crop = x[y0:y1, x0:x1]
  def axis(n):
    src = np.arange(REGION) * (n - 1) / (REGION - 1)
    i0 = np.floor(src).astype(int)
    return i0, np.minimum(i0 + 1, n - 1), src - i0
  r0, r1, rw = axis(crop.shape[0])
  c0, c1, cw = axis(crop.shape[1])
  rows = crop[r0] * (1 - rw)[:, None, None] + crop[r1] * rw[:, None, None]
  return rows[:, c0] * (1 - cw)[None, :, None] + rows[:, c1] * cw[None, :, None]


@pytest.mark.parametrize('pad_value', ['mean', 'zero'])
def test_regions_are_nms_picks_cropped_and_classified(pad_value):
  # NTS-Net's anchors (the default 'fixed_centre' boxes: tests/methods/test_focus_discriminate_
  # readings.py)
  model = make_model(pad_value=pad_value, region_scoring='anchor_mean')
  x = images(seed=3)
  v = model.init(jax.random.key(0), x)
  out = jax.jit(lambda v, x: model.apply(v, x))(v, x)
  boxes_int = padded_integer_boxes(nts_default_anchors(64, SCALE)[1], PAD) - PAD
  scores = np.asarray(out['anchor_scores'])
  fill = 10.0 if pad_value == 'mean' else 0.0
  region_feats = []
  for b in range(2):
    keep = _numpy_nms(boxes_int, scores[b], 6, 0.25)
    np.testing.assert_array_equal(np.asarray(out['region_indices'][b]), keep)
    np.testing.assert_array_equal(np.asarray(out['boxes'][b]), boxes_int[keep])
    # Stub backbone: region feature = mean of (crop - 10) over the crop.
    region_feats.append([_crop_oracle(np.asarray(x[b]), boxes_int[k], fill).mean((0, 1)) - 10.0
                         for k in keep])
  region_feats = np.array(region_feats)  # (2, 6, 3)
  p = v['params']
  want_region = region_feats @ np.asarray(p['region_classifier']['kernel'], np.float64) + \
      np.asarray(p['region_classifier']['bias'])
  np.testing.assert_allclose(np.asarray(out['region_logits']), want_region, rtol=1e-4, atol=2e-3)
  image_feat = np.asarray(x, np.float64).mean((1, 2)) - 10.0
  hybrid = np.concatenate([image_feat, region_feats[:, :4].reshape(2, -1)], -1)
  np.testing.assert_allclose(np.asarray(out['features']), hybrid, rtol=1e-5, atol=1e-3)
  want_logits = hybrid @ np.asarray(p['hybrid_classifier']['kernel'], np.float64) + \
      np.asarray(p['hybrid_classifier']['bias'])
  np.testing.assert_allclose(np.asarray(out['logits']), want_logits, rtol=1e-4, atol=2e-3)
  np.testing.assert_array_equal(np.asarray(out['logits']), np.asarray(out['hybrid_logits']))


def test_ablation_switches():
  x = images()
  full = make_model()
  v = full.init(jax.random.key(0), x)
  out = full.apply(v, x)
  image_level = make_model(use_hybrid=False)
  v2 = image_level.init(jax.random.key(0), x)
  assert 'hybrid_classifier' not in v2['params'] and 'region_classifier' in v2['params']
  o2 = image_level.apply(v2, x)
  assert 'hybrid_logits' not in o2 and o2['region_logits'].shape == (2, 6, 5)
  np.testing.assert_array_equal(np.asarray(o2['logits']), np.asarray(o2['image_logits']))
  image_only = make_model(use_hybrid=False, use_regions=False)
  v3 = image_only.init(jax.random.key(0), x)
  assert set(v3['params']) == {'image_classifier'}
  o3 = image_only.apply(v3, x)
  assert 'region_logits' not in o3 and o3['boxes'].shape == (2, 6, 4)
  # Same proposals whatever the heads (they depend on the image branch only).
  np.testing.assert_array_equal(np.asarray(o3['boxes']), np.asarray(out['boxes']))


def test_feature_dropout_in_training_only():
  """NTS-Net's dropout on the pooled features: evaluation equals the model without it; training
  drops about half of the image and region features, with one mask for the image feature in the
  image classifier and in the hybrid feature."""
  x = images(n=4)
  plain, dropped = make_model(), make_model(feature_dropout=0.5)
  v = plain.init(jax.random.key(0), x)
  for key in ('logits', 'image_logits', 'region_logits', 'features'):
    np.testing.assert_array_equal(np.asarray(dropped.apply(v, x)[key]),
                                  np.asarray(plain.apply(v, x)[key]))
  ref = plain.apply(v, x, train=True)
  out = dropped.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)})
  f, f_ref = np.asarray(out['features']), np.asarray(ref['features'])
  zero = f == 0
  assert 0.3 < zero.mean() < 0.7
  np.testing.assert_allclose(f[~zero], 2 * f_ref[~zero], rtol=1e-6)
  # The image classifier saw the same dropped image feature as the hybrid one.
  img = f[:, :f_ref.shape[1] // 5]
  kernel = np.asarray(v['params']['image_classifier']['kernel'])
  bias = np.asarray(v['params']['image_classifier']['bias'])
  np.testing.assert_allclose(np.asarray(out['image_logits']), img @ kernel + bias, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out['boxes']), np.asarray(ref['boxes']))


def test_jit_grad_through_everything_is_finite_and_reaches_backbone():
  class Conv(nn.Module):
    mean = 0.0

    @nn.compact
    def __call__(self, images, train=False):
      x = nn.Conv(4, (3, 3), strides=8)(images.astype(jnp.float32) / 255.0)
      return {'features': {'x': nn.relu(x)}}

  model = make_model(backbone=Conv(), sigma=1.0)
  x = images()
  v = model.init(jax.random.key(0), x)

  @jax.jit
  def loss(params):
    o = model.apply({'params': params}, x)
    return o['logits'].sum() + o['region_logits'].sum() + o['image_logits'].sum()

  g = jax.grad(loss)(v['params'])
  leaves = jax.tree.leaves(g)
  assert all(np.all(np.isfinite(l)) for l in leaves)
  assert np.abs(np.asarray(g['backbone']['Conv_0']['kernel'])).sum() > 0


@pytest.mark.slow  # ~30 s on 2 busy cores: two models compiled with gradients
def test_region_bn_separate_vs_shared():
  """Training computes the same loss and gradients either way; 'separate' keeps the region pass's
  running statistics apart (params are not duplicated) and evaluation uses them for the regions."""
  from fgjax.models.backbones import get_backbone
  bb = get_backbone('small_cnn', widths=(8, 8, 8, 8))
  x = images(seed=5)
  models = {mode: make_model(backbone=bb, layer='conv4', region_bn=mode, sigma=1.0)
            for mode in ('separate', 'shared')}
  v = {mode: m.init(jax.random.key(0), x) for mode, m in models.items()}
  assert set(v['separate']['batch_stats']) == {'backbone', 'region_backbone'}
  assert set(v['shared']['batch_stats']) == {'backbone'}
  assert 'region_backbone' not in v['separate']['params']
  params = v['shared']['params']
  jax.tree.map(np.testing.assert_array_equal, params, v['separate']['params'])

  def train_loss(mode):
    def f(p):
      o, upd = models[mode].apply({'params': p, 'batch_stats': v[mode]['batch_stats']}, x,
                                  train=True, mutable=['batch_stats'])
      return o['logits'].sum() + o['region_logits'].sum() + o['image_logits'].sum(), upd
    return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

  (l_sep, upd_sep), g_sep = train_loss('separate')
  (l_sh, upd_sh), g_sh = train_loss('shared')
  assert abs(float(l_sep) - float(l_sh)) <= 1e-5 * abs(float(l_sh))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_sep, g_sh)
  assert np.abs(np.asarray(g_sep['backbone']['conv1']['kernel'])).sum() > 0
  # From zero-initialised means (momentum 0.9): separate gives 0.1*mu_image and 0.1*mu_region;
  # shared applies the region update after the image one: 0.9*(0.1*mu_image) + 0.1*mu_region.
  img_only = upd_sep['batch_stats']['backbone']['bn1']['mean']
  region_only = upd_sep['batch_stats']['region_backbone']['bn1']['mean']
  both = upd_sh['batch_stats']['backbone']['bn1']['mean']
  np.testing.assert_allclose(both, 0.9 * img_only + region_only, rtol=1e-4, atol=1e-5)
  assert np.abs(np.asarray(img_only - region_only)).max() > 1e-3
