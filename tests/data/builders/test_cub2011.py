"""cub2011 builder on a tiny archive in the official CUB_200_2011.tgz layout (4 classes x 2 images).

Every expected value below is written by hand from the files this test writes.
"""

import functools
import os

import numpy as np
import pytest
from PIL import Image

from fgjax.data.builders.cub2011 import Cub2011
import builder_testing  # tests/data/builders/builder_testing.py (same directory)

CLASSES = ['001.Black_footed_Albatross', '002.Laysan_Albatross', '003.Sooty_Albatross',
           '004.Groove_billed_Ani']
# image id: (class id, file, (W, H), is_train, box x y w h)
IMAGES = {
    1: (1, 'Black_Footed_Albatross_0001_796111.jpg', (40, 30), 1, '10.0 5.0 20.0 15.0'),
    2: (1, 'Black_Footed_Albatross_0002_55.jpg', (32, 48), 0, '0.0 0.0 32.0 48.0'),
    3: (2, 'Laysan_Albatross_0001_545.jpg', (50, 40), 1, '30.0 20.0 25.0 30.0'),  # past edge
    4: (2, 'Laysan_Albatross_0002_1027.jpg', (24, 24), 0, '6.0 12.0 6.0 6.0'),
    5: (3, 'Sooty_Albatross_0001_1071.jpg', (36, 20), 0, '9.0 5.0 18.0 10.0'),
    6: (3, 'Sooty_Albatross_0002_796347.jpg', (30, 30), 1, '3.0 3.0 12.0 24.0'),  # grayscale
    7: (4, 'Groove_Billed_Ani_0001_1730.jpg', (44, 22), 1, '11.0 11.0 22.0 11.0'),
    8: (4, 'Groove_Billed_Ani_0002_1500.jpg', (20, 20), 0, '1.0 1.0 2.0 2.0'),  # truncated
}
PART_NAMES = ['back', 'beak', 'belly', 'breast', 'crown', 'forehead', 'left eye', 'left leg',
              'left wing', 'nape', 'right eye', 'right leg', 'right wing', 'tail', 'throat']
VISIBLE_PARTS = {(1, 2): (20.0, 15.0), (1, 7): (10.0, 6.0), (3, 15): (25.0, 10.0)}  # x, y
# The official attributes.txt: 28 runs of one has_* prefix, 312 attributes.
GROUPS = [('has_bill_shape', 9), ('has_wing_color', 15), ('has_upperparts_color', 15),
          ('has_underparts_color', 15), ('has_breast_pattern', 4), ('has_back_color', 15),
          ('has_tail_shape', 6), ('has_upper_tail_color', 15), ('has_head_pattern', 11),
          ('has_breast_color', 15), ('has_throat_color', 15), ('has_eye_color', 14),
          ('has_bill_length', 3), ('has_forehead_color', 15), ('has_under_tail_color', 15),
          ('has_nape_color', 15), ('has_belly_color', 15), ('has_wing_shape', 5), ('has_size', 5),
          ('has_shape', 14), ('has_back_pattern', 4), ('has_tail_pattern', 4),
          ('has_belly_pattern', 4), ('has_primary_color', 15), ('has_leg_color', 15),
          ('has_bill_color', 15), ('has_crown_color', 15), ('has_wing_pattern', 4)]
# Present attribute ids per image (bill_shape = 1-9, wing_color = 10-24, breast_pattern = 55-58,
# bill_length = 150-152, wing_pattern = 309-312).
PRESENT = {1: {1}, 2: {3, 7, 10}, 3: set(), 4: {24, 312}, 5: {55, 309, 310, 311}, 6: {150, 152},
           7: {1, 9}, 8: {2}}
# Expected group classes {group index: class}; 0 elsewhere. Several present -> highest id wins.
EXPECTED_GROUPS = {1: {0: 1}, 2: {0: 7, 1: 1}, 3: {}, 4: {1: 15, 27: 4}, 5: {4: 1, 27: 3},
                   6: {12: 3}, 7: {0: 9}}
SPLITS = {'train': [1, 3, 6, 7], 'test': [2, 4, 5],  # 8 is unreadable: skipped everywhere
          'retrieval_train': [1, 2, 3, 4], 'retrieval_test': [5, 6, 7]}


def write_cub(root, attributes_at='top'):
  """The official tgz layout under root: CUB_200_2011/... and attributes.txt next to it."""
  cub = os.path.join(root, 'CUB_200_2011')
  for d in ('images', 'parts', 'attributes'):
    os.makedirs(os.path.join(cub, d), exist_ok=True)
  rng = np.random.default_rng(0)
  lines = {k: [] for k in ('images', 'labels', 'split', 'boxes', 'parts', 'attrs')}
  for i, (c, name, (w, h), train, box) in IMAGES.items():
    rel = f'{CLASSES[c - 1]}/{name}'
    os.makedirs(os.path.join(cub, 'images', CLASSES[c - 1]), exist_ok=True)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    data = builder_testing.jpeg(image.convert('L') if i == 6 else image)
    with open(os.path.join(cub, 'images', rel), 'wb') as f:
      f.write(data[:len(data) // 2] if i == 8 else data)
    lines['images'].append(f'{i} {rel}')
    lines['labels'].append(f'{i} {c}')
    lines['split'].append(f'{i} {train}')
    lines['boxes'].append(f'{i} {box}')
    for p in range(1, 16):
      x, y = VISIBLE_PARTS.get((i, p), (0.0, 0.0))
      lines['parts'].append(f'{i} {p} {x} {y} {int((i, p) in VISIBLE_PARTS)}')
    for a in range(1, 313):
      extra = ' 0' if (i, a) == (2, 7) else ''  # the odd official line with one more field
      lines['attrs'].append(f'{i} {a} {int(a in PRESENT[i])} {1 + a % 4} 3.5{extra}')
  for key, rel in (('images', 'images.txt'), ('labels', 'image_class_labels.txt'),
                   ('split', 'train_test_split.txt'), ('boxes', 'bounding_boxes.txt'),
                   ('parts', 'parts/part_locs.txt'),
                   ('attrs', 'attributes/image_attribute_labels.txt')):
    with open(os.path.join(cub, rel), 'w') as f:
      f.write('\n'.join(lines[key]) + '\n')
  with open(os.path.join(cub, 'classes.txt'), 'w') as f:
    f.writelines(f'{c} {n}\n' for c, n in enumerate(CLASSES, 1))
  with open(os.path.join(cub, 'parts', 'parts.txt'), 'w') as f:
    f.writelines(f'{p} {n}\n' for p, n in enumerate(PART_NAMES, 1))
  names = [f'{g}::value{j}' for g, n in GROUPS for j in range(1, n + 1)]
  where = {'top': root, 'folder': cub, 'attributes': os.path.join(cub, 'attributes')}
  with open(os.path.join(where[attributes_at], 'attributes.txt'), 'w') as f:
    f.writelines(f'{a} {n}\n' for a, n in enumerate(names, 1))


build = functools.partial(builder_testing.build_by_image_id, Cub2011, splits=SPLITS)


extracted = builder_testing.build_fixture(write_cub, build)


def test_counts_ids_and_splits(extracted):
  builder, splits = extracted
  builder_testing.assert_split_ids(builder, splits, SPLITS)


def test_labels_images_boxes_parts(extracted):
  builder, splits = extracted
  assert builder.info.features['label'].names == [
      'Black_footed_Albatross', 'Laysan_Albatross', 'Sooty_Albatross', 'Groove_billed_Ani']
  labels = {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2, 7: 3}
  boxes = {1: [5 / 30, 10 / 40, 20 / 30, 30 / 40], 2: [0, 0, 1, 1], 3: [0.5, 0.6, 1, 1],
           4: [0.5, 0.25, 0.75, 0.5], 5: [0.25, 0.25, 0.75, 0.75], 6: [0.1, 0.1, 0.9, 0.5],
           7: [0.5, 0.25, 1.0, 0.75]}
  for split in SPLITS:
    for i, e in splits[split].items():
      w, h = IMAGES[i][2]
      assert e['image'].shape == (h, w, 3) and e['image'].dtype == np.uint8
      assert e['label'] == labels[i]
      np.testing.assert_allclose(e['bbox'], boxes[i], atol=1e-6)
      parts = np.zeros((15, 3), np.float32)
      if i == 1:
        parts[1] = [0.5, 0.5, 1]
        parts[6] = [6 / 30, 10 / 40, 1]
      if i == 3:
        parts[14] = [0.25, 0.5, 1]
      np.testing.assert_allclose(e['parts'], parts, atol=1e-6)
  # The grayscale JPEG became RGB with equal channels.
  gray = splits['train'][6]['image'].astype(int)
  assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 3


def test_attributes_and_groups(extracted):
  _, splits = extracted
  for split in SPLITS:
    for i, e in splits[split].items():
      expected = np.zeros(312, np.int64)
      expected[[a - 1 for a in PRESENT[i]]] = 1
      np.testing.assert_array_equal(e['attributes'], expected)
      groups = np.zeros(28, np.int64)
      for k, v in EXPECTED_GROUPS[i].items():
        groups[k] = v
      np.testing.assert_array_equal(e['attribute_groups'], groups)
      assert e['attributes'].shape == (312,) and e['attribute_groups'].shape == (28,)


def test_metadata_and_bad_files(extracted):
  builder, _ = extracted
  meta = builder.info.metadata
  assert sum(n for _, n in GROUPS) == 312 and len(GROUPS) == 28
  assert meta['attribute_group_names'] == [g for g, _ in GROUPS]
  assert meta['attribute_group_num_classes'][:5] == [10, 16, 16, 16, 5]
  assert meta['attribute_group_first_attribute'][:5] == [1, 10, 25, 40, 55]
  assert meta['attribute_group_first_attribute'][-1] == 309
  assert meta['attribute_group_values'][12] == ['value1', 'value2', 'value3']
  assert meta['attribute_names'][0] == 'has_bill_shape::value1'
  assert meta['part_names'] == PART_NAMES
  assert meta['retrieval_train_classes'] == [0, 1]
  bad = meta['bad_files']
  assert bad['num_converted'] == 1 and bad['num_skipped'] == 1  # listed once though read twice
  assert bad['converted'][0]['file'].endswith('Sooty_Albatross_0002_796347.jpg')
  assert bad['skipped'][0]['file'].endswith('Groove_Billed_Ani_0002_1500.jpg')


def test_packed_archive_and_attributes_inside_folder(tmp_path, extracted):
  _, expected = extracted
  src, manual = tmp_path / 'src', tmp_path / 'manual'
  write_cub(str(src))
  manual.mkdir()
  builder_testing.pack(manual / 'CUB_200_2011.tgz', src)  # CUB_200_2011/ and attributes.txt
  _, packed = build(manual, str(tmp_path / 'data_tgz'))
  other = tmp_path / 'other'
  write_cub(str(other), attributes_at='attributes')  # attributes/attributes.txt, as in the README
  _, inside = build(other, str(tmp_path / 'data_inside'))
  for got in (packed, inside):
    builder_testing.assert_same_examples(got, expected)


def test_missing_files_are_named(tmp_path):
  write_cub(str(tmp_path))
  os.remove(tmp_path / 'CUB_200_2011' / 'parts' / 'part_locs.txt')
  os.remove(tmp_path / 'attributes.txt')
  msg = builder_testing.missing_files_message(Cub2011, tmp_path, str(tmp_path / 'data'))
  assert os.path.join(str(tmp_path), 'CUB_200_2011', 'parts', 'part_locs.txt') in msg
  assert os.path.join(str(tmp_path), 'attributes.txt') in msg and 'next to CUB_200_2011/' in msg
  assert 'images.txt' not in msg


def test_nothing_there_names_the_archive(tmp_path, monkeypatch):
  monkeypatch.setattr(Cub2011, 'URLS', ())  # no download attempt in tests
  (tmp_path / 'manual').mkdir()
  (tmp_path / 'manual' / 'README').write_text('unrelated')
  msg = builder_testing.missing_files_message(Cub2011, tmp_path / 'manual', str(tmp_path / 'data'))
  assert os.path.join(str(tmp_path / 'manual'), 'CUB_200_2011.tgz') in msg
  assert 'caltech' in msg


def test_wrong_attribute_list_is_refused(tmp_path):
  write_cub(str(tmp_path))
  with open(tmp_path / 'attributes.txt', 'a') as f:
    f.write('313 has_extra::thing\n')
  with pytest.raises(ValueError, match='expected 312 attributes in 28'):
    build(tmp_path, str(tmp_path / 'data'))


def test_download_fallback_without_tensorflow(tmp_path, monkeypatch, extracted):
  """With nothing in the manual dir the archive is fetched from URLS (a local HTTP server here)."""
  import functools
  import http.server
  import threading
  _, expected = extracted
  src, served = tmp_path / 'src', tmp_path / 'served'
  write_cub(str(src))
  served.mkdir()
  builder_testing.pack(served / 'CUB_200_2011.tgz', src)
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    url = f'http://127.0.0.1:{server.server_address[1]}/CUB_200_2011.tgz'
    monkeypatch.setattr(Cub2011, 'URLS', ('http://127.0.0.1:9/unreachable.tgz', url))
    builder, got = build(tmp_path / 'no_manual', str(tmp_path / 'data'))
  finally:
    server.shutdown()
  assert {s: sorted(v) for s, v in got.items()} == SPLITS
  np.testing.assert_array_equal(got['train'][1]['image'], expected['train'][1]['image'])
  assert 'tensorflow' not in __import__('sys').modules


def test_missing_image_is_named(tmp_path):
  write_cub(str(tmp_path))
  os.remove(tmp_path / 'CUB_200_2011' / 'images' / CLASSES[1] / IMAGES[4][1])
  msg = builder_testing.missing_files_message(Cub2011, tmp_path, str(tmp_path / 'data'))
  assert os.path.join('images', CLASSES[1], IMAGES[4][1]) in msg
  assert IMAGES[3][1] not in msg
