"""``market1501``: Market-1501 person re-id (Zheng et al., ICCV 2015) with the 27 identity-level
attributes of Lin et al. ("Improving Person Re-identification by Attribute and Identity Learning",
Market-1501_Attribute release).

Official layout read here (Market-1501-v15.09.15.zip, or the folder it extracts to)::

    Market-1501-v15.09.15/bounding_box_train/0002_c1s1_000451_03.jpg   -> split ``train``
    Market-1501-v15.09.15/query/0001_c1s1_001051_00.jpg                -> split ``query``
    Market-1501-v15.09.15/bounding_box_test/0000_c1s1_000151_01.jpg    -> split ``gallery``
    market_attribute.mat                                                (Lin et al.)

File names are ``{pid}_c{camera}s{sequence}_{frame}_{box}.jpg``; ``pid`` -1 marks junk boxes
(dropped: the official protocol ignores them) and ``0000`` distractors (kept in ``gallery``).
Other files (``Thumbs.db``, ``gt_bbox/``, ``gt_query/``, ``readme.txt``) are not read. Expected
sizes of the real data: train 12,936 images / 751 ids, query 3,368 / 750, gallery 15,913 (19,732
minus 3,819 junk) / 750 ids + 2,793 distractor images.

Features: ``image``; ``label`` (see below); ``identity`` = pid from the file name (0 = distractor);
``camera`` = c - 1 (0..5); ``sequence``, ``frame``, ``box_index`` = the other file-name numbers as
written; ``attributes`` int64 (27,) joined by identity (all -1 when the identity has no entry, e.g.
distractors; names and value meanings in ``info.metadata``).

``label`` is the identity's index in its split's label space: ``train`` = its sorted pids;
``query`` and ``gallery`` share one space, the sorted non-distractor pids of both, then the
distractor class (pid 0) last, so a query and its gallery matches carry the same label.
``info.metadata['identities'][space]`` maps label -> pid and ``label_space`` names each split's
space. ``num_classes`` is fixed at 751 (the largest space of the real data: 751 train pids, 750
test pids + distractors); tiny archives use fewer.

market_attribute.mat, as read (scipy.io; field names from the release's attributes.py and README):
struct ``market_attribute`` with structs ``train`` (751 ids) and ``test`` (750 ids), each with one
1 x n vector per attribute over identities and ``image_index`` (1 x n cell of pid strings, e.g.
'0002'). Codes: ``age`` 1..4 = young, teenager, adult, old; every other field 1/2 = the first/second
option listed in ``ATTRIBUTES``. We store code - 1 (so 0/1 and 0..3) in the order of Lin et al.'s
list: gender, hair, sleeve (field ``up``), lower length (``down``), lower type (``clothes``), hat,
backpack, bag, handbag, age, 8 upper colours, 9 lower colours. The two structs are joined into one
pid -> attributes table (their pids are disjoint); pid 0 never gets attributes.
"""

from __future__ import annotations

import os
import re

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from fgjax.data.builders import archives, common

FOLDER = 'Market-1501-v15.09.15'
ARCHIVE = FOLDER + '.zip'
ATTRIBUTE_FILE = 'market_attribute.mat'
NUM_CLASSES = 751
SPLIT_DIRS = {'train': 'bounding_box_train', 'query': 'query', 'gallery': 'bounding_box_test'}
_NAME = re.compile(r'^(-?\d+)_c(\d+)s(\d+)_(\d+)_(\d+)\.jpg$')
_NO_YES = ('no', 'yes')
# (stored name, field in market_attribute.mat, meaning of stored values 0, 1, ...)
ATTRIBUTES = (
    ('gender', 'gender', ('male', 'female')),
    ('hair', 'hair', ('short', 'long')),
    ('sleeve', 'up', ('long', 'short')),
    ('lower_length', 'down', ('long', 'short')),
    ('lower_type', 'clothes', ('dress', 'pants')),
    ('hat', 'hat', _NO_YES),
    ('backpack', 'backpack', _NO_YES),
    ('bag', 'bag', _NO_YES),
    ('handbag', 'handbag', _NO_YES),
    ('age', 'age', ('young', 'teenager', 'adult', 'old')),
) + tuple((f'up{c}', f'up{c}', _NO_YES) for c in (
    'black', 'white', 'red', 'purple', 'yellow', 'gray', 'blue', 'green')) + tuple(
    (f'down{c}', f'down{c}', _NO_YES) for c in (
        'black', 'white', 'pink', 'purple', 'yellow', 'gray', 'blue', 'green', 'brown'))


def _unwrap(x):
  while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
    x = x.reshape(-1)[0]
  return x


def load_attributes(path: str) -> dict[int, np.ndarray]:
  """pid -> int64 (27,) stored attribute values, from market_attribute.mat."""
  mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
  if 'market_attribute' not in mat:
    raise ValueError(f'{path}: no variable "market_attribute" (found {sorted(mat)})')
  root, table = _unwrap(mat['market_attribute']), {}
  for part in ('train', 'test'):
    s = _unwrap(getattr(root, part, None))
    if s is None:
      raise ValueError(f'{path}: market_attribute has no struct {part!r}')
    names = set(getattr(s, '_fieldnames', []))
    need = ['image_index'] + [f for _, f, _ in ATTRIBUTES]
    if set(need) - names:
      raise ValueError(f'{path}: market_attribute.{part} lacks fields {sorted(set(need) - names)}'
                       f' (has {sorted(names)})')
    pids = [int(float(str(_unwrap(v)).strip())) for v in np.atleast_1d(s.image_index)]
    columns = []
    for name, field, values in ATTRIBUTES:
      codes = np.atleast_1d(np.asarray(getattr(s, field), np.float64)).reshape(-1)
      if codes.shape != (len(pids),) or np.any(codes != np.round(codes)):
        raise ValueError(f'{path}: market_attribute.{part}.{field}: expected {len(pids)} integer '
                         f'codes, got shape {codes.shape}')
      bad = (codes < 1) | (codes > len(values))
      if bad.any():
        raise ValueError(f'{path}: market_attribute.{part}.{field} = {codes[bad][0]:g} for pid '
                         f'{pids[int(np.argmax(bad))]}; expected codes 1..{len(values)} ({name})')
      columns.append(codes.astype(np.int64) - 1)
    for i, pid in enumerate(pids):
      if pid != 0:
        table[pid] = np.array([c[i] for c in columns], np.int64)
  return table


def _parse(name: str):
  m = _NAME.match(name)
  return None if m is None else tuple(int(g) for g in m.groups())  # pid, cam, seq, frame, box


class Market1501(common.BuilderBase):
  """Market-1501 (train / query / gallery) with Lin et al.'s 27 identity attributes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  ATTRIBUTE_URL = ('https://github.com/vana77/Market-1501_Attribute/raw/master/'
                   'market_attribute.mat')
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put in the manual dir (config.dataset.manual_dir / --manual_dir):
    {ARCHIVE}  (or the folder {FOLDER}/ it extracts to), from the Market-1501 page of
        Liang Zheng (https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html; mirrors on
        Google Drive / Kaggle "market-1501"); it holds bounding_box_train/, query/,
        bounding_box_test/.
    {ATTRIBUTE_FILE}  from https://github.com/vana77/Market-1501_Attribute (Lin et al.; also
        accepted inside Market-1501_Attribute[-master]/; downloaded from GitHub when absent and
        a network is available).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info(
        common.reid_features(
            NUM_CLASSES, 'sequence', 'frame', 'box_index',
            attributes=tfds.features.Tensor(shape=(len(ATTRIBUTES),), dtype=np.int64)),
        description=(
            'Market-1501 person re-identification (6 cameras) with the 27 identity-level '
            'attributes of Lin et al. Splits: train (751 ids), query and gallery (750 test ids; '
            'gallery also holds distractors, identity 0); junk boxes (id -1) dropped. `label` = '
            'index in the split\'s label space (metadata identities / label_space).'),
        homepage='https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html',
        metadata=dict(
            attribute_names=[a[0] for a in ATTRIBUTES],
            attribute_mat_fields=[a[1] for a in ATTRIBUTES],
            attribute_values=[list(a[2]) for a in ATTRIBUTES],
            attribute_num_values=[len(a[2]) for a in ATTRIBUTES],
            attribute_unknown=-1,
            num_cameras=6,
            label_space={'train': 'train', 'query': 'test', 'gallery': 'test'}),
    )

  def _find(self, dl_manager):
    """(dataset folder, attribute file or None, folder where files are expected)."""
    manual, base = archives.manual_dirs(dl_manager)
    root = os.path.join(base, FOLDER)
    if manual:
      candidates = [os.path.join(manual, FOLDER), manual]
      if not any(os.path.isdir(os.path.join(c, 'bounding_box_train')) for c in candidates) and \
          os.path.isfile(os.path.join(manual, ARCHIVE)):
        extracted = common.extract(dl_manager, os.path.join(manual, ARCHIVE), 'market1501')
        candidates += [os.path.join(extracted, FOLDER), extracted]
      root = next((c for c in candidates if os.path.isdir(os.path.join(c, 'bounding_box_train'))),
                  root)
    attrs = [os.path.join(base, d, ATTRIBUTE_FILE) for d in
             ('', 'Market-1501_Attribute', 'Market-1501_Attribute-master')]
    attrs.append(os.path.join(root, ATTRIBUTE_FILE))
    return root, next((a for a in attrs if os.path.isfile(a)), None), base

  def _split_generators(self, dl_manager):
    root, attr_path, base = self._find(dl_manager)
    images = [common.Required(os.path.join(root, d), f'folder "{d}" of {ARCHIVE} (Market-1501, '
                              'Liang Zheng; see MANUAL_DOWNLOAD_INSTRUCTIONS)')
              for d in SPLIT_DIRS.values()]
    have_images = all(os.path.isdir(r.path) for r in images)
    if attr_path is None and have_images:
      attr_path = archives.fetch(dl_manager, self.ATTRIBUTE_URL)
    attr_req = common.Required(
        attr_path or os.path.join(base, ATTRIBUTE_FILE),
        'market_attribute.mat of Lin et al., https://github.com/vana77/Market-1501_Attribute')
    common.require('', images + [attr_req], 'market1501')
    table = load_attributes(attr_path)

    rows = {}
    for split, folder in SPLIT_DIRS.items():
      rows[split] = []
      for name in sorted(os.listdir(os.path.join(root, folder))):
        if not name.lower().endswith('.jpg'):
          continue  # Thumbs.db and the like
        parsed = _parse(name)
        if parsed is None:
          raise ValueError(f'market1501: unexpected file name {folder}/{name} (expected '
                           'pid_c{camera}s{sequence}_{frame}_{box}.jpg)')
        if not 1 <= parsed[1] <= 6:
          raise ValueError(f'market1501: camera c{parsed[1]} out of 1..6 in {folder}/{name}')
        if parsed[0] != -1:  # junk boxes are dropped
          rows[split].append((os.path.join(root, folder, name), parsed))
    train_ids = sorted({p[0] for _, p in rows['train']})
    test_ids = sorted({p[0] for s in ('query', 'gallery') for _, p in rows[s]} - {0})
    spaces = {'train': train_ids, 'test': test_ids + [0]}
    common.check_label_spaces(spaces, NUM_CLASSES, 'market1501')
    self.info.metadata['identities'] = spaces
    self.info.metadata['identities_without_attributes'] = sorted(
        {p[0] for r in rows.values() for _, p in r} - set(table))
    return {split: self._generate_examples(split, rows[split],
                                           spaces['train' if split == 'train' else 'test'], table)
            for split in SPLIT_DIRS}

  def _generate_examples(self, split, rows, ids, table):
    index = {pid: i for i, pid in enumerate(ids)}
    unknown = np.full(len(ATTRIBUTES), -1, np.int64)
    for path, (pid, cam, seq, frame, box) in rows:
      image = self.images.read(path)
      if image is None:
        continue
      yield f'{split}/{os.path.basename(path)}', {
          'image': image, 'label': index[pid], 'identity': np.int64(pid),
          'camera': np.int64(cam - 1), 'sequence': np.int64(seq), 'frame': np.int64(frame),
          'box_index': np.int64(box), 'attributes': table.get(pid, unknown)}
    self.record_bad_files()
