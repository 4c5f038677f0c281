"""The `synthetic_parts/fgvc` renderer: each property the benchmark claims, checked on the pixels
(class structure, boxes, equal-area detail variants, clutter, scale range, determinism, balance)."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fgjax.data import augment, fgvc_render
from fgjax.data import synthetic_render as base
from fgjax.data.synthetic import FgvcConfig, SyntheticParts
from fgjax.default_config import get_base_config


@pytest.fixture(scope='module')
def scene():
  return fgvc_render.FgvcScene(image_size=96, num_base=6, layout_pairs=3, detail_pairs=3,
                               identities_per_class=3, clutter=3, seed=1)


def test_class_table_pairs():
  attrs, kinds, partner = fgvc_render.class_table(20, 8, 7, 5, seed=0)
  assert len(attrs) == 50 and len({tuple(t) for t in attrs}) == 50
  assert kinds.count('base') == 20 and kinds.count('layout') == 16 and kinds.count('detail') == 14
  for c, (kind, p) in enumerate(zip(kinds, partner)):
    if kind == 'base':
      assert p == -1
      continue
    assert partner[p] == c and kinds[p] == kind
    a, b = attrs[c], attrs[p]
    if kind == 'layout':  # the same markings, fore and aft swapped
      assert a[1] != a[2] and (a[0], a[1], a[2], a[3], a[4]) == (b[0], b[2], b[1], b[3], b[4])
    else:  # only the eye detail differs
      assert list(a[:4]) == list(b[:4]) and a[4] != b[4]


def test_deterministic_and_seeded(scene):
  a, b = scene.render(5, 1), scene.render(5, 1)
  assert np.array_equal(a['image'], b['image']) and np.array_equal(a['part_boxes'],
                                                                   b['part_boxes'])
  other = fgvc_render.FgvcScene(image_size=96, num_base=6, layout_pairs=3, detail_pairs=3,
                                identities_per_class=3, clutter=3, seed=2)
  assert not np.array_equal(a['image'], other.render(5, 1)['image'])


def _box_of(mask):
  rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
  s = mask.shape[0]
  return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]) / s


def test_boxes_follow_the_masks(scene):
  for identity in range(0, scene.num_identities, 5):
    r = scene.render(identity, 0)
    np.testing.assert_allclose(r['bbox'], _box_of(r['mask']), atol=1e-6)
    assert r['part_boxes'].shape == (5, 4)
    for g, part in enumerate(r['parts']):
      if part.any():
        np.testing.assert_allclose(r['part_boxes'][g], _box_of(part), atol=1e-6)
        # Markings lie on the object: inside its box.
        assert (r['part_boxes'][g][:2] >= r['bbox'][:2] - 1e-6).all()
        assert (r['part_boxes'][g][2:] <= r['bbox'][2:] + 1e-6).all()
    assert r['label'] == identity // scene.identities_per_class
    np.testing.assert_array_equal(r['attributes'], scene.attributes[r['label']])


def test_detail_variants_have_equal_area_and_differ_in_arrangement():
  """The eye variants cover the same area in the same colour: only their arrangement differs."""
  g = np.linspace(-0.4, 0.4, 1601)
  u, v = np.meshgrid(g, g, indexing='ij')
  along = fgvc_render.marking_masks(u, v, [0, 0, 0, 0, 0], fgvc_render.PART_RADIUS)[4]
  across = fgvc_render.marking_masks(u, v, [0, 0, 0, 0, 1], fgvc_render.PART_RADIUS)[4]
  assert along.sum() == across.sum()
  assert abs(along.sum() * (0.8 / 1600) ** 2 - 2 * math.pi * fgvc_render.EYE_RADIUS ** 2) < 1e-3
  assert np.ptp(np.nonzero(along.any(1))[0]) > np.ptp(np.nonzero(along.any(0))[0])  # along u
  assert np.ptp(np.nonzero(across.any(0))[0]) > np.ptp(np.nonzero(across.any(1))[0])


def test_layout_markings_sit_in_alike_surroundings():
  """fore and aft are mirror images across the body's centre (u -> -u), inside the body."""
  (fu, fv), (au, av) = fgvc_render.PART_CENTRES['fore'], fgvc_render.PART_CENTRES['aft']
  assert (fu, fv) == (-au, av)
  g = np.linspace(-1.0, 1.0, 401)
  u, v = np.meshgrid(g, g, indexing='ij')
  for variant in range(len(base.VARIANTS)):
    m = fgvc_render.marking_masks(u, v, [0, variant, variant, 0, 0], fgvc_render.PART_RADIUS)
    body = (u / base.BODY_AXES[0]) ** 2 + (v / base.BODY_AXES[1]) ** 2 <= 1.0
    assert not (m[1] & ~body).any() and not (m[2] & ~body).any()


def test_clutter_decoys_carry_markings_away_from_the_object(scene):
  clean = fgvc_render.FgvcScene(image_size=96, num_base=6, layout_pairs=3, detail_pairs=3,
                                identities_per_class=3, clutter=0, seed=1)
  with_decoys = 0
  for identity in range(scene.num_identities):
    r = scene.render(identity, 0)
    assert not (r['decoys'] & r['mask']).any()  # the object is drawn on top
    with_decoys += r['decoys'].sum() > 0.01 * r['decoys'].size
    assert not clean.render(identity, 0)['decoys'].any()
  assert with_decoys >= 0.9 * scene.num_identities


def test_object_scale_spans_the_range():
  sc = fgvc_render.FgvcScene(image_size=128, num_base=4, layout_pairs=0, detail_pairs=0,
                             identities_per_class=40, clutter=0, rotation_deg=0.0,
                             deformation=0.0, seed=3)
  lengths = []
  for identity in range(sc.num_identities):
    r = sc.render(identity, 0)
    box = r['bbox']
    lengths.append(max(box[2] - box[0], box[3] - box[1]))
  lengths = np.array(lengths)
  # Unrotated objects: the box's long side is the object's length (the default object_scale,
  # 0.25-0.6 of the side), clipped at the image border only by rounding.
  assert lengths.min() < 0.3 and lengths.max() > 0.5
  assert lengths.min() >= 0.24 and lengths.max() <= 0.62


def test_builder_config_balance_and_features(tmp_path):
  cfg = FgvcConfig(name='fgvc_test', image_size=64, num_base=2, layout_pairs=1, detail_pairs=1,
                   train_identities_per_class=2, test_identities_per_class=1, num_cameras=2)
  keys = cfg.split_keys()
  labels = [i // cfg.identities_per_class for i, _ in keys['train']]
  assert np.bincount(labels).tolist() == [4] * cfg.num_classes
  assert len(keys['test']) == cfg.num_classes * 2
  builder = SyntheticParts(config='fgvc_tiny', data_dir=str(tmp_path))
  builder.download_and_prepare()
  ex = builder.as_data_source()['train'][0]
  assert ex['part_boxes'].shape == (5, 4) and ex['attributes'].shape == (5,)
  meta = builder.info.metadata
  assert len(meta['pair_kind']) == len(meta['partner']) == builder.info.features['label'].num_classes


def test_crop_to_a_part_box_with_margin():
  cfg = get_base_config().dataset
  cfg.crop_to_bbox, cfg.crop_box, cfg.crop_margin = True, 'part_boxes:1', 0.5
  cfg.resize, cfg.image_size, cfg.random_crop = 'none', 8, False
  image = np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3)
  boxes = np.zeros((2, 4), np.float32)
  boxes[1] = [0.25, 0.5, 0.45, 0.7]  # rows 10-18, cols 20-28; + 50%: rows 6-22, cols 16-32
  box = augment.crop_box({'part_boxes': boxes}, cfg)
  np.testing.assert_allclose(box, [0.15, 0.4, 0.55, 0.8], atol=1e-6)
  out = augment.preprocess({'image': image, 'part_boxes': boxes,
                            'bbox': np.array([0.0, 0.0, 1.0, 1.0], np.float32)}, cfg, None)
  crop = image[6:22, 16:32]
  np.testing.assert_array_equal(out['image'], crop[4:12, 4:12])  # the centre 8x8 of the crop
  with pytest.raises(ValueError, match="no field 'parts'"):
    cfg.crop_box = 'parts:0'
    augment.crop_box({'part_boxes': boxes}, cfg)
  with pytest.raises(ValueError, match='FIELD:ROW with ROW < 2'):
    cfg.crop_box = 'part_boxes:2'
    augment.crop_box({'part_boxes': boxes}, cfg)
  with pytest.raises(ValueError, match='name a row'):
    cfg.crop_box = 'part_boxes'
    augment.crop_box({'part_boxes': boxes}, cfg)


def test_docs_picture_command(tmp_path):
  """`python docs/synthetic_grid.py --config=fgvc` (docs/benchmark.md), on the tiny config."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = tmp_path / 'grid.png'
  subprocess.run([sys.executable, os.path.join(root, 'docs', 'synthetic_grid.py'),
                  '--config=fgvc_tiny', f'--out={out}'], check=True, capture_output=True,
                 cwd=root)
  grid = np.asarray(Image.open(out))
  assert grid.shape == (5 * 64, 4 * 64, 3)  # 5 classes; fgvc_tiny has 4 train views per class
