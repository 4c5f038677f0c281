"""Overlay rendering (fgjax.visualisation.overlays) and every registered method's attention panels.

Rendering: exact PNG sizes (fixed cell size, no tight bounding box), non-blank pixels, heatmap
upsampling against a float64 NumPy bilinear oracle, boxes drawn where they are. Panels: built from
the FULL forward outputs of randomly initialised tiny models (32x32, the conftest config), checked
against the model outputs or an independent recomputation (oracles named in each test).
"""

import types

import jax
import numpy as np
import pytest
from PIL import Image

from fgjax import experiment, methods, predict
from fgjax.visualisation import overlays, panels
from fgjax.data import augment
from fgjax.models import backbones


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('num_panels,size', [(1, (520, 300)), (2, (780, 300)), (4, (1300, 300)),
                                             (5, (1300, 600))])
def test_png_has_the_documented_pixel_size(num_panels, size, tmp_path):
  # 260 x 300 px per cell, at most 5 cells (input + panels) per row.
  assert overlays.figure_size_px(num_panels) == size
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
  panels = [overlays.Panel(f'p{i}', heatmap=rng.normal(size=(4, 6))) for i in range(num_panels)]
  path = str(tmp_path / 'x.png')
  overlays.save(image, panels, 'title', path)
  with Image.open(path) as im:
    assert im.format == 'PNG' and im.size == size
    pixels = np.asarray(im.convert('RGB'), np.float64)
  assert pixels.std() > 20  # not blank


def _bilinear_half_pixel(m, out_h, out_w):
  """float64 oracle: output pixel (i, j) samples the input at ((i + .5) h / H - .5, ...), edges
  clamped."""
  h, w = m.shape

  def axis(n_out, n_in):
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, x - lo

  y0, y1, fy = axis(out_h, h)
  x0, x1, fx = axis(out_w, w)
  top = m[y0][:, x0] * (1 - fx) + m[y0][:, x1] * fx
  bot = m[y1][:, x0] * (1 - fx) + m[y1][:, x1] * fx
  return top * (1 - fy[:, None]) + bot * fy[:, None]


def test_upsample_is_half_pixel_bilinear():
  m = np.random.default_rng(1).normal(size=(3, 5))
  got = overlays.upsample(m, 12, 20)  # integer factors: no antialias filter involved
  np.testing.assert_allclose(got, _bilinear_half_pixel(m, 12, 20), atol=1e-5)


def test_grid_shape_follows_the_input_aspect():
  assert panels.grid_shape(64, (64, 64)) == (8, 8)
  assert panels.grid_shape(128, (256, 128)) == (16, 8)
  assert panels.grid_shape(196, (448, 448)) == (14, 14)
  assert panels.grid_shape(7, (32, 32)) in ((1, 7), (7, 1))


def test_heatmap_and_box_change_the_pixels_where_expected():
  image = np.full((40, 40, 3), 128, np.uint8)
  base = overlays.to_array(overlays.render(image, [overlays.Panel('a')], 't'))
  hot = overlays.to_array(overlays.render(
      image, [overlays.Panel('a', heatmap=np.eye(4))], 't'))
  assert np.abs(hot.astype(int) - base.astype(int)).sum() > 0
  # A red rank-1 box: pure-ish red pixels appear (none in the grey image / white background).
  boxed = overlays.to_array(overlays.render(
      image, [overlays.Panel('b', boxes=np.array([[0.25, 0.25, 0.75, 0.75]]), ranked=True)], 't'))
  red = (boxed[..., 0] > 200) & (boxed[..., 1] < 60) & (boxed[..., 2] < 60)
  assert red.sum() > 50
  assert ((base[..., 0] > 200) & (base[..., 1] < 60) & (base[..., 2] < 60)).sum() == 0


def test_render_rejects_a_non_rgb_image():
  with pytest.raises(ValueError, match='H, W, 3'):
    overlays.render(np.zeros((8, 8)), [], 't')


# ---------------------------------------------------------------------------------------------
# Panels of every registered method (random init, full outputs through predict.Predictor)
# ---------------------------------------------------------------------------------------------

def _predictor(config, mesh):
  exp = experiment.setup(config, mesh=mesh, log=lambda m: None)
  variables = jax.jit(lambda: exp.model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, exp.dummy_images(),
      train=False))()
  state = types.SimpleNamespace(params=variables['params'],
                                batch_stats=variables.get('batch_stats', {}))
  return predict.Predictor(exp, state, step=0, batch_size=2)


def _two_test_images(p):
  src = p.exp.source('test')
  return np.stack([augment.preprocess(src[i], p.config.dataset, None)['image'] for i in (0, 1)])


# Narrower heads than the defaults (the panels do not depend on the widths): faster on CPU.
SMALL = {'bilinear_lstm': {'hidden': 16}, 'a3m': {'embed_dim': 32}}


@pytest.fixture(scope='module')
def forward(tiny_config_factory, one_device_mesh):
  """forward(method, **model_overrides) -> (predictor, images (2, 32, 32, 3), full outputs)."""
  cache = {}

  def get(method, **overrides):
    overrides = {**SMALL.get(method, {}), **overrides}
    key = (method, tuple(sorted(overrides.items())))
    if key not in cache:
      p = _predictor(tiny_config_factory(method, **overrides), one_device_mesh)
      images = _two_test_images(p)
      _, outputs = p(images, full=True)
      cache[key] = (p, images, outputs)
    return cache[key]
  return get


@pytest.mark.slow
@pytest.mark.parametrize('name', methods.list_methods())
def test_every_method_draws_panels_that_depend_on_the_image(name, forward, tmp_path):
  p, images, outputs = forward(name)
  assert p.method.attention_panels is not None, f'{name} has no attention_panels'
  drawn = []
  for i in (0, 1):
    panels = p.method.attention_panels(outputs, i, p.config, {})
    assert panels and all(isinstance(q, overlays.Panel) for q in panels)
    for q in panels:
      if q.heatmap is not None:
        assert q.heatmap.ndim == 2 and np.all(np.isfinite(q.heatmap))
    path = str(tmp_path / f'{i}.png')
    overlays.save(images[i], panels, f'{name} {i}', path)
    with Image.open(path) as im:
      assert im.size == overlays.figure_size_px(len(panels))
      drawn.append(np.asarray(im.convert('RGB'), np.float64))
    assert drawn[-1].std() > 20
  maps = [[q.heatmap for q in p.method.attention_panels(outputs, i, p.config, {})
           if q.heatmap is not None] for i in (0, 1)]
  assert any(not np.allclose(a, b) for a, b in zip(*maps)), 'maps identical for two images'
  assert np.abs(drawn[0] - drawn[1]).sum() > 0


def test_bcnn_panel_is_the_squared_feature_norm(forward):
  # Oracle: the backbone applied on its own (not the captured intermediate), |a_uv|^2 in float64
  # for the symmetric one-stream B-CNN ([D,D]: |a b^T|_F = |a|^2).
  p, images, outputs = forward('bcnn')
  bb = backbones.of(p.exp.model, '_a')  # the stream the model builds from its fields
  v = {'params': p.variables['params']['backbone_a']}
  if 'batch_stats' in p.variables and 'backbone_a' in p.variables['batch_stats']:
    v['batch_stats'] = p.variables['batch_stats']['backbone_a']
  fmap = np.asarray(bb.apply(v, images, train=False)['features'][p.config.model.layer_a],
                    np.float64)
  for i in (0, 1):
    (panel,) = p.method.attention_panels(outputs, i, p.config, {})
    np.testing.assert_allclose(panel.heatmap, (fmap[i] ** 2).sum(-1), rtol=1e-4, atol=1e-6)
    assert 'no attention' in panel.title.lower()


def test_bilinear_lstm_cell_option_selects_the_row_and_changes_the_panel(forward):
  p, _, outputs = forward('bilinear_lstm', attention_region='causal')
  att = np.asarray(outputs['attention'][0], np.float64)  # (K, K, K, K)
  k = att.shape[0]
  default = p.method.attention_panels(outputs, 0, p.config, {})
  chosen = p.method.attention_panels(outputs, 0, p.config, {'cell': (1, 2)})
  # Aggregated map: the sum over all cells' attention rows (eq. 5's mass), same for any cell.
  np.testing.assert_allclose(default[0].heatmap, att.sum(axis=(0, 1)), rtol=1e-5)
  np.testing.assert_allclose(chosen[0].heatmap, default[0].heatmap)
  np.testing.assert_allclose(default[1].heatmap, att[k - 1, k - 1])
  np.testing.assert_allclose(chosen[1].heatmap, att[1, 2])
  assert not np.allclose(chosen[1].heatmap, default[1].heatmap)
  # Causality: cell (1, 2) attends only to rows <= 1 and columns <= 2.
  assert np.all(chosen[1].heatmap[2:] == 0) and np.all(chosen[1].heatmap[:, 3:] == 0)
  assert chosen[1].marker == pytest.approx(((1 + 0.5) / k, (2 + 0.5) / k))
  with pytest.raises(ValueError, match='--cell'):
    p.method.attention_panels(outputs, 0, p.config, {'cell': (k, 0)})


def test_a3m_attribute_maps_aggregate_to_the_models_region_attention(forward):
  # The per-attribute maps m_k are recomputed from the captured V; the model's own m (eq. 5,
  # region_pool 'max') must be their maximum.
  p, _, outputs = forward('a3m')
  k = len(p.config.model.attribute_classes)
  for i in (0, 1):
    panels = p.method.attention_panels(outputs, i, p.config, {})
    assert len(panels) == 1 + k
    stacked = np.stack([q.heatmap for q in panels[1:]])
    np.testing.assert_allclose(stacked.max(0), panels[0].heatmap, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(panels[0].heatmap.ravel(), outputs['region_attention'][i],
                               rtol=1e-6)


def test_a3m_baseline1_says_it_has_no_attention(tiny_config_factory):
  config = tiny_config_factory('a3m', ablation='baseline1')
  # baseline1's outputs have no attention at all; the panel must not need any.
  (panel,) = methods.get('a3m').attention_panels({}, 0, config, {})
  assert panel.heatmap is None and 'no attention' in panel.note


def test_activation_attention_panels_sit_in_each_scales_frame(forward):
  p, _, outputs = forward('activation_attention')
  boxes = np.asarray(outputs['boxes'][1], np.float64)
  panels = p.method.attention_panels(outputs, 1, p.config, {})
  assert len(panels) == p.config.model.num_scales
  for s, q in enumerate(panels):
    frame = (0.0, 0.0, 1.0, 1.0) if s == 0 else tuple(boxes[s - 1])
    np.testing.assert_allclose(q.extent, frame)
    np.testing.assert_allclose(q.boxes, boxes[s:s + 1])
    np.testing.assert_array_equal(q.contour, outputs['mask'][1, s])
    np.testing.assert_allclose(q.heatmap, outputs['attention'][1, s])


def test_focus_discriminate_regions_are_normalised_top_l_in_rank_order(forward):
  p, _, outputs = forward('focus_discriminate')
  panels = p.method.attention_panels(outputs, 0, p.config, {})
  top = p.config.model.num_hybrid
  regions = [q for q in panels if q.boxes is not None]
  assert len(regions) == 1 and regions[0].ranked
  # The model's boxes are pixel edges of the 32x32 input.
  np.testing.assert_allclose(regions[0].boxes, np.asarray(outputs['boxes'][0][:top]) / 32.0)
  np.testing.assert_allclose(panels[0].heatmap, outputs['attention'][0])
