"""CompCars builder on a tiny archive in the official layout: 3 models of 2 makes, every value by hand."""

import io
import os
import shutil
import zipfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fgjax.data.builders import common
from fgjax.data.builders.compcars import CompCars
import builder_testing  # tests/data/builders/builder_testing.py (same directory)

NAN = np.nan
# relative path -> (width, height, colour or None for grayscale, label text or None)
TRAIN = [
    ('3/4/2012/aa01.jpg', 40, 30, (200, 30, 30), '1\n1\n1 1 40 30\n'),
    ('1/9/2010/bb01.jpg', 50, 20, (30, 200, 30), '4\n1\n11 3 35 18\n'),
    ('1/11/unknown/cc01.jpg', 32, 24, (30, 30, 200), '-1\n1\n5 7 20 24\n'),
    ('1/9/2011/gray01.jpg', 24, 16, None, '3\n1\n1 1 12 8\n'),
]
TEST = [
    ('3/4/2013/dd01.jpg', 36, 28, (200, 200, 30), '2\n1\n10 8 45 28\n'),  # x2 > width: clipped
    ('1/11/2014/ff01.jpg', 30, 30, (30, 200, 200), None),  # no label file
]
TRUNCATED = '1/9/2010/ee01.jpg'  # in test.txt (line 1), unreadable
MISSING = '1/11/2013/missing.jpg'  # in train.txt (line 4), no file
ATTRIBUTES_TXT = """model_id maximum_speed displacement door_number seat_number type
2 180 1.6 3 5 4
4 200 2.0 5 5 2
9 0 1.8 4 5 3
11 250 3.0 0 4 0
"""
TYPES = ['MPV', 'SUV', 'sedan', 'hatchback', 'minibus', 'fastback', 'estate', 'pickup',
         'hardtop convertible', 'sports', 'crossover', 'convertible']

# Expected, by hand. Classes in increasing model_id: 4 -> 0, 9 -> 1, 11 -> 2.
# Models 9 and 11 share the name 'Audi A4L', so both get their id appended.
NAMES = ['宝马 X1', 'Audi A4L [9]', 'Audi A4L [11]']
# doors known in the subset {4, 5}, seats {4, 5} (model 2 with 3 doors is not in the subset);
# speed edges 160/180/200/220/250, displacement edges 1.4/1.7/2.1/2.6/3.5, type - 1.
ATTR = {4: ([200, 2.0, 5, 5, 2], [3, 2, 1, 1, 1]),
        9: ([NAN, 1.8, 4, 5, 3], [-1, 2, 0, 1, 2]),
        11: ([250, 3.0, NAN, 4, NAN], [5, 4, -1, 0, -1])}
# split -> index -> (label, model_id, make_id, year, viewpoint, bbox, (h, w))
EXPECTED = {
    'train': {0: (0, 4, 3, 2012, 1, [0, 0, 1, 1], (30, 40)),
              1: (1, 9, 1, 2010, 4, [0.1, 0.2, 0.9, 0.7], (20, 50)),
              2: (2, 11, 1, -1, -1, [0.25, 0.125, 1, 0.625], (24, 32)),
              3: (1, 9, 1, 2011, 3, [0, 0, 0.5, 0.5], (16, 24))},
    'test': {0: (0, 4, 3, 2013, 2, [0.25, 0.25, 1, 1], (28, 36)),
             2: (2, 11, 1, 2014, -1, [0, 0, 1, 1], (30, 30))},
}
COLOURS = {'train': {0: (200, 30, 30), 1: (30, 200, 30), 2: (30, 30, 200)},
           'test': {0: (200, 200, 30), 2: (30, 200, 200)}}


def _cell(strings, shape):
  arr = np.empty(len(strings), dtype=object)
  arr[:] = strings
  return arr.reshape(shape)


def _jpeg(w, h, colour):
  return builder_testing.jpeg(
      Image.new('L', (w, h), 128) if colour is None else Image.new('RGB', (w, h), colour))


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb' if isinstance(data, bytes) else 'w') as f:
    f.write(data)


def _make_release(base):
  """base/data/... in the official layout."""
  root = os.path.join(base, 'data')
  for rel, w, h, colour, label in TRAIN + TEST:
    _write(os.path.join(root, 'image', rel), _jpeg(w, h, colour))
    if label is not None:
      _write(os.path.join(root, 'label', rel[:-4] + '.txt'), label)
  _write(os.path.join(root, 'image', TRUNCATED), _jpeg(20, 20, (9, 9, 9))[:200])
  _write(os.path.join(root, 'label', TRUNCATED[:-4] + '.txt'), '1\n1\n1 1 5 5\n')
  os.makedirs(os.path.join(root, 'misc'))
  models = [''] * 12
  models[3], models[8], models[10], models[1] = '宝马 X1 ', 'Audi A4L', 'Audi A4L', 'Benz C'
  scipy.io.savemat(os.path.join(root, 'misc', 'make_model_name.mat'), {
      'make_names': _cell(['Audi', 'Benz', 'BMW'], (3, 1)), 'model_names': _cell(models, (12, 1))})
  scipy.io.savemat(os.path.join(root, 'misc', 'car_type.mat'), {'types': _cell(TYPES, (1, 12))})
  _write(os.path.join(root, 'misc', 'attributes.txt'), ATTRIBUTES_TXT)
  split = os.path.join(root, 'train_test_split', 'classification')
  train = [r[0] for r in TRAIN] + [MISSING]
  test = [TEST[0][0], TRUNCATED, TEST[1][0]]
  _write(os.path.join(split, 'train.txt'), '\n'.join(train) + '\n')
  _write(os.path.join(split, 'test.txt'), '\n'.join(test) + '\n\n')
  return root


def _prepare(manual, data_dir):
  return builder_testing.build(CompCars, manual, data_dir, ('train', 'test'))


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  manual = tmp_path_factory.mktemp('manual')
  _make_release(str(manual))
  return manual, _prepare(manual, str(tmp_path_factory.mktemp('tfds')))


def test_counts_labels_and_features(built):
  _, (builder, rows) = built
  info = builder.info
  assert builder.name == 'compcars' and os.path.basename(os.path.dirname(builder.data_dir)) == 'compcars'
  assert info.features['label'].names == NAMES
  assert {s: len(r) for s, r in rows.items()} == {'train': 4, 'test': 2}
  assert {s: int(v.num_examples) for s, v in info.splits.items()} == {'train': 4, 'test': 2}
  for split, expected in EXPECTED.items():
    by_index = {int(r['index']): r for r in rows[split]}
    assert sorted(by_index) == sorted(expected)
    for index, (label, model, make, year, view, bbox, hw) in expected.items():
      r = by_index[index]
      assert (int(r['label']), int(r['model_id']), int(r['make_id'])) == (label, model, make)
      assert (int(r['year']), int(r['viewpoint'])) == (year, view)
      assert r['image'].shape == hw + (3,) and r['image'].dtype == np.uint8
      assert r['bbox'].dtype == np.float32
      np.testing.assert_allclose(r['bbox'], bbox, atol=1e-6)
      attrs, classes = ATTR[model]
      assert r['attributes'].dtype == np.float32 and r['attribute_classes'].dtype == np.int64
      np.testing.assert_allclose(r['attributes'], attrs, rtol=1e-6)  # NaN == NaN here
      assert r['attribute_classes'].tolist() == classes
      if index in COLOURS[split]:
        assert np.abs(r['image'].astype(int) - COLOURS[split][index]).max() <= 3


def test_metadata(built):
  _, (builder, _) = built
  md = builder.info.metadata
  assert md['class_model_ids'] == [4, 9, 11]
  assert md['class_make_ids'] == [3, 1, 1]
  assert md['class_make_names'] == ['BMW', 'Audi', 'Audi']
  assert md['attribute_names'] == ['maximum_speed', 'displacement', 'door_number', 'seat_number',
                                   'type']
  assert md['attribute_num_classes'] == [6, 6, 2, 2, 12]
  assert md['attribute_class_names'][2] == ['4', '5'] and md['attribute_class_names'][4] == TYPES
  assert md['attribute_class_names'][0][0] == '<160' and md['attribute_class_names'][0][-1] == '>=250'
  assert md['models_without_attributes'] == []
  [problem] = md['label_problems']
  assert problem['reason'] == 'no label file'
  assert problem['file'].endswith(os.path.join('label', '1', '11', '2014', 'ff01.txt'))


def test_bad_files_are_listed(built):
  _, (builder, _) = built
  bad = builder.info.metadata['bad_files']
  assert bad['num_converted'] == 1 and bad['converted'][0]['file'].endswith('gray01.jpg')
  skipped = {os.path.basename(s['file']): s['reason'] for s in bad['skipped']}
  assert set(skipped) == {'missing.jpg', 'ee01.jpg'} and bad['num_skipped'] == 2
  assert skipped['ee01.jpg'].startswith('unreadable')
  assert 'missing' in skipped['missing.jpg']


def test_packed_archive_gives_the_same_examples(built, tmp_path):
  manual, (_, rows) = built
  packed = tmp_path / 'packed'
  packed.mkdir()
  builder_testing.pack(packed / 'data.tar.gz', manual, ['data'])
  _, rows2 = _prepare(packed, str(tmp_path / 'tfds2'))
  builder_testing.assert_same_examples(_by_index(rows2), _by_index(rows))


def _by_index(rows):
  return {split: {int(r['index']): r for r in examples} for split, examples in rows.items()}


def test_missing_file_is_named(built, tmp_path):
  manual, _ = built
  shutil.copytree(manual, tmp_path / 'm')
  os.remove(tmp_path / 'm' / 'data' / 'misc' / 'car_type.mat')
  msg = builder_testing.missing_files_message(CompCars, tmp_path / 'm', str(tmp_path / 'tfds'))
  assert os.path.join('data', 'misc', 'car_type.mat') in msg
  assert 'attributes.txt' not in msg


def test_split_zip_asks_to_join_it(tmp_path):
  (tmp_path / 'm').mkdir()
  (tmp_path / 'm' / 'data.zip').write_bytes(b'PK')
  (tmp_path / 'm' / 'data.z01').write_bytes(b'PK')
  with pytest.raises(common.MissingFiles, match='split'):
    builder_testing.prepare(CompCars, tmp_path / 'm', str(tmp_path / 'tfds'))


def test_encrypted_zip_is_reported(built, tmp_path):
  """The official zip is password-protected: extraction fails with a MissingFiles that says so."""
  manual, _ = built
  (tmp_path / 'm').mkdir()
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w') as z:
    z.write(os.path.join(manual, 'data', 'misc', 'attributes.txt'), 'data/misc/attributes.txt')
  data = bytearray(buf.getvalue())
  for sig, off in ((b'PK\x03\x04', 6), (b'PK\x01\x02', 8)):  # set the 'encrypted' flag bit
    pos = data.find(sig)
    data[pos + off] |= 1
  (tmp_path / 'm' / 'data.zip').write_bytes(bytes(data))
  with pytest.raises(common.MissingFiles, match='password'):
    builder_testing.prepare(CompCars, tmp_path / 'm', str(tmp_path / 'tfds'))


def test_no_manual_dir(tmp_path):
  with pytest.raises(common.MissingFiles, match='Manual directory') as e:
    CompCars(data_dir=str(tmp_path / 'tfds')).download_and_prepare()
  assert 'mmlab.ie.cuhk.edu.hk' in str(e.value)
