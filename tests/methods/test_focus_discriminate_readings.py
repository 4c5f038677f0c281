"""focus_discriminate readings that switch its mechanism off, and their diagnostics: region
scorings (anchor mean / anchor excess / the paper's fixed-centre regions), the hybrid's slot order,
the region diagnostics of eval_metrics, `diagnose` and the migration of old config.json files."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax import methods, run
from fgjax.methods import focus_discriminate as fd_method
from fgjax.models import region_proposals as rp
from fgjax.models.focus_discriminate import FocusDiscriminate
from fgjax.ops.anchors import nts_default_anchors, padded_integer_boxes

METHOD = methods.get('focus_discriminate')
H = W = 64
SCALE, PAD = 64 / 448, 32
BOXES = padded_integer_boxes(nts_default_anchors(64, SCALE)[1], PAD) - PAD  # (1614, 4)


def _iou(a, b):
  ih = max(0, min(a[2], b[2]) - max(a[0], b[0]))
  iw = max(0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ih * iw
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _area(b):
  return (b[2] - b[0]) * (b[3] - b[1])


# ---- item 9: region scorings ------------------------------------------------------------------

def _plateau(grid, lo, hi):
  """(1, grid, grid) attention: 1 on cells [lo, hi) of both axes, 0 elsewhere."""
  m = np.zeros((1, grid, grid), np.float32)
  m[0, lo:hi, lo:hi] = 1
  return jnp.asarray(m)


@pytest.mark.parametrize('grid,lo,hi', [(64, 14, 42), (8, 2, 5)])  # full resolution; 8x8 cells
def test_excess_picks_the_region_covering_a_plateau_mean_a_tiny_one_inside(grid, lo, hi):
  obj = np.array([lo, lo, hi, hi]) * (H // grid)  # the plateau in pixels
  best = max(_iou(b, obj) for b in BOXES)
  pick = jax.jit(lambda m, scoring: rp.select(
      rp.candidate_scores(m, BOXES, (H, W), scoring), BOXES, 6, 0.25), static_argnums=1)
  m = _plateau(grid, lo, hi)
  keep, boxes = pick(m, 'anchor_excess')
  top = BOXES[int(keep[0, 0])]
  np.testing.assert_array_equal(np.asarray(boxes[0, 0]), top)
  assert _iou(top, obj) >= 0.5 and _iou(top, obj) >= 0.9 * best, (top, obj, best)
  keep_mean, _ = pick(m, 'anchor_mean')
  tiny = BOXES[int(keep_mean[0, 0])]
  inside = tiny[0] >= obj[0] - 1 and tiny[1] >= obj[1] - 1 and tiny[2] <= obj[2] + 1 and \
      tiny[3] <= obj[3] + 1
  assert inside and _area(tiny) < 0.5 * _area(obj) and _iou(tiny, obj) < 0.5, (tiny, obj)


def test_excess_on_a_uniform_map_has_no_size_preference():
  scores = rp.anchor_scores(jnp.ones((1, 8, 8)), BOXES, (H, W), 'mean_inside', 'excess')
  np.testing.assert_allclose(np.asarray(scores), 0, atol=1e-3)


@pytest.mark.parametrize('mode', ['mean_full', 'mean_inside'])
def test_excess_scores_are_mass_above_the_image_mean(mode):
  """Oracle: float64 brute force on the normalised, upsampled map (bilinear, half-pixel)."""
  rng = np.random.default_rng(2)
  att = rng.normal(size=(2, 64, 64)).astype(np.float32)  # full resolution: no upsampling
  got = np.asarray(rp.anchor_scores(jnp.asarray(att), BOXES, (H, W), mode, 'excess'))
  for b in range(2):
    m = att[b].astype(np.float64)
    up = (m - m.min()) / (m.max() - m.min())
    padded = np.pad(up, PAD)
    inside = np.pad(np.ones((H, W)), PAD)
    for k in range(0, len(BOXES), 41):
      y0, x0, y1, x1 = BOXES[k] + PAD
      area = (y1 - y0) * (x1 - x0) if mode == 'mean_full' else inside[y0:y1, x0:x1].sum()
      want = padded[y0:y1, x0:x1].sum() - up.mean() * area
      assert abs(got[b, k] - want) < 2e-3, (b, k, got[b, k], want)


def test_fixed_centre_boxes_at_448_are_the_papers_160_px_regions():
  side = rp.region_side_px((448, 448), 160 / 448)
  assert side == 160
  boxes = rp.fixed_centre_boxes((14, 14), (448, 448), side)
  assert boxes.shape == (196, 4)
  i, j = np.divmod(np.arange(196), 14)
  want = np.stack([32 * i - 64, 32 * j - 64, 32 * i + 96, 32 * j + 96], -1)
  np.testing.assert_array_equal(boxes, want)


class StubBackbone(nn.Module):
  """features['x'] = 8x8 average pool of (image - mean)."""
  mean = 10.0

  @nn.compact
  def __call__(self, images, train=False):
    x = images.astype(jnp.float32) - self.mean
    return {'features': {'x': nn.avg_pool(x, (8, 8), strides=(8, 8))}}


def _model(**kw):
  args = dict(num_classes=5, backbone=StubBackbone(), layer='x', input_hw=(H, W),
              geometry_scale=SCALE, pad=PAD, region_size=32, sigma=0.0)
  return FocusDiscriminate(**{**args, **kw})


def _images(n=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8))


def test_fixed_centre_model_picks_cells_of_m_by_nms():
  model = _model(region_scoring='fixed_centre')
  x = _images()
  v = model.init(jax.random.key(0), x)
  out = jax.jit(lambda v, x: model.apply(v, x))(v, x)
  m = np.asarray(out['attention']).reshape(2, -1)
  np.testing.assert_array_equal(np.asarray(out['anchor_scores']), m)
  side = rp.region_side_px((H, W), 160 / 448)
  assert side == 23
  cells = rp.fixed_centre_boxes((8, 8), (H, W), side)
  keep = np.asarray(out['region_indices'])
  for b in range(2):
    assert keep[b, 0] == np.argmax(m[b])
    np.testing.assert_array_equal(np.asarray(out['boxes'][b]), cells[keep[b]])
    for r in range(1, 6):  # NMS: every later pick overlaps the earlier ones below 0.25
      assert all(_iou(cells[keep[b, r]], cells[keep[b, q]]) < 0.25 for q in range(r))
  with pytest.raises(ValueError, match='num_regions=65 exceeds the 64 candidate'):
    _model(region_scoring='fixed_centre', num_regions=65, num_hybrid=4).init(
        jax.random.key(0), x)


@pytest.mark.parametrize('scoring', ['anchor_excess', 'fixed_centre'])
def test_every_scoring_trains_jitted_with_gradients(scoring):
  class Conv(nn.Module):
    mean = 0.0

    @nn.compact
    def __call__(self, images, train=False):
      return {'features': {'x': nn.relu(nn.Conv(4, (3, 3), strides=8)(images / 255.0))}}

  model = _model(backbone=Conv(), sigma=1.0, region_scoring=scoring)
  x = _images()
  v = model.init(jax.random.key(0), x)

  @jax.jit
  def loss(params):
    o = model.apply({'params': params}, x, train=True)
    return o['logits'].sum() + o['region_logits'].sum() + o['image_logits'].sum()

  g = jax.grad(loss)(v['params'])
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))
  assert np.abs(np.asarray(g['backbone']['Conv_0']['kernel'])).sum() > 0


# ---- item 10: slot order of the hybrid feature --------------------------------------------------

@pytest.mark.parametrize('fusion', ['concat', 'mean', 'max'])
def test_hybrid_fusion_and_the_rolled_slot_diagnostic(fusion):
  model = _model(hybrid_fusion=fusion)
  x = _images(seed=4)
  v = model.init(jax.random.key(0), x)
  out = model.apply(v, x)
  assert 'hybrid_logits_rolled' not in model.apply(v, x, train=True)
  plain = _model()  # concat: its features hold F^I and the region features in NMS order
  v_plain = plain.init(jax.random.key(0), x)
  parts = np.asarray(plain.apply(v_plain, x)['features']).reshape(2, 5, 3)
  image, regions = parts[:, 0], parts[:, 1:]
  pooled = {'concat': regions.reshape(2, -1), 'mean': regions.mean(1), 'max': regions.max(1)}
  want = np.concatenate([image, pooled[fusion]], -1)
  np.testing.assert_allclose(np.asarray(out['features']), want, rtol=1e-5, atol=1e-4)
  kernel = np.asarray(v['params']['hybrid_classifier']['kernel'], np.float64)
  bias = np.asarray(v['params']['hybrid_classifier']['bias'])
  rolled = np.roll(regions, -1, axis=1)
  pooled_rolled = {'concat': rolled.reshape(2, -1), 'mean': rolled.mean(1), 'max': rolled.max(1)}
  want_rolled = np.concatenate([image, pooled_rolled[fusion]], -1) @ kernel + bias
  np.testing.assert_allclose(np.asarray(out['hybrid_logits_rolled']), want_rolled, rtol=1e-4,
                             atol=1e-3)
  gap = np.abs(np.asarray(out['hybrid_logits_rolled']) - np.asarray(out['logits'])).max()
  if fusion == 'concat':
    assert gap > 1e-3  # random weights: the slot order matters
  else:
    assert gap < 1e-4  # pooled over the regions: order-invariant


# ---- diagnostics: eval_metrics on hand-made gathered arrays, diagnose on hand-made dicts ------

def test_region_diagnostics_on_hand_made_arrays(make_config):
  config = make_config('focus_discriminate')  # 32x32 input, small_cnn conv4 (stride 8)
  bbox = np.array([[0.25, 0.25, 0.75, 0.75]] * 2)  # object: pixels 8..24
  boxes = np.zeros((2, 6, 4))
  boxes[0, :] = [10, 10, 14, 14]  # side 4, centre (12, 12): on the object
  boxes[1, :] = [0, 0, 8, 8]  # side 8, centre (4, 4): off
  boxes[1, 0] = [-8, -8, 24, 24]  # side 32, centre (8, 8): on (edges count)
  labels = np.array([0, 1])
  gathered = {'label': labels, 'image_logits': np.zeros((2, 3)), 'logits': np.eye(3)[[0, 2]],
              'region_logits': np.zeros((2, 6, 3)), 'boxes': boxes, 'bbox': bbox,
              'hybrid_logits_rolled': np.eye(3)[[0, 1]]}
  got = METHOD.eval_metrics(gathered, config)
  assert abs(got['region_side_frac_mean'] - (6 * 4 + 5 * 8 + 32) / 12 / 32) < 1e-12
  assert got['attention_stride_frac'] == 8 / 32
  assert got['regions_on_object'] == 7 / 12
  assert 0 < got['regions_on_object_chance'] < 1
  assert got['hybrid_slot_roll_agreement'] == 0.5  # image 1 changes its prediction
  assert got['hybrid_slot_roll_top1'] == 1.0  # ... to the right class
  without_bbox = METHOD.eval_metrics({k: v for k, v in gathered.items() if k != 'bbox'}, config)
  assert 'regions_on_object' not in without_bbox and 'region_side_frac_mean' in without_bbox
  no_hybrid = {**gathered, 'hybrid_logits_rolled': np.zeros((2, 0))}
  assert 'hybrid_slot_roll_agreement' not in METHOD.eval_metrics(no_hybrid, config)


def test_diagnose_warns_with_the_key_and_value():
  fine = {'region_side_frac_mean': 0.3, 'attention_stride_frac': 0.125, 'regions_on_object': 0.6,
          'regions_on_object_chance': 0.3}
  assert METHOD.diagnose(fine) == []
  assert METHOD.diagnose({'top1': 0.5}) == []  # no region diagnostics: nothing to say
  small = METHOD.diagnose({**fine, 'region_side_frac_mean': 0.1})
  assert len(small) == 1
  assert 'region_side_frac_mean=0.1000' in small[0] and 'attention_stride_frac=0.1250' in small[0]
  off = METHOD.diagnose({**fine, 'regions_on_object': 0.0})
  assert len(off) == 1 and 'regions_on_object=0.0000' in off[0]
  both = METHOD.diagnose({**fine, 'region_side_frac_mean': 0.1, 'regions_on_object': 0.01})
  assert len(both) == 2
  # The thresholds are the module's constants.
  assert METHOD.diagnose({**fine, 'regions_on_object': fd_method.MIN_REGIONS_ON_OBJECT}) == []


# ---- migration and checks -------------------------------------------------------------------

def test_old_config_json_keeps_its_old_behaviour(tmp_path):
  old = {k: v for k, v in METHOD.default_model_config().to_dict().items()
         if k not in ('region_scoring', 'hybrid_fusion', 'region_side')}
  model = json.loads(json.dumps(old))
  messages = fd_method.migrate_model_config(model)
  assert model['region_scoring'] == 'anchor_mean' and model['hybrid_fusion'] == 'concat'
  assert len(messages) == 2 and all('before 2026-12' in m for m in messages)
  assert fd_method.migrate_model_config(model) == []  # already migrated
  assert METHOD.migrate_model_config is fd_method.migrate_model_config
  # Through a run directory, as evaluate / predict / resume read it.
  (tmp_path / 'config.json').write_text(json.dumps(
      {'method': 'focus_discriminate', 'dataset': {'name': 'synthetic_parts'}, 'model': old}))
  lines = []
  loaded = run.load_config(str(tmp_path), log=lines.append)
  assert loaded.model.region_scoring == 'anchor_mean' and loaded.model.hybrid_fusion == 'concat'
  assert any('config.model.region_scoring' in line for line in lines)
  # A new run's config.json names its choice, which the migration keeps.
  new = {**old, 'region_scoring': 'fixed_centre', 'hybrid_fusion': 'max'}
  assert fd_method.migrate_model_config(new) == [] and new['region_scoring'] == 'fixed_centre'


@pytest.mark.parametrize('field,value,match', [
    ('region_scoring', 'anchor_max', 'config.model.region_scoring'),
    ('hybrid_fusion', 'sum', 'config.model.hybrid_fusion'),
    ('region_side', 0.0, 'config.model.region_side'),
    ('region_side', 1.5, 'config.model.region_side'),
])
def test_check_config_errors(make_config, field, value, match):
  config = make_config('focus_discriminate')
  with config.unlocked():
    config.model[field] = value
  with pytest.raises(ValueError, match=match):
    METHOD.check_config(config)


def test_fixed_centre_needs_as_many_cells_as_regions(make_config):
  config = make_config('focus_discriminate', region_scoring='fixed_centre')  # 4x4 grid at 32
  METHOD.check_config(config)
  with config.unlocked():
    config.model.num_regions = 17
  with pytest.raises(ValueError, match='num_regions=17 exceeds the 16 cells'):
    METHOD.check_config(config)
