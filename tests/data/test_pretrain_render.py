"""The `synthetic_parts/pretrain` renderer and builder configs: determinism, class structure, boxes,
scale range, shapes disjoint from the benchmark's markings, and the tfds build."""

import dataclasses
import math

import numpy as np
import pytest

from fgjax.data import pretrain_render as pr
from fgjax.data import synthetic_render as base
from fgjax.data.synthetic import PretrainConfig, SyntheticParts


@pytest.fixture(scope='module')
def scene():
  return pr.PretrainScene(image_size=96, num_shapes=8, num_textures=6, instances_per_class=3,
                          seed=1)


def test_deterministic_and_seeded(scene):
  a, b = scene.render(17), scene.render(17)
  assert np.array_equal(a['image'], b['image']) and np.array_equal(a['mask'], b['mask'])
  scene.render(3)  # order independent
  assert np.array_equal(scene.render(17)['image'], a['image'])
  other = pr.PretrainScene(image_size=96, instances_per_class=3, seed=2)
  assert not np.array_equal(a['image'], other.render(17)['image'])
  assert not np.array_equal(a['image'], scene.render(17, camera=1)['image'])


def test_classes_are_distinct_shape_texture_pairs(scene):
  pairs = [scene.shape_texture(c) for c in range(scene.num_classes)]
  assert len(set(pairs)) == scene.num_classes == 48
  assert {p[0] for p in pairs} == set(range(8)) and {p[1] for p in pairs} == set(range(6))
  assert pairs[7] == (1, 1)  # c = (c // num_textures, c % num_textures)
  assert len(set(scene.class_names)) == 48 and scene.class_names[0] == 'hexagram-solid'
  assert len(set(pr.SHAPES)) == 8 and len(set(pr.TEXTURES)) == 6
  for i in range(0, scene.num_instances, 7):
    assert scene.render(i)['label'] == i // scene.instances_per_class


def test_split_keys_labels_and_balance():
  cfg = PretrainConfig(name='pretrain_test', image_size=32, num_shapes=2, num_textures=3,
                       train_per_class=5, test_per_class=2)
  keys = cfg.split_keys()
  assert set(keys) == {'train', 'test'}
  per_class = 7
  for name, n in (('train', 5), ('test', 2)):
    assert all(cam == 0 for _, cam in keys[name])
    labels = [i // per_class for i, _ in keys[name]]
    assert np.bincount(labels).tolist() == [n] * cfg.num_classes
  assert not {i for i, _ in keys['train']} & {i for i, _ in keys['test']}
  assert sorted(i for i, _ in keys['train'] + keys['test']) == list(range(6 * per_class))
  assert all(i % per_class < 5 for i, _ in keys['train'])
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.seed = 3
  with pytest.raises(ValueError):
    PretrainConfig(name='bad', num_shapes=9)
  with pytest.raises(ValueError):
    PretrainConfig(name='bad', test_per_class=0)


def _box_of(mask):
  rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
  return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]) / mask.shape[0]


def test_bbox_follows_the_mask_and_scale_spans_the_range():
  sc = pr.PretrainScene(image_size=128, num_shapes=8, num_textures=1, instances_per_class=25)
  sides = []
  for i in range(sc.num_instances):
    r = sc.render(i)
    assert r['image'].dtype == np.uint8 and r['image'].shape == (128, 128, 3)
    assert r['bbox'].dtype == np.float32 and r['mask'].dtype == bool
    np.testing.assert_allclose(r['bbox'], _box_of(r['mask']), atol=1e-6)
    box = r['bbox']
    sides.append(max(box[2] - box[0], box[3] - box[1]))
  sides = np.array(sides)
  # The circumscribed diameter is 35-80% of the side; a box's long side is between
  # diameter / sqrt(2) (a thin shape at 45 degrees) and the diameter (+ 1 px rounding).
  assert sides.max() <= 0.8 + 1 / 128 and sides.min() >= 0.35 / math.sqrt(2)
  assert sides.min() < 0.4 and sides.max() > 0.7


def test_textures_are_distinct_patterns_in_image_coordinates():
  y, x = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5, indexing='ij')
  masks = {name: pr.texture_mask(k, x, y, 8.0, (0.3, 0.6)) for k, name in enumerate(pr.TEXTURES)}
  assert not masks['solid'].any()
  for name, m in masks.items():
    if name != 'solid':
      assert 0.25 <= m.mean() <= 0.6, name  # both colours show
  assert (masks['hstripes'] == masks['hstripes'][:, :1]).all()  # constant along x
  assert (masks['vstripes'] == masks['vstripes'][:1]).all()  # constant along y
  d = masks['dstripes']
  assert (d[1:, :-1] == d[:-1, 1:]).all() and not (d[1:] == d[:-1]).all()
  c = masks['checker']
  assert (c[:, 4:] != c[:, :-4]).all() and (c[4:] != c[:-4]).all()
  assert len({m.tobytes() for m in masks.values()}) == len(pr.TEXTURES)


def test_distractors_are_drawn_behind():
  clean = pr.PretrainScene(image_size=64, num_shapes=2, num_textures=2, instances_per_class=2,
                           distractors=0)
  busy = pr.PretrainScene(image_size=64, num_shapes=2, num_textures=2, instances_per_class=2,
                          distractors=3)
  covered = 0
  for i in range(clean.num_instances):
    a, b = clean.render(i), busy.render(i)
    # The same main shape, on top: identical pixels on its mask, distractors elsewhere.
    assert np.array_equal(a['mask'], b['mask'])
    assert np.array_equal(a['image'][a['mask']], b['image'][b['mask']])
    outside = (a['image'] != b['image']).any(-1) & ~a['mask']
    covered += outside.mean()
  assert covered / clean.num_instances > 0.02


def test_shapes_are_not_the_benchmark_markings():
  """At equal area (every benchmark variant has the area of its disc), centred on the shape's
  centroid, at the best of 24 rotations: IoU < 0.8 with every disc/ring/bar/triangle/square."""
  g = np.linspace(-1.5, 1.5, 481)
  step = g[1] - g[0]
  a, b = np.meshgrid(g, g, indexing='ij')
  assert not set(pr.SHAPES) & set(base.VARIANTS)
  for k, name in enumerate(pr.SHAPES):
    m = pr.shape_mask(k, a, b)
    assert np.hypot(a[m], b[m]).max() <= 1.0 + step, name  # unit circumradius
    ys, xs = np.nonzero(m)
    ca, cb = g[0] + ys.mean() * step, g[0] + xs.mean() * step
    radius = math.sqrt(m.sum() * step * step / math.pi)
    for v, variant in enumerate(base.VARIANTS):
      best = 0.0
      for rot in range(24):
        t = math.pi * rot / 24
        c, s = math.cos(t), math.sin(t)
        vm = base.marking_mask(v, c * (a - ca) + s * (b - cb), c * (b - cb) - s * (a - ca),
                               radius)
        best = max(best, (m & vm).sum() / (m | vm).sum())
      assert best < 0.8, (name, variant, best)


def test_build_pretrain_tiny(tmp_path):
  builder = SyntheticParts(config='pretrain_tiny', data_dir=tmp_path)
  builder.download_and_prepare()
  cfg = builder.builder_config
  assert cfg.num_classes == 6
  assert set(builder.info.splits) == {'train', 'test'}
  sources = builder.as_data_source()
  assert set(sources) == {'train', 'test'}
  assert len(sources['train']) == 24 and len(sources['test']) == 12
  names = builder.info.features['label'].names
  assert names == ['hexagram-solid', 'hexagram-hstripes', 'plus-solid', 'plus-hstripes',
                   'crescent-solid', 'crescent-hstripes']
  scene = cfg.scene()
  for split, n in (('train', 4), ('test', 2)):
    examples = sources[split].__getitems__(list(range(len(sources[split]))))
    assert np.bincount([int(e['label']) for e in examples]).tolist() == [n] * 6
    for ex in examples:
      assert set(ex) == {'image', 'label', 'identity', 'camera', 'bbox'}
      assert ex['image'].shape == (64, 64, 3) and ex['image'].dtype == np.uint8
      assert int(ex['camera']) == 0
      assert int(ex['identity']) // 6 == int(ex['label'])
      assert (int(ex['identity']) % 6 < 4) == (split == 'train')
      assert ex['bbox'].dtype == np.float32 and ex['bbox'].shape == (4,)
    r = scene.render(int(examples[0]['identity']))
    np.testing.assert_array_equal(examples[0]['image'], r['image'])
    np.testing.assert_array_equal(examples[0]['bbox'], r['bbox'])
