"""``cuhk03``: CUHK03 person re-id (Li et al., "DeepReID", CVPR 2014), configs ``labeled`` (manual
boxes) and ``detected`` (DPM boxes), with the 20 classic splits and the 767/700 protocol of Zhong et
al. ("Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017).

Files read (manual dir)::

    cuhk03_release/cuhk-03.mat    (or cuhk03_release.zip, or cuhk-03.mat directly in the manual dir)
    cuhk03_new_protocol_config_labeled.mat / cuhk03_new_protocol_config_detected.mat

cuhk-03.mat is MATLAB v7.3 (HDF5), read with h5py. As understood here (and as open-reid / torchreid
read it): ``labeled`` and ``detected`` are 5 x 1 MATLAB cells (h5py: a (1, 5) array of object
references), one per camera pair. Pair p is an n_p x 10 cell (h5py stores MATLAB's column-major
arrays transposed: a (10, n_p) array of references; we transpose it back) whose row i is person i
of that pair and whose columns 1..5 are camera A, 6..10 camera B. A filled cell is an H x W x 3
uint8 image (h5py: (3, W, H), transposed back); an empty cell is MATLAB's empty marker, a
2-element uint64 array (attribute MATLAB_empty). Real sizes: pairs of 843, 440, 77, 58, 49 persons
(1,467 identities), ~14,100 images per config. ``testsets`` is a 20 x 1 cell (h5py: (1, 20)
references) of 100 x 2 double arrays (h5py: (2, 100)), rows = (camera-pair, person) 1-based.

Zhong et al.'s protocol files are MATLAB v5 (scipy.io) with ``filelist`` (cell of names
``{pair}_{person:03d}_{view}_{column:02d}.png``, all 1-based, the names their save_img.m writes from
``img{pair}{person, column}``), ``labels`` (person id per file), ``camId`` (1/2 = camera A/B),
``train_idx``, ``query_idx``, ``gallery_idx`` (1-based indices into filelist). Images are fetched
from cuhk-03.mat through the file names, so the extracted PNG folders are not needed; every label
must name exactly one (pair, person) (checked).

Splits: ``train`` / ``query`` / ``gallery`` (767/700; real sizes labeled 7,368 / 1,400 / 5,328,
detected 7,365 / 1,400 / 5,332). For each of the k = 0..19 classic test sets: ``classic{k}_test`` =
all images of its 100 persons (both cameras), ``classic{k}_query`` / ``classic{k}_gallery`` = their
camera A / camera B images, and ``classic{k}_train`` = all images of every other person (1,367; no
validation set is defined in the file: hold one out of train for the paper's 1,160/100 use).
Evaluate with query/gallery = classic{k}_query/classic{k}_gallery (cross-camera) or both =
classic{k}_test (all vs all, same-camera matches ignored, as torchreid does). Every split is
materialised, so an image is stored ~22 times (~1.5-2 GB per config).

Features: ``identity`` = global person id, 1-based, pairs in order (pair p's person i has id
sum(n_1..n_{p-1}) + i; presumably the numbering of Zhong et al.'s ``labels``: metadata
``protocol_labels_equal_identity`` says whether it is); ``camera`` = 0 (A) / 1 (B);
``camera_pair`` 0..4; ``pair_identity`` = i (1-based, as in the files); ``image_index`` = cell
column 1..10. ``label`` = index of the identity among its split's sorted identities (``query`` and
``gallery`` share the sorted 700 test identities, classic{k}_query / _gallery those of
classic{k}_test; metadata ``identities[label_space[split]]`` maps back); ``num_classes`` = 1,367
(largest space: classic train). Images are encoded as JPEG (quality 95); empty cells are not
examples (counted in metadata). A file without ``testsets`` gives the 767/700 splits only.
"""

from __future__ import annotations

import io
import os
import re

import h5py
import numpy as np
from PIL import Image
import scipy.io
import tensorflow_datasets as tfds

from fgjax.data.builders import archives, common

FOLDER, MAT, ARCHIVE = 'cuhk03_release', 'cuhk-03.mat', 'cuhk03_release.zip'
PROTOCOL = 'cuhk03_new_protocol_config_{}.mat'
PROTOCOL_URL = ('https://github.com/zhunzhong07/person-re-ranking/raw/master/evaluation/data/'
                'CUHK03/' + PROTOCOL)
NUM_CLASSES = 1367
_NAME = re.compile(r'^(\d+)_(\d+)_(\d+)_(\d+)\.\w+$')


def _flat(x) -> np.ndarray:
  return np.asarray(x).reshape(-1)


class Cuhk03(common.BuilderBase):
  """CUHK03 labeled / detected: 767/700 protocol and the 20 classic splits."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='labeled', description='Manually cropped boxes.'),
      tfds.core.BuilderConfig(name='detected', description='DPM-detected boxes.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'labeled'
  PROTOCOL_URL = PROTOCOL_URL
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put in the manual dir (config.dataset.manual_dir / --manual_dir):
    {FOLDER}/{MAT}  (or {ARCHIVE}), from the CUHK03 page of Xiaogang Wang
        (https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html; agreement form required).
    {PROTOCOL.format('labeled')} and {PROTOCOL.format('detected')}, from
        https://github.com/zhunzhong07/person-re-ranking/tree/master/evaluation/data/CUHK03
        (downloaded from GitHub when absent and a network is available).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info(
        common.reid_features(NUM_CLASSES, 'camera_pair', 'pair_identity', 'image_index'),
        description=(
            'CUHK03 person re-identification (5 camera pairs, 1,467 persons). Splits: train / '
            'query / gallery (767/700 protocol of Zhong et al.) and classic{k}_train / _test / '
            '_query / _gallery (20 test sets of 100 persons from cuhk-03.mat). `label` = index in '
            'the split\'s sorted identities (metadata identities / label_space).'),
        homepage='https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html',
        metadata=dict(image_type=self.builder_config.name, num_cameras=2),
    )

  def _find(self, dl_manager):
    manual, base = archives.manual_dirs(dl_manager)
    mats = [os.path.join(base, FOLDER, MAT), os.path.join(base, MAT)]
    mat = next((m for m in mats if os.path.isfile(m)), None)
    if mat is None and manual and os.path.isfile(os.path.join(manual, ARCHIVE)):
      extracted = common.extract(dl_manager, os.path.join(manual, ARCHIVE), 'cuhk03')
      mat = next((m for m in (os.path.join(extracted, FOLDER, MAT), os.path.join(extracted, MAT))
                  if os.path.isfile(m)), None)
    name = PROTOCOL.format(self.builder_config.name)
    protocols = [os.path.join(base, name), os.path.join(base, FOLDER, name)]
    protocol = next((p for p in protocols if os.path.isfile(p)), None)
    if protocol is None and mat is not None:
      protocol = archives.fetch(
          dl_manager, self.PROTOCOL_URL and self.PROTOCOL_URL.format(self.builder_config.name))
    common.require('', [
        common.Required(mat or mats[0], f'{MAT} (MATLAB v7.3) from {ARCHIVE}, CUHK03 of Xiaogang '
                        'Wang: https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html'),
        common.Required(protocol or protocols[0], f'767/700 protocol of Zhong et al., https://'
                        'github.com/zhunzhong07/person-re-ranking (evaluation/data/CUHK03)'),
    ], 'cuhk03')
    return mat, protocol

  def _read_cells(self, mat_path):
    """{(pair, person, column) 1-based: JPEG bytes}, pair sizes, number of empty cells, testsets."""
    kind, images, sizes, empty = self.builder_config.name, {}, [], 0
    with h5py.File(mat_path, 'r') as f:
      for p, pair_ref in enumerate(_flat(f[kind]), start=1):
        cells = np.asarray(f[pair_ref]).T  # (persons, 10)
        if cells.ndim != 2 or cells.shape[1] != 10:
          raise ValueError(f'{mat_path}: {kind} pair {p} is {cells.shape[::-1]} in h5py, '
                           'expected (10, persons)')
        sizes.append(cells.shape[0])
        for i in range(cells.shape[0]):
          for c in range(10):
            ds = f[cells[i, c]]
            arr = np.asarray(ds)
            if ds.attrs.get('MATLAB_empty', 0) or arr.ndim < 2 or arr.size == 0:
              empty += 1
              continue
            name = f'{mat_path}:{kind}/{p}_{i + 1:03d}_{1 + c // 5}_{c + 1:02d}'
            data = self._encode(name, arr.T)
            if data is not None:
              images[(p, i + 1, c + 1)] = data
      testsets = [np.asarray(f[r]).T for r in _flat(f['testsets'])] if 'testsets' in f else []
    return images, sizes, empty, testsets

  def _encode(self, name, arr):
    try:
      im = Image.fromarray(np.ascontiguousarray(arr))
    except (TypeError, ValueError) as e:
      self.images.skipped.append({'file': name, 'reason': f'unreadable array {arr.shape} '
                                  f'{arr.dtype}: {e}'})
      return None
    out = io.BytesIO()
    im.save(out, format='JPEG', quality=95) if im.mode == 'RGB' else im.save(out, format='PNG')
    return self.images.read(name, out.getvalue())  # non-RGB cells are converted and listed

  def _split_generators(self, dl_manager):
    mat_path, protocol_path = self._find(dl_manager)
    images, sizes, empty, testsets = self._read_cells(mat_path)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    def ident(p, i):  # global 1-based person id of person i of pair p
      return int(offsets[p - 1] + i)

    keys = sorted(images, key=lambda k: (ident(k[0], k[1]), k[2]))
    rows = {}

    proto = scipy.io.loadmat(protocol_path)
    files = [str(np.asarray(x).reshape(-1)[0]) for x in _flat(proto['filelist'])]
    labels, cam_ids = _flat(proto['labels']).astype(int), _flat(proto['camId']).astype(int)
    parsed = []
    for name in files:
      m = _NAME.match(os.path.basename(name))
      if m is None:
        raise ValueError(f'cuhk03: unexpected protocol file name {name!r} '
                         '(expected pair_person_view_column.png)')
      p, i, view, c = (int(g) for g in m.groups())
      if not (1 <= p <= len(sizes) and 1 <= i <= sizes[p - 1] and 1 <= c <= 10
              and view == 1 + (c - 1) // 5):
        raise ValueError(f'cuhk03: protocol file {name!r} does not fit cuhk-03.mat ({sizes} '
                         'persons per pair, columns 1-5 camera A / 6-10 camera B)')
      parsed.append((p, i, c))
    pairs = {(lab, (p, i)) for lab, (p, i, _) in zip(labels, parsed)}
    if len({a for a, _ in pairs}) != len(pairs) or len({b for _, b in pairs}) != len(pairs):
      raise ValueError('cuhk03: protocol labels do not map one-to-one to (pair, person)')
    for split in ('train', 'query', 'gallery'):
      idx = _flat(proto[f'{split}_idx']).astype(int) - 1
      rows[split] = sorted((parsed[j] for j in idx), key=lambda k: (ident(k[0], k[1]), k[2]))
    spaces = {'train': sorted({ident(p, i) for p, i, _ in rows['train']}),
              'test': sorted({ident(p, i) for s in ('query', 'gallery') for p, i, _ in rows[s]})}
    space_of = {'train': 'train', 'query': 'test', 'gallery': 'test'}

    for k, t in enumerate(testsets):
      t = np.asarray(t, np.float64).reshape(-1, 2).astype(int)
      if not all(1 <= p <= len(sizes) and 1 <= i <= sizes[p - 1] for p, i in t):
        raise ValueError(f'cuhk03: testsets{{{k + 1}}} has (pair, person) rows outside {sizes}')
      test = {ident(p, i) for p, i in t}
      rows[f'classic{k}_train'] = [q for q in keys if ident(q[0], q[1]) not in test]
      rows[f'classic{k}_test'] = [q for q in keys if ident(q[0], q[1]) in test]
      rows[f'classic{k}_query'] = [q for q in rows[f'classic{k}_test'] if q[2] <= 5]  # camera A
      rows[f'classic{k}_gallery'] = [q for q in rows[f'classic{k}_test'] if q[2] > 5]  # B
      for part in ('train', 'test'):
        name = f'classic{k}_{part}'
        spaces[name], space_of[name] = sorted({ident(p, i) for p, i, _ in rows[name]}), name
      space_of[f'classic{k}_query'] = space_of[f'classic{k}_gallery'] = f'classic{k}_test'
    common.check_label_spaces(spaces, NUM_CLASSES, 'cuhk03')
    md = self.info.metadata
    md.update(identities=spaces, label_space=space_of, pair_sizes=[int(n) for n in sizes],
              num_empty_cells=empty, num_classic_splits=len(testsets),
              identities_without_images=sorted(set(range(1, offsets[-1] + 1)) - {
                  ident(p, i) for p, i, _ in keys}),
              protocol_labels_equal_identity=all(lab == ident(p, i) for lab, (p, i) in pairs),
              protocol_camid_mismatches=int(sum(
                  cam != 1 + (c - 1) // 5 for cam, (_, _, c) in zip(cam_ids, parsed))))
    return {s: self._generate_examples(s, r, spaces[space_of[s]], images, ident)
            for s, r in rows.items()}

  def _generate_examples(self, split, rows, ids, images, ident):
    index = {pid: n for n, pid in enumerate(ids)}
    for p, i, c in rows:
      if (p, i, c) not in images:  # empty cell named by the protocol, or skipped image
        self.images.skipped.append({'file': f'protocol {split}/{p}_{i:03d}_{1 + (c - 1) // 5}_'
                                    f'{c:02d}.png', 'reason': 'no image in cuhk-03.mat'})
        continue
      yield f'{split}/{p}_{i:03d}_{1 + (c - 1) // 5}_{c:02d}', {
          'image': images[(p, i, c)], 'label': index[ident(p, i)],
          'identity': np.int64(ident(p, i)), 'camera': np.int64((c - 1) // 5),
          'camera_pair': np.int64(p - 1), 'pair_identity': np.int64(i),
          'image_index': np.int64(c)}
    self.record_bad_files()
