"""cuhk03 builder on a tiny cuhk-03.mat (HDF5, 2 camera pairs, empty cells) + protocol files."""

import functools
import os
import sys

import h5py
import numpy as np
import scipy.io

from fgjax.data.builders.cuhk03 import Cuhk03
import builder_testing  # tests/data/builders/builder_testing.py (same directory)

# (pair, person, column) 1-based -> (height, width) of the labeled image; every other cell empty.
# Pair 1 has 3 persons, pair 2 has 2: global ids (1,1)=1 (1,2)=2 (1,3)=3 (2,1)=4 (2,2)=5.
CELLS = {(1, 1, 1): (20, 8), (1, 1, 2): (22, 8), (1, 1, 6): (24, 10),
         (1, 2, 1): (26, 10), (1, 2, 6): (28, 12), (1, 2, 7): (30, 12),  # (1,2,7) grayscale 2-D
         (1, 3, 3): (32, 14), (1, 3, 8): (34, 14),
         (2, 1, 1): (36, 16), (2, 1, 2): (1, 1), (2, 1, 6): (38, 16),  # (2,1,2) is 1x1: skipped
         (2, 2, 1): (40, 18), (2, 2, 2): (42, 18), (2, 2, 9): (44, 20)}
GRAY, TINY = (1, 2, 7), (2, 1, 2)
SIZES = [3, 2]
TESTSETS = [[[1, 2], [2, 1]], [[1, 1], [2, 2]]]  # rows (pair, person): ids {2, 4} and {1, 5}


def _name(p, i, c):
  return f'{p}_{i:03d}_{1 if c <= 5 else 2}_{c:02d}.png'


def _colour(key, kind):
  p, i, c = key
  return np.array([40 * p + (0 if kind == 'labeled' else 20), 30 * i, 20 * c])


def _image(key, kind):
  h, w = CELLS[key]
  if kind == 'detected' and key != TINY:
    h, w = h + 2, w + 4
  img = np.zeros((h, w, 3), np.uint8) + _colour(key, kind).astype(np.uint8)
  img[h // 2:] += 20  # bottom half brighter: tells rows from columns
  return img[..., 0] if key == GRAY else img


def _write_mat(path):
  with h5py.File(path, 'w', userblock_size=512) as f:  # MATLAB v7.3 files carry a 512-byte header
    refs = f.create_group('#refs#')
    def put(arr, empty=False):
      ds = refs.create_dataset(f'r{len(refs)}', data=arr)
      if empty:
        ds.attrs['MATLAB_empty'] = np.uint8(1)
      return ds.ref
    for kind in ('detected', 'labeled'):
      pair_refs = []
      for p, n in enumerate(SIZES, start=1):
        grid = np.empty((10, n), dtype=h5py.ref_dtype)  # MATLAB n x 10 cell, stored transposed
        for i in range(1, n + 1):
          for c in range(1, 11):
            key = (p, i, c)
            grid[c - 1, i - 1] = (put(_image(key, kind).T) if key in CELLS
                                  else put(np.zeros(2, np.uint64), empty=True))
        pair_refs.append(put(grid))
      f.create_dataset(kind, data=np.array(pair_refs, dtype=h5py.ref_dtype).reshape(1, -1))
    ts = [put(np.asarray(t, np.float64).T) for t in TESTSETS]
    f.create_dataset('testsets', data=np.array(ts, dtype=h5py.ref_dtype).reshape(1, -1))


# 767/700-style protocol: ids 1, 3 train; ids 2, 4, 5 test. 1-based indices into FILELIST.
FILELIST = [_name(*k) for k in sorted(CELLS) if k != TINY] + [_name(*TINY)]
TRAIN_IDX = [1, 2, 3, 7, 8]
QUERY_IDX = [4, 5, 9, 10, 11, 13]
GALLERY_IDX = [6, 12, 14]  # 14 = the 1x1 image: skipped


def _write_protocol(path):
  ident = {(1, 1): 1, (1, 2): 2, (1, 3): 3, (2, 1): 4, (2, 2): 5}
  keys = [tuple(int(x) for x in n[:-4].split('_')) for n in FILELIST]  # pair, person, view, col
  scipy.io.savemat(path, {
      'filelist': np.array(FILELIST, dtype=object).reshape(-1, 1),
      'labels': np.array([ident[k[:2]] for k in keys], np.float64).reshape(-1, 1),
      'camId': np.array([k[2] for k in keys], np.float64).reshape(-1, 1),
      'train_idx': np.array(TRAIN_IDX, np.float64).reshape(-1, 1),
      'query_idx': np.array(QUERY_IDX, np.float64).reshape(-1, 1),
      'gallery_idx': np.array(GALLERY_IDX, np.float64).reshape(-1, 1)})


def _write_manual(base, packed=False):
  os.makedirs(os.path.join(base, 'cuhk03_release'), exist_ok=True)
  mat = os.path.join(base, 'cuhk03_release', 'cuhk-03.mat')
  _write_mat(mat)
  if packed:
    builder_testing.pack(os.path.join(base, 'cuhk03_release.zip'), base, ['cuhk03_release'])
    os.remove(mat)
    os.rmdir(os.path.join(base, 'cuhk03_release'))
  for kind in ('labeled', 'detected'):
    _write_protocol(os.path.join(base, f'cuhk03_new_protocol_config_{kind}.mat'))


def _build(config, manual, data_dir):
  return builder_testing.build(Cuhk03, manual, data_dir, config=config,
                               key=lambda e: (int(e['identity']), int(e['image_index'])))


labeled = builder_testing.build_fixture(_write_manual, functools.partial(_build, 'labeled'))


def _rows(rows):
  return [(int(e['label']), int(e['identity']), int(e['camera']), int(e['camera_pair']),
           int(e['pair_identity']), int(e['image_index'])) for e in rows]


# (identity, column) of every expected row, with the expected (label, camera, pair, person).
def _expect(items, space):
  where = {1: (1, 1), 2: (1, 2), 3: (1, 3), 4: (2, 1), 5: (2, 2)}
  return [(space.index(pid), pid, 0 if c <= 5 else 1, where[pid][0] - 1, where[pid][1], c)
          for pid, c in items]


def test_protocol_splits(labeled):
  _, data = labeled
  assert _rows(data['train']) == _expect([(1, 1), (1, 2), (1, 6), (3, 3), (3, 8)], [1, 3])
  assert _rows(data['query']) == _expect(
      [(2, 1), (2, 6), (4, 1), (4, 6), (5, 1), (5, 9)], [2, 4, 5])
  assert _rows(data['gallery']) == _expect([(2, 7), (5, 2)], [2, 4, 5])


def test_classic_splits(labeled):
  builder, data = labeled
  assert _rows(data['classic0_test']) == _expect([(2, 1), (2, 6), (2, 7), (4, 1), (4, 6)], [2, 4])
  assert _rows(data['classic0_train']) == _expect(
      [(1, 1), (1, 2), (1, 6), (3, 3), (3, 8), (5, 1), (5, 2), (5, 9)], [1, 3, 5])
  assert _rows(data['classic1_test']) == _expect(
      [(1, 1), (1, 2), (1, 6), (5, 1), (5, 2), (5, 9)], [1, 5])
  assert _rows(data['classic1_train']) == _expect(
      [(2, 1), (2, 6), (2, 7), (3, 3), (3, 8), (4, 1), (4, 6)], [2, 3, 4])
  # cross-camera query (camera A) / gallery (camera B) inside each classic test set
  assert _rows(data['classic0_query']) == _expect([(2, 1), (4, 1)], [2, 4])
  assert _rows(data['classic0_gallery']) == _expect([(2, 6), (2, 7), (4, 6)], [2, 4])
  assert _rows(data['classic1_query']) == _expect([(1, 1), (1, 2), (5, 1), (5, 2)], [1, 5])
  assert _rows(data['classic1_gallery']) == _expect([(1, 6), (5, 9)], [1, 5])
  assert set(data) == {'train', 'query', 'gallery'} | {
      f'classic{k}_{p}' for k in (0, 1) for p in ('train', 'test', 'query', 'gallery')}
  md = builder.info.metadata
  assert md['pair_sizes'] == [3, 2] and md['num_classic_splits'] == 2
  assert md['num_empty_cells'] == 50 - len(CELLS)
  assert md['identities']['test'] == [2, 4, 5] and md['identities']['classic1_train'] == [2, 3, 4]
  assert md['label_space']['gallery'] == 'test'
  assert md['label_space']['classic1_gallery'] == md['label_space']['classic1_query'] == (
      'classic1_test')
  assert md['protocol_labels_equal_identity'] is True
  assert md['protocol_camid_mismatches'] == 0 and md['identities_without_images'] == []
  assert builder.info.features['label'].num_classes == 1367


def test_images_come_from_the_right_cells(labeled):
  _, data = labeled
  where = {1: (1, 1), 2: (1, 2), 3: (1, 3), 4: (2, 1), 5: (2, 2)}
  for split in data.values():
    for e in split:
      p, i = where[int(e['identity'])]
      key = (p, i, int(e['image_index']))
      h, w = CELLS[key]
      img = e['image'].astype(int)
      assert img.shape == (h, w, 3) and e['image'].dtype == np.uint8
      want = _colour(key, 'labeled')
      if key == GRAY:
        want = np.full(3, want[0])
      assert np.abs(img[: h // 2].mean((0, 1)) - want).max() < 4
      assert np.abs(img[h // 2 + 1:].mean((0, 1)) - want - 20).max() < 4


def test_bad_cells_listed(labeled):
  builder, _ = labeled
  bad = builder.info.metadata['bad_files']
  assert [c['file'].split(':')[-1] for c in bad['converted']] == ['labeled/1_002_2_07']
  skipped = [(s['file'].split(':')[-1], s['reason']) for s in bad['skipped']]
  assert skipped == [('labeled/2_001_1_02', '1x1 pixels'),
                     ('protocol gallery/2_001_1_02.png', 'no image in cuhk-03.mat')]
  assert 'tensorflow' not in sys.modules


def test_detected_config_and_zip(labeled, tmp_path):
  _write_manual(tmp_path / 'manual', packed=True)
  builder, data = _build('detected', tmp_path / 'manual', str(tmp_path / 'data'))
  assert builder.info.metadata['image_type'] == 'detected'
  for split, rows in labeled[1].items():
    assert _rows(data[split]) == _rows(rows)
    for e in data[split]:
      p, i = {1: (1, 1), 2: (1, 2), 3: (1, 3), 4: (2, 1), 5: (2, 2)}[int(e['identity'])]
      h, w = CELLS[(p, i, int(e['image_index']))]
      assert e['image'].shape == (h + 2, w + 4, 3)  # the detected arrays


def test_missing_files_are_named(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  _write_protocol(str(manual / 'cuhk03_new_protocol_config_labeled.mat'))
  msg = builder_testing.missing_files_message(Cuhk03, manual, str(tmp_path / 'data'),
                                              config='labeled')
  assert os.path.join(str(manual), 'cuhk03_release', 'cuhk-03.mat') + '  <- ' in msg
  assert 'protocol' not in msg  # the protocol file is there


def test_protocol_file_downloaded_when_absent(labeled, tmp_path, monkeypatch):
  _write_manual(tmp_path / 'manual')
  os.remove(tmp_path / 'manual' / 'cuhk03_new_protocol_config_labeled.mat')
  _write_protocol(str(tmp_path / 'served.mat'))
  urls = builder_testing.fake_downloads(monkeypatch, lambda _, url: str(tmp_path / 'served.mat'))
  _, data = _build('labeled', tmp_path / 'manual', str(tmp_path / 'data'))
  assert urls == ['https://github.com/zhunzhong07/person-re-ranking/raw/master/evaluation/data/'
                  'CUHK03/cuhk03_new_protocol_config_labeled.mat']
  for split, rows in labeled[1].items():
    assert _rows(data[split]) == _rows(rows)
