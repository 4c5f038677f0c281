"""Layout of the evaluation plots and attention overlays: after saving, every drawn text (rotated
class names, axis labels, colour-bar labels, titles) lies inside the figure, the overlay title does
not overlap the first panel, and a3m's panels name the dataset's attribute groups and values."""

import copy
import dataclasses
import io

import numpy as np
import pytest
from matplotlib.colorbar import Colorbar
from matplotlib.text import Text
from PIL import Image

from fgjax import methods, predict
from fgjax.evaluation import plots
from fgjax.visualisation import overlays

LONG_NAMES = [f'{i:03d}.Chevrolet Silverado 2500HD Regular Cab 2012' for i in range(60)]


def _saved(fig, tmp_path, name='x.png'):
  """Save (which runs the layout), check the PNG is the figure's documented size, and return the
  renderer of the saved layout."""
  path = tmp_path / name
  fig.savefig(path, dpi=fig.dpi)
  with Image.open(path) as im:
    assert im.size == (round(fig.bbox.width), round(fig.bbox.height))
  return fig.canvas.get_renderer()


def _tick_labels(ax, axis_name):
  """The tick labels matplotlib draws: visible, non-empty, at a tick inside the view."""
  axis = getattr(ax, f'{axis_name}axis')
  lo, hi = sorted(axis.get_view_interval())
  eps = (hi - lo) * 1e-9
  return [label for tick in axis.get_major_ticks() + axis.get_minor_ticks()
          if lo - eps <= tick.get_loc() <= hi + eps
          for label in (tick.label1, tick.label2) if label.get_visible() and label.get_text()]


def _drawn_texts(fig):
  """Every text that is drawn: tick labels in view, and every other visible non-empty text."""
  all_ticks = {id(label) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
               for tick in axis.get_major_ticks() + axis.get_minor_ticks()
               for label in (tick.label1, tick.label2)}
  drawn = [label for ax in fig.axes for a in 'xy' for label in _tick_labels(ax, a)]
  return drawn + [t for t in fig.findobj(Text)
                  if id(t) not in all_ticks and t.get_visible() and t.get_text()]


def _outside(fig, renderer, texts):
  """The texts whose window extent leaves the figure (half a pixel of tolerance)."""
  box = fig.bbox
  out = []
  for t in texts:
    e = t.get_window_extent(renderer)
    if e.x0 < box.x0 - 0.5 or e.y0 < box.y0 - 0.5 or e.x1 > box.x1 + 0.5 or e.y1 > box.y1 + 0.5:
      out.append((t.get_text()[:40], tuple(np.round(e.extents, 1))))
  return out


def _overlap(a, b) -> bool:
  return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _colorbars(fig):
  return [a for a in fig.axes if isinstance(getattr(a, '_colorbar', None), Colorbar)]


def _predictions(num_classes, n=600):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, num_classes, n)
  return np.where(rng.random(n) < 0.6, labels, rng.integers(0, num_classes, n)), labels


@pytest.mark.parametrize('num_classes', [12, 50])
def test_per_class_accuracy_keeps_class_names_and_x_label_inside(num_classes, tmp_path):
  pred, labels = _predictions(num_classes)
  fig = plots.per_class_accuracy_figure(pred, labels, num_classes, LONG_NAMES,
                                        title='per-class accuracy, a3m on cub2011 test')
  renderer = _saved(fig, tmp_path)
  (ax,) = fig.axes
  names = _tick_labels(ax, 'x')
  assert len(names) == num_classes and all('Silverado' in t.get_text() for t in names)
  assert _outside(fig, renderer, names) == []
  assert _outside(fig, renderer, [ax.xaxis.label, ax.yaxis.label, ax.title]) == []
  assert _outside(fig, renderer, _drawn_texts(fig)) == []
  assert ax.xaxis.label.get_window_extent(renderer).y0 >= 0
  assert not any(_overlap(ax.xaxis.label.get_window_extent(renderer), t.get_window_extent(
      renderer)) for t in names)  # the x label sits below the rotated names


def test_per_class_accuracy_shortens_very_long_names(tmp_path):
  names = ['x' * 200 + str(i) for i in range(10)]
  pred, labels = _predictions(10)
  fig = plots.per_class_accuracy_figure(pred, labels, 10, names)
  renderer = _saved(fig, tmp_path)
  shown = [t.get_text() for t in _tick_labels(fig.axes[0], 'x')]
  assert all(len(t) == plots.MAX_NAME and t.endswith('\u2026') for t in shown)
  assert _outside(fig, renderer, _drawn_texts(fig)) == []


def test_confusion_matrix_keeps_names_and_colour_bar_labels_inside(tmp_path):
  pred, labels = _predictions(60)
  fig = plots.confusion_matrix_figure(pred, labels, 60, LONG_NAMES, title='a3m on cub2011 test')
  renderer = _saved(fig, tmp_path)
  (cbar_ax,) = _colorbars(fig)
  cbar_texts = [cbar_ax.yaxis.label] + _tick_labels(cbar_ax, 'y')
  assert cbar_ax.yaxis.label.get_text() == 'fraction of the true class'
  assert len(cbar_texts) >= 3
  assert _outside(fig, renderer, cbar_texts) == []
  assert _outside(fig, renderer, _drawn_texts(fig)) == []


def test_cmc_and_retrieval_keep_their_texts_inside(tmp_path):
  fig = plots.cmc_figure(np.linspace(0.4, 1.0, 50),
                         'CMC (single_query), a3m on market1501 query->gallery, mAP 0.512')
  assert _outside(fig, _saved(fig, tmp_path), _drawn_texts(fig)) == []
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
  fig = plots.retrieval_figure(
      images, [images * 3] * 3, [[True, False, True] * 3] * 3,
      'retrieval (category_features, cosine), a3m on cub2011 retrieval_test: query + top-8')
  renderer = _saved(fig, tmp_path, 'r.png')
  assert _outside(fig, renderer, _drawn_texts(fig)) == []
  title = fig._suptitle.get_window_extent(renderer)  # pylint: disable=protected-access
  legend = fig.legends[0].get_window_extent(renderer)
  assert not _overlap(title, legend)
  assert not any(_overlap(title, a.get_window_extent(renderer)) for a in fig.axes)
  assert not any(_overlap(legend, a.get_window_extent(renderer)) for a in fig.axes)


def _panels(n):
  rng = np.random.default_rng(0)
  return [overlays.Panel('attribute-guided attention m\n(max over k of m_k, eq. 5)',
                         heatmap=rng.random((4, 4)), colorbar_label='m')] + [
      overlays.Panel(f'has_underparts_color\npredicted: multi-colored\nm_k = sigmoid(V a_k)\n'
                     f's_k = 0.1{k}', heatmap=rng.random((4, 4)), colorbar_label='m_k')
      for k in range(n - 1)]


@pytest.mark.parametrize('num_panels', [1, 4, 6])
def test_overlay_title_clears_the_first_panel_and_labels_stay_inside(num_panels, tmp_path):
  image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  fig = overlays.render(image, _panels(num_panels),
                        '200.Common_Yellowthroat  p=0.93   (a3m, step 123456)')
  renderer = _saved(fig, tmp_path)
  assert (fig.bbox.width, fig.bbox.height) == overlays.figure_size_px(num_panels)
  title = fig._suptitle.get_window_extent(renderer)  # pylint: disable=protected-access
  first = fig.axes[0]
  assert not _overlap(title, first.get_window_extent(renderer))
  assert not _overlap(title, first.title.get_window_extent(renderer))
  assert not any(_overlap(title, a.get_window_extent(renderer)) for a in fig.axes)
  assert not any(_overlap(title, a.title.get_window_extent(renderer)) for a in fig.axes)
  cbars = _colorbars(fig)
  assert len(cbars) == num_panels
  labels = [c.yaxis.label for c in cbars] + [t for c in cbars for t in _tick_labels(c, 'y')]
  assert _outside(fig, renderer, labels) == []
  assert _outside(fig, renderer, _drawn_texts(fig)) == []


# ---------------------------------------------------------------------------------------------
# a3m's panels: the dataset's attribute group and value names
# ---------------------------------------------------------------------------------------------

def _a3m_outputs(classes, predicted, locations=16, dim=8):
  """Made-up a3m outputs for one image whose group k predicts class `predicted[k]`."""
  rng = np.random.default_rng(0)
  logits = np.concatenate([np.eye(n)[p] * 5.0 for n, p in zip(classes, predicted)])
  v = rng.random((1, locations, dim))
  return {'region_attention': rng.random((1, locations)), 'attribute_logits': logits[None],
          'attribute_features': rng.normal(size=(1, len(classes), dim)),
          'attribute_scores': rng.random((1, len(classes))),
          'intermediates': {'category_conv': {'__call__': (v,)},
                            'category_conv_bn': {'__call__': (v,)}}}


CUB_LIKE = {  # cub2011's layout: class 0 = none, class j = the group's value j - 1
    'attribute_group_names': ['has_bill_shape', 'has_wing_color', 'has_eye_color'],
    'attribute_group_values': [['curved', 'dagger'], ['blue', 'brown'], ['black', 'red']]}


@pytest.mark.parametrize('metadata,heads,values', [
    (CUB_LIKE, ['has_bill_shape', 'has_wing_color', 'has_eye_color'],
     ['predicted: dagger', 'predicted: none', 'predicted: black']),
    ({'attribute_names': ['speed', 'doors', 'seats'],  # compcars' layout
      'attribute_class_names': [['<160', '[160,180)', '>=180'], ['2', '3', '4'], ['4', '5', '7']]},
     ['speed', 'doors', 'seats'], ['predicted: >=180', 'predicted: 2', 'predicted: 5']),
    ({'part_groups': ['head', 'wing', 'tail'], 'variants': ['disc', 'ring', 'bar']},  # synthetic
     ['head', 'wing', 'tail'], ['predicted: bar', 'predicted: disc', 'predicted: ring']),
    ({}, ['attribute 0', 'attribute 1', 'attribute 2'],
     ['predicted value 2', 'predicted value 0', 'predicted value 1']),
    ({'attribute_group_names': ['only', 'two']}, ['attribute 0', 'attribute 1', 'attribute 2'],
     ['predicted value 2', 'predicted value 0', 'predicted value 1']),  # another field's groups
])
def test_a3m_panels_name_the_attribute_groups_and_values(tiny_config_factory, metadata, heads,
                                                        values):
  config = tiny_config_factory('a3m')
  classes = tuple(config.model.attribute_classes)
  assert classes == (3, 3, 3)
  predicted = (2, 0, 1)
  outputs = _a3m_outputs(classes, predicted)
  panels = methods.get('a3m').attention_panels(outputs, 0, config, {'metadata': metadata})
  assert len(panels) == 4
  for panel, head, value in zip(panels[1:], heads, values):
    lines = panel.title.split('\n')
    assert lines[0] == head and lines[1] == value, panel.title
  # No options at all (older callers): the numbers.
  plain = methods.get('a3m').attention_panels(outputs, 0, config, {})
  assert plain[1].title.split('\n')[:2] == ['attribute 0', 'predicted value 2']


def test_a3m_without_attribute_labels_names_nothing(tiny_config_factory):
  config = tiny_config_factory('a3m', attribute_field='')
  outputs = _a3m_outputs((3, 3, 3), (1, 1, 1))
  panels = methods.get('a3m').attention_panels(outputs, 0, config, {'metadata': CUB_LIKE})
  assert [p.title.split('\n')[0] for p in panels[1:]] == ['attribute 0', 'attribute 1',
                                                          'attribute 2']


@pytest.fixture(scope='module')
def predictor(trained_workdir, one_device_mesh):
  return predict.load(trained_workdir('bcnn'), mesh=one_device_mesh, log=lambda m: None)


def test_predict_passes_the_dataset_metadata_to_the_panels(predictor, tmp_path):
  seen = []
  real = predictor.method.attention_panels

  def spy(outputs, index, config, options):
    seen.append(options)
    return real(outputs, index, config, options)

  p = copy.copy(predictor)
  p.method = dataclasses.replace(predictor.method, attention_panels=spy)
  path = tmp_path / 'img.png'
  Image.fromarray(np.asarray(p.exp.source('test')[0]['image'])).save(path)
  predict.run(p, [str(path)], overlays_dir=str(tmp_path / 'out'), out=io.StringIO(),
              err=io.StringIO())
  assert len(seen) == 1
  assert seen[0]['metadata']['part_groups'] == ['head', 'wing', 'tail']
  assert 'variants' in seen[0]['metadata']
