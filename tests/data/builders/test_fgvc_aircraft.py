"""fgvc_aircraft builder on a tiny archive in the official fgvc-aircraft-2013b layout.

Every expected value below is written by hand from the files this test writes.
"""

import functools
import os

import numpy as np
from PIL import Image

from fgjax.data.builders.fgvc_aircraft import FgvcAircraft
import builder_testing  # tests/data/builders/builder_testing.py (same directory)

VARIANTS = ['707-320', 'A300B4', 'F/A-18', 'Falcon 2000']
# name: (variant, (W, H) with the 20-pixel banner, box xmin ymin xmax ymax 1-based inclusive)
TRAINVAL = {'0034309': ('707-320', (60, 50), (1, 1, 60, 30)),
            '0034958': ('F/A-18', (40, 60), (5, 11, 24, 50)),  # ymax inside the banner
            '1025794': ('Falcon 2000', (50, 45), (6, 6, 30, 15)),
            '0056978': ('A300B4', (32, 36), (9, 5, 24, 12)),  # grayscale JPEG
            '0000001': ('707-320', (30, 21), (1, 1, 30, 1))}  # 1 row left: skipped
TEST = {'1187707': ('A300B4', (40, 40), (1, 1, 20, 10)),
        '2074164': ('Falcon 2000', (30, 40), (1, 1, 30, 20)),  # truncated JPEG: skipped
        '0787226': ('F/A-18', (44, 30), (12, 1, 33, 10))}
EXPECTED = {  # image_id: (label, (H, W) after the banner, bbox (ymin, xmin, ymax, xmax))
    34309: (0, (30, 60), [0, 0, 1, 1]), 34958: (2, (40, 40), [0.25, 0.1, 1, 0.6]),
    1025794: (3, (25, 50), [0.2, 0.1, 0.6, 0.6]), 56978: (1, (16, 32), [0.25, 0.25, 0.75, 0.75]),
    1187707: (1, (20, 40), [0, 0, 0.5, 0.5]), 787226: (2, (10, 44), [0, 0.25, 1, 0.75])}
SPLITS = {'trainval': [34309, 34958, 56978, 1025794], 'train': [34309, 34958, 56978, 1025794],
          'test': [787226, 1187707]}


def write_aircraft(root):
  data = os.path.join(root, 'fgvc-aircraft-2013b', 'data')
  os.makedirs(os.path.join(data, 'images'))
  rng = np.random.default_rng(2)
  boxes = []
  for split, entries in (('trainval', TRAINVAL), ('test', TEST)):
    with open(os.path.join(data, f'images_variant_{split}.txt'), 'w') as f:
      f.writelines(f'{name} {variant}\n' for name, (variant, _, _) in entries.items())
    for name, (_, (w, h), box) in entries.items():
      pixels = rng.integers(0, 100, (h, w, 3), dtype=np.uint8)
      pixels[h - 20:] = 255  # the white copyright banner
      image = Image.fromarray(pixels)
      blob = builder_testing.jpeg(image.convert('L') if name == '0056978' else image)
      with open(os.path.join(data, 'images', f'{name}.jpg'), 'wb') as f:
        f.write(blob[:len(blob) // 2] if name == '2074164' else blob)
      boxes.append(f'{name} {" ".join(map(str, box))}\n')
  with open(os.path.join(data, 'images_box.txt'), 'w') as f:
    f.writelines(boxes)
  with open(os.path.join(data, 'variants.txt'), 'w') as f:
    f.writelines(f'{v}\n' for v in VARIANTS)


build = functools.partial(builder_testing.build_by_image_id, FgvcAircraft, splits=SPLITS)


extracted = builder_testing.build_fixture(write_aircraft, build)


def test_splits_labels_boxes_and_banner(extracted):
  builder, splits = extracted
  assert builder.info.features['label'].names == VARIANTS
  builder_testing.assert_split_ids(builder, splits, SPLITS)
  for split in SPLITS:
    for i, e in splits[split].items():
      label, (h, w), box = EXPECTED[i]
      assert e['label'] == label
      assert e['image'].shape == (h, w, 3) and e['image'].dtype == np.uint8
      np.testing.assert_allclose(e['bbox'], box, atol=1e-6)
      assert e['image'].mean(axis=(1, 2)).max() < 150  # no white banner row is left
  for i in SPLITS['train']:
    np.testing.assert_array_equal(splits['train'][i]['image'], splits['trainval'][i]['image'])


def test_bad_files_listed_once(extracted):
  builder, _ = extracted
  bad = builder.info.metadata['bad_files']
  assert [os.path.basename(c['file']) for c in bad['converted']] == ['0056978.jpg']
  assert sorted(os.path.basename(s['file']) for s in bad['skipped']) == ['0000001.jpg',
                                                                         '2074164.jpg']
  reasons = {os.path.basename(s['file']): s['reason'] for s in bad['skipped']}
  assert 'banner' in reasons['0000001.jpg'] and reasons['2074164.jpg'].startswith('unreadable')
  assert builder.info.metadata['banner_pixels'] == 20


def test_packed_archive_gives_the_same_dataset(tmp_path, extracted):
  _, expected = extracted
  src, manual = tmp_path / 'src', tmp_path / 'manual'
  write_aircraft(str(src))
  manual.mkdir()
  builder_testing.pack(manual / 'fgvc-aircraft-2013b.tar.gz', src)
  _, got = build(manual, str(tmp_path / 'data'))
  builder_testing.assert_same_examples(got, expected)


def test_missing_files_are_named(tmp_path):
  write_aircraft(str(tmp_path))
  data = tmp_path / 'fgvc-aircraft-2013b' / 'data'
  os.remove(data / 'images_box.txt')
  msg = builder_testing.missing_files_message(FgvcAircraft, tmp_path, str(tmp_path / 'data_a'))
  assert str(data / 'images_box.txt') in msg
  assert 'variants.txt' not in msg
  write_aircraft(str(tmp_path / 'second'))
  os.remove(tmp_path / 'second' / 'fgvc-aircraft-2013b' / 'data' / 'images' / '1187707.jpg')
  msg = builder_testing.missing_files_message(FgvcAircraft, tmp_path / 'second',
                                              str(tmp_path / 'data_b'))
  assert os.path.join('data', 'images', '1187707.jpg') in msg


def test_nothing_there_names_the_archive(tmp_path, monkeypatch):
  monkeypatch.setattr(FgvcAircraft, 'URLS', ())  # no download attempt in tests
  (tmp_path / 'manual').mkdir()
  (tmp_path / 'manual' / 'notes.txt').write_text('unrelated')
  msg = builder_testing.missing_files_message(FgvcAircraft, tmp_path / 'manual',
                                              str(tmp_path / 'data'))
  assert os.path.join(str(tmp_path / 'manual'), 'fgvc-aircraft-2013b.tar.gz') in msg
  assert 'robots.ox.ac.uk' in msg
