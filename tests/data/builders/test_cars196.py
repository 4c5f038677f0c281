"""cars196 builder on tiny archives in the official Stanford Cars layout (.mat via savemat).

Every expected value below is written by hand from the files this test writes.
"""

import functools
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fgjax.data.builders.cars196 import Cars196
import builder_testing  # tests/data/builders/builder_testing.py (same directory)

CLASS_NAMES = ['AM General Hummer SUV 2000', 'Acura RL Sedan 2012', 'Acura TL Sedan 2012',
               'Acura TL Type-S 2008']
# fname: (class id 1-based, (x1, y1, x2, y2) 1-based inclusive, (W, H))
TRAIN = {'00001.jpg': (1, (1, 1, 40, 30), (40, 30)),
         '00002.jpg': (3, (11, 6, 30, 25), (40, 30)),
         '00003.jpg': (2, (5, 5, 60, 20), (50, 20)),  # x2 past the right edge
         '00004.jpg': (4, (3, 9, 18, 24), (24, 24)),  # grayscale JPEG
         '00005.jpg': (1, (2, 2, 10, 10), (20, 40))}
TEST = {'00001.jpg': (2, (1, 1, 16, 16), (32, 32)),  # same file name as a train image
        '00002.jpg': (4, (9, 1, 32, 16), (32, 16)),
        '00003.jpg': (3, (1, 1, 4, 4), (16, 16)),  # truncated JPEG: skipped
        '00004.jpg': (1, (4, 4, 8, 8), (16, 16))}
EXPECTED = {  # image_id: (label, bbox (ymin, xmin, ymax, xmax))
    1: (0, [0, 0, 1, 1]), 2: (2, [5 / 30, 10 / 40, 25 / 30, 30 / 40]), 3: (1, [0.2, 0.08, 1, 1]),
    4: (3, [8 / 24, 2 / 24, 1, 18 / 24]), 5: (0, [1 / 40, 1 / 20, 0.25, 0.5]),
    100001: (1, [0, 0, 0.5, 0.5]), 100002: (3, [0, 0.25, 1, 1]),
    100004: (0, [3 / 16, 3 / 16, 0.5, 0.5])}
SPLITS = {'train': [1, 2, 3, 4, 5], 'test': [100001, 100002, 100004],
          'retrieval_train': [1, 3, 5, 100001, 100004], 'retrieval_test': [2, 4, 100002]}
FIELDS = builder_testing.CARS_FIELDS


def write_cars(root):
  """cars_train/, cars_test/, devkit/ and cars_test_annos_withlabels.mat under root."""
  rng = np.random.default_rng(1)
  for folder, entries in (('cars_train', TRAIN), ('cars_test', TEST)):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    for fname, (_, _, (w, h)) in entries.items():
      image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
      if (folder, fname) == ('cars_train', '00004.jpg'):
        image = image.convert('L')
      data = builder_testing.jpeg(image)
      if (folder, fname) == ('cars_test', '00003.jpg'):
        data = data[:len(data) // 2]
      with open(os.path.join(root, folder, fname), 'wb') as f:
        f.write(data)
  os.makedirs(os.path.join(root, 'devkit'), exist_ok=True)
  scipy.io.savemat(os.path.join(root, 'devkit', 'cars_meta.mat'),
                   {'class_names': np.array([CLASS_NAMES], dtype=object)})
  builder_testing.cars_annotations_mat(os.path.join(root, 'devkit', 'cars_train_annos.mat'), TRAIN)
  builder_testing.cars_annotations_mat(os.path.join(root, 'devkit', 'cars_test_annos.mat'), TEST,
                   FIELDS[:4] + FIELDS[5:])  # the devkit's test file has no `class`
  builder_testing.cars_annotations_mat(os.path.join(root, 'cars_test_annos_withlabels.mat'), TEST)


build = functools.partial(builder_testing.build_by_image_id, Cars196, splits=SPLITS)


extracted = builder_testing.build_fixture(write_cars, build)


def test_splits_labels_boxes_ids(extracted):
  builder, splits = extracted
  assert builder.info.features['label'].names == CLASS_NAMES
  assert builder.info.metadata['retrieval_train_classes'] == [0, 1]
  builder_testing.assert_split_ids(builder, splits, SPLITS)
  for split in SPLITS:
    for i, e in splits[split].items():
      label, box = EXPECTED[i]
      w, h = (TRAIN if i < 100000 else TEST)[f'{i % 100000:05d}.jpg'][2]
      assert e['label'] == label
      np.testing.assert_allclose(e['bbox'], box, atol=1e-6)
      assert e['image'].shape == (h, w, 3) and e['image'].dtype == np.uint8


def test_bad_files_listed_once(extracted):
  builder, _ = extracted
  bad = builder.info.metadata['bad_files']
  assert bad['num_converted'] == 1 and bad['num_skipped'] == 1
  assert bad['converted'][0]['file'].endswith(os.path.join('cars_train', '00004.jpg'))
  assert bad['skipped'][0]['file'].endswith(os.path.join('cars_test', '00003.jpg'))


def test_packed_archives_give_the_same_dataset(tmp_path, extracted):
  _, expected = extracted
  src, manual = tmp_path / 'src', tmp_path / 'manual'
  write_cars(str(src))
  manual.mkdir()
  for archive, folder in (('cars_train.tgz', 'cars_train'), ('cars_test.tgz', 'cars_test'),
                          ('car_devkit.tgz', 'devkit')):
    builder_testing.pack(manual / archive, src, [folder])
  os.replace(src / 'cars_test_annos_withlabels.mat', manual / 'cars_test_annos_withlabels.mat')
  _, got = build(manual, str(tmp_path / 'data'))
  builder_testing.assert_same_examples(got, expected)


def test_missing_files_are_named(tmp_path):
  write_cars(str(tmp_path))
  os.remove(tmp_path / 'devkit' / 'cars_meta.mat')
  os.remove(tmp_path / 'cars_test_annos_withlabels.mat')
  msg = builder_testing.missing_files_message(Cars196, tmp_path, str(tmp_path / 'data'))
  assert os.path.join(str(tmp_path), 'devkit', 'cars_meta.mat') in msg
  assert os.path.join(str(tmp_path), 'cars_test_annos_withlabels.mat') in msg
  assert 'cars_train_annos.mat' not in msg and 'issues/7545' in msg


def test_empty_manual_dir_names_every_file(tmp_path):
  (tmp_path / 'manual').mkdir()
  (tmp_path / 'manual' / 'notes.txt').write_text('unrelated')
  msg = builder_testing.missing_files_message(Cars196, tmp_path / 'manual', str(tmp_path / 'data'))
  for name in ('cars_train.tgz', 'cars_test.tgz', 'car_devkit.tgz',
               'cars_test_annos_withlabels.mat'):
    assert os.path.join(str(tmp_path / 'manual'), name) in msg


def test_missing_image_is_named(tmp_path):
  write_cars(str(tmp_path))
  os.remove(tmp_path / 'cars_test' / '00004.jpg')
  msg = builder_testing.missing_files_message(Cars196, tmp_path, str(tmp_path / 'data'))
  assert os.path.join(str(tmp_path), 'cars_test', '00004.jpg') in msg


def test_unlabelled_test_annotations_are_refused(tmp_path):
  write_cars(str(tmp_path))
  os.replace(tmp_path / 'devkit' / 'cars_test_annos.mat',
             tmp_path / 'cars_test_annos_withlabels.mat')
  with pytest.raises(ValueError, match='cars_test_annos_withlabels.mat'):
    build(tmp_path, str(tmp_path / 'data'))
