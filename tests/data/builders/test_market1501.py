"""market1501 builder on a tiny archive in the official layout (Market-1501 + Lin et al.)."""

import os
import shutil
import sys

import numpy as np
import scipy.io
from PIL import Image

from fgjax.data.builders.market1501 import Market1501
import builder_testing  # tests/data/builders/builder_testing.py (same directory)

ROOT = 'Market-1501-v15.09.15'
# (folder, file name, height, width); sizes differ so rows can be told apart by shape too.
FILES = [
    ('bounding_box_train', '0002_c1s1_000451_03.jpg', 16, 8),
    ('bounding_box_train', '0002_c3s1_000551_01.jpg', 18, 8),
    ('bounding_box_train', '0007_c2s3_070952_01.jpg', 20, 10),
    ('bounding_box_train', '0010_c6s4_002202_02.jpg', 22, 10),  # written grayscale below
    ('query', '0001_c1s1_001051_00.jpg', 24, 12),
    ('query', '0003_c2s1_000301_00.jpg', 26, 12),
    ('bounding_box_test', '0001_c2s1_000176_01.jpg', 28, 14),
    ('bounding_box_test', '0001_c5s2_018212_02.jpg', 30, 14),
    ('bounding_box_test', '0003_c3s1_000001_01.jpg', 32, 16),
    ('bounding_box_test', '0003_c6s1_000002_01.jpg', 34, 16),  # truncated below
    ('bounding_box_test', '0000_c1s1_000151_01.jpg', 36, 18),  # distractor
    ('bounding_box_test', '-1_c1s1_000401_03.jpg', 38, 18),  # junk
    ('bounding_box_test', '0004_c4s2_000051_01.jpg', 40, 20),  # identity without attributes
]
GRAY, TRUNCATED = '0010_c6s4_002202_02.jpg', '0003_c6s1_000002_01.jpg'
# Field order of the real market_attribute.mat (attributes.py of the release).
MAT_FIELDS = ['age', 'backpack', 'bag', 'handbag', 'downblack', 'downblue', 'downbrown',
              'downgray', 'downgreen', 'downpink', 'downpurple', 'downwhite', 'downyellow',
              'upblack', 'upblue', 'upgreen', 'upgray', 'uppurple', 'upred', 'upwhite',
              'upyellow', 'clothes', 'down', 'up', 'hair', 'hat', 'gender']
# The builder's documented output order (Lin et al.'s list), written out independently here.
OUT_ORDER = ['gender', 'hair', 'up', 'down', 'clothes', 'hat', 'backpack', 'bag', 'handbag',
             'age', 'upblack', 'upwhite', 'upred', 'uppurple', 'upyellow', 'upgray', 'upblue',
             'upgreen', 'downblack', 'downwhite', 'downpink', 'downpurple', 'downyellow',
             'downgray', 'downblue', 'downgreen', 'downbrown']
TRAIN_PIDS, TEST_PIDS = ['0002', '0007', '0010'], ['0001', '0003']


def _codes():
  """pid -> {field: MATLAB code}: age in 1..4, everything else 1/2."""
  rng = np.random.default_rng(5)
  return {pid: {f: int(rng.integers(1, 5 if f == 'age' else 3)) for f in MAT_FIELDS}
          for pid in TRAIN_PIDS + TEST_PIDS}


def _write_tree(base):
  rng = np.random.default_rng(0)
  for folder, name, h, w in FILES:
    os.makedirs(os.path.join(base, ROOT, folder), exist_ok=True)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    path = os.path.join(base, ROOT, folder, name)
    (im.convert('L') if name == GRAY else im).save(path, 'JPEG', quality=90)
    if name == TRUNCATED:
      builder_testing.truncate(path)
  for folder in ('bounding_box_train', 'bounding_box_test', 'query'):
    open(os.path.join(base, ROOT, folder, 'Thumbs.db'), 'wb').write(b'\x00junk')
  open(os.path.join(base, ROOT, 'readme.txt'), 'w').write('Market-1501\n')


def _write_attributes(path):
  codes = _codes()
  def part(pids):
    d = {f: np.array([codes[p][f] for p in pids], np.float64) for f in MAT_FIELDS}
    d['image_index'] = np.array(pids, dtype=object)  # cell array of strings
    return d
  scipy.io.savemat(path, {'market_attribute': {'train': part(TRAIN_PIDS),
                                               'test': part(TEST_PIDS)}})


def _write_manual(base):
  _write_tree(base)
  _write_attributes(os.path.join(base, 'market_attribute.mat'))


def _build(manual, data_dir):
  return builder_testing.build(
      Market1501, manual, data_dir, ('train', 'query', 'gallery'),
      key=lambda e: (int(e['identity']), int(e['camera']), int(e['frame'])))


built = builder_testing.build_fixture(_write_manual, _build)


def _summary(rows):
  return [(int(e['label']), int(e['identity']), int(e['camera']), int(e['sequence']),
           int(e['frame']), int(e['box_index']), e['image'].shape) for e in rows]


def test_splits_labels_ids_cameras(built):
  _, rows = built
  # train label space: pids 2, 7, 10 -> 0, 1, 2; query/gallery: pids 1, 3, 4 -> 0, 1, 2, pid 0 -> 3.
  assert _summary(rows['train']) == [
      (0, 2, 0, 1, 451, 3, (16, 8, 3)), (0, 2, 2, 1, 551, 1, (18, 8, 3)),
      (1, 7, 1, 3, 70952, 1, (20, 10, 3)), (2, 10, 5, 4, 2202, 2, (22, 10, 3))]
  assert _summary(rows['query']) == [
      (0, 1, 0, 1, 1051, 0, (24, 12, 3)), (1, 3, 1, 1, 301, 0, (26, 12, 3))]
  assert _summary(rows['gallery']) == [  # junk (-1) dropped, truncated 0003_c6 skipped
      (3, 0, 0, 1, 151, 1, (36, 18, 3)), (0, 1, 1, 1, 176, 1, (28, 14, 3)),
      (0, 1, 4, 2, 18212, 2, (30, 14, 3)), (1, 3, 2, 1, 1, 1, (32, 16, 3)),
      (2, 4, 3, 2, 51, 1, (40, 20, 3))]
  for split in rows.values():
    for e in split:
      assert e['image'].dtype == np.uint8


def test_attributes_joined_by_identity(built):
  builder, rows = built
  codes = _codes()
  expected = {int(p): np.array([codes[p][f] - 1 for f in OUT_ORDER]) for p in codes}
  for split in rows.values():
    for e in split:
      pid = int(e['identity'])
      want = expected.get(pid, np.full(27, -1))  # pid 0 (distractor) and 4 have no attributes
      np.testing.assert_array_equal(e['attributes'], want)
      assert e['attributes'].dtype == np.int64
  md = builder.info.metadata
  assert md['attribute_mat_fields'] == OUT_ORDER
  assert md['attribute_names'][:10] == ['gender', 'hair', 'sleeve', 'lower_length', 'lower_type',
                                        'hat', 'backpack', 'bag', 'handbag', 'age']
  assert md['attribute_values'][0] == ['male', 'female']
  assert md['attribute_values'][9] == ['young', 'teenager', 'adult', 'old']
  assert md['identities'] == {'train': [2, 7, 10], 'test': [1, 3, 4, 0]}
  assert md['identities_without_attributes'] == [0, 4]


def test_info_and_bad_files(built):
  builder, _ = built
  assert builder.info.features['label'].num_classes == 751
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 4, 'query': 2, 'gallery': 5}
  bad = builder.info.metadata['bad_files']
  assert [os.path.basename(c['file']) for c in bad['converted']] == [GRAY]
  assert [os.path.basename(s['file']) for s in bad['skipped']] == [TRUNCATED]
  assert bad['skipped'][0]['reason'].startswith('unreadable')
  assert 'tensorflow' not in sys.modules


def test_zip_archive_gives_same_result(built, tmp_path):
  manual = tmp_path / 'manual'
  _write_tree(tmp_path / 'tree')
  manual.mkdir()
  builder_testing.pack(manual / f'{ROOT}.zip', tmp_path / 'tree')
  os.makedirs(manual / 'Market-1501_Attribute-master')
  _write_attributes(str(manual / 'Market-1501_Attribute-master' / 'market_attribute.mat'))
  _, rows = _build(manual, str(tmp_path / 'data'))
  for split, expected in built[1].items():
    assert _summary(rows[split]) == _summary(expected)
    for a, b in zip(rows[split], expected):
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['attributes'], b['attributes'])


def test_missing_files_are_named(tmp_path, monkeypatch):
  monkeypatch.setattr(Market1501, 'ATTRIBUTE_URL', None)  # no download attempt offline
  _write_tree(tmp_path / 'manual')
  shutil.rmtree(tmp_path / 'manual' / ROOT / 'query')
  msg = builder_testing.missing_files_message(Market1501, tmp_path / 'manual',
                                              str(tmp_path / 'data'))
  assert os.path.join(str(tmp_path / 'manual'), ROOT, 'query') + '  <- ' in msg
  assert os.path.join(str(tmp_path / 'manual'), 'market_attribute.mat') + '  <- ' in msg
  assert 'bounding_box_train' not in msg and 'vana77/Market-1501_Attribute' in msg


def test_empty_manual_dir_names_everything(tmp_path):
  (tmp_path / 'manual').mkdir()
  msg = builder_testing.missing_files_message(Market1501, tmp_path / 'manual',
                                              str(tmp_path / 'data'))
  for d in ('bounding_box_train', 'query', 'bounding_box_test'):
    assert os.path.join(str(tmp_path / 'manual'), ROOT, d) + '  <- ' in msg
  assert 'market_attribute.mat' in msg


def test_attribute_file_downloaded_when_absent(built, tmp_path, monkeypatch):
  _write_tree(tmp_path / 'manual')
  _write_attributes(str(tmp_path / 'served.mat'))
  urls = builder_testing.fake_downloads(monkeypatch, lambda _, url: str(tmp_path / 'served.mat'))
  builder, rows = _build(tmp_path / 'manual', str(tmp_path / 'data'))
  assert urls == [Market1501.ATTRIBUTE_URL]
  for split, expected in built[1].items():
    assert _summary(rows[split]) == _summary(expected)
    for a, b in zip(rows[split], expected):
      np.testing.assert_array_equal(a['attributes'], b['attributes'])
