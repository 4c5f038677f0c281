"""viper builder on a tiny VIPeR.v1.0 tree (cam_a / cam_b BMPs named {person}_{angle}.bmp)."""

import os
import shutil
import sys

import numpy as np
from PIL import Image

from fgjax.data.builders.viper import Viper
import builder_testing  # tests/data/builders/builder_testing.py (same directory)

# person -> ((cam_a angle, h, w), (cam_b angle, h, w)); person 20 is only in cam_a.
PERSONS = {0: ((45, 16, 6), (90, 18, 6)), 3: ((0, 20, 8), (180, 22, 8)),
           7: ((45, 24, 10), (135, 26, 10)), 10: ((90, 28, 12), (0, 30, 12)),
           12: ((135, 32, 14), (45, 34, 14)), 15: ((180, 36, 16), (90, 38, 16))}
GRAY = ('cam_a', '003_0.bmp')  # written as an 8-bit grayscale BMP: converted
TRUNCATED = ('cam_b', '007_135.bmp')  # cut in half: skipped


def _colour(pid, cam):
  return np.array([10 * pid + 5, 100 + 60 * cam, 30], np.uint8)


def _write_tree(base):
  root = os.path.join(base, 'VIPeR')
  for cam in ('cam_a', 'cam_b'):
    os.makedirs(os.path.join(root, cam))
  for pid, views in PERSONS.items():
    for cam, (angle, h, w) in enumerate(views):
      folder, name = ('cam_a', 'cam_b')[cam], f'{pid:03d}_{angle}.bmp'
      im = Image.fromarray(np.zeros((h, w, 3), np.uint8) + _colour(pid, cam))
      path = os.path.join(root, folder, name)
      (im.convert('L') if (folder, name) == GRAY else im).save(path, 'BMP')
      if (folder, name) == TRUNCATED:
        builder_testing.truncate(path)
  Image.new('RGB', (6, 16)).save(os.path.join(root, 'cam_a', '020_90.bmp'))
  open(os.path.join(root, 'cam_a', 'Thumbs.db'), 'wb').write(b'\x00')
  open(os.path.join(root, 'README.txt'), 'w').write('VIPeR\n')


def _build(manual, data_dir):
  return builder_testing.build(Viper, manual, data_dir,
                               key=lambda e: (int(e['identity']), int(e['camera'])))


built = builder_testing.build_fixture(_write_tree, _build)


def _expected_split_ids():
  """The documented recipe: default_rng(0), one permutation of the sorted paired ids per split."""
  ids = np.array([0, 3, 7, 10, 12, 15])
  rng = np.random.default_rng(0)
  out = {}
  for k in range(10):
    perm = rng.permutation(6)
    out[k] = (sorted(ids[perm[:3]].tolist()), sorted(ids[perm[3:]].tolist()))
  return out


def test_splits(built):
  builder, data = built
  assert set(data) == {f'split{k}_{p}' for k in range(10)
                       for p in ('train', 'test', 'query', 'gallery')}
  expected = _expected_split_ids()
  assert expected[0] == ([7, 10, 15], [0, 3, 12])  # numpy's seeded stream, pinned
  assert len({tuple(v[0]) for v in expected.values()}) > 1  # the 10 splits differ
  for k, (train, test) in expected.items():
    for part, ids in (('train', train), ('test', test)):
      rows = [(int(e['label']), int(e['identity']), int(e['camera']), int(e['viewpoint']),
               e['image'].shape) for e in data[f'split{k}_{part}']]
      want = [(ids.index(pid), pid, cam, PERSONS[pid][cam][0], PERSONS[pid][cam][1:] + (3,))
              for pid in ids for cam in (0, 1) if (pid, cam) != (7, 1)]  # 007 cam_b skipped
      assert rows == want, (k, part)
      assert builder.info.metadata['identities'][f'split{k}_{part}'] == ids
      assert not set(train) & set(test)
      if part == 'test':  # query = camera A, gallery = camera B, labels of the test split
        for sub, cam in (('query', 0), ('gallery', 1)):
          got = [(int(e['label']), int(e['identity']), int(e['camera']))
                 for e in data[f'split{k}_{sub}']]
          assert got == [(ids.index(p), p, cam) for p in ids if (p, cam) != (7, 1)]
          assert builder.info.metadata['label_space'][f'split{k}_{sub}'] == f'split{k}_test'


def test_images_metadata_bad_files(built):
  builder, data = built
  for e in data['split0_train'] + data['split0_test']:
    want = _colour(int(e['identity']), int(e['camera'])).astype(int)
    if int(e['identity']) == 3 and int(e['camera']) == 0:  # grayscale: luminance in all channels
      want = np.full(3, round(0.299 * want[0] + 0.587 * want[1] + 0.114 * want[2]))
    assert e['image'].dtype == np.uint8
    assert np.abs(e['image'].astype(int).mean((0, 1)) - want).max() < 3
  md = builder.info.metadata
  assert md['unpaired_identities'] == [20] and md['seed'] == 0
  assert builder.info.features['label'].num_classes == 316
  bad = md['bad_files']
  assert [os.path.basename(c['file']) for c in bad['converted']] == ['003_0.bmp']
  assert [os.path.basename(s['file']) for s in bad['skipped']] == ['007_135.bmp']
  assert 'tensorflow' not in sys.modules


def test_zip_archive_gives_same_result(built, tmp_path):
  _write_tree(tmp_path / 'tree')
  (tmp_path / 'manual').mkdir()
  builder_testing.pack(tmp_path / 'manual' / 'VIPeR.v1.0.zip', tmp_path / 'tree')
  _, data = _build(tmp_path / 'manual', str(tmp_path / 'data'))
  for split, rows in built[1].items():
    assert len(data[split]) == len(rows)
    for a, b in zip(data[split], rows):
      for key in ('label', 'identity', 'camera', 'viewpoint', 'image'):
        np.testing.assert_array_equal(a[key], b[key])


def test_missing_files_are_named(tmp_path, monkeypatch):
  monkeypatch.setattr(Viper, 'URL', None)  # no download attempt offline
  _write_tree(tmp_path / 'manual')
  shutil.rmtree(tmp_path / 'manual' / 'VIPeR' / 'cam_b')
  msg = builder_testing.missing_files_message(Viper, tmp_path / 'manual', str(tmp_path / 'data'))
  assert os.path.join(str(tmp_path / 'manual'), 'VIPeR', 'cam_b') + '  <- ' in msg
  assert os.path.join(str(tmp_path / 'manual'), 'VIPeR', 'cam_a') not in msg
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.txt').write_text('nothing here')
  msg = builder_testing.missing_files_message(Viper, tmp_path / 'empty', str(tmp_path / 'data'))
  for cam in ('cam_a', 'cam_b'):
    assert os.path.join(str(tmp_path / 'empty'), 'VIPeR', cam) + '  <- ' in msg


def test_download_fallback_when_manual_dir_has_nothing(built, tmp_path, monkeypatch):
  """No files in the manual dir: the public archive is downloaded (faked here) and unpacked."""
  _write_tree(tmp_path / 'tree')
  served = tmp_path / 'served.zip'
  builder_testing.pack(served, tmp_path / 'tree')

  def serve(manager, url):
    return shutil.copy(served, os.path.join(str(manager.download_dir), 'VIPeR.v1.0.zip'))

  urls = builder_testing.fake_downloads(monkeypatch, serve)
  (tmp_path / 'manual').mkdir()
  (tmp_path / 'manual' / 'notes.txt').write_text('nothing here')
  _, data = _build(tmp_path / 'manual', str(tmp_path / 'data'))
  assert urls == [Viper.URL]
  for split, rows in built[1].items():
    assert [int(e['identity']) for e in data[split]] == [int(e['identity']) for e in rows]
