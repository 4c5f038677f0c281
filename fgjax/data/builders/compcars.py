"""CompCars (Yang et al., CVPR 2015), web-nature ``data`` release: the 431-model classification subset.

Manual only (given out on request as a split, password-protected zip). Official layout (root = the
release's ``data/`` folder; per the CompCars README and public loaders of the real files):

  image/<make_id>/<model_id>/<released_year>/<image_name>.jpg
  label/<make_id>/<model_id>/<released_year>/<image_name>.txt  line 1: viewpoint (-1 uncertain,
      1 front, 2 rear, 3 side, 4 front-side, 5 rear-side); line 2: number of boxes (1); line 3:
      ``x1 y1 x2 y2`` in 1-based inclusive pixels (MATLAB convention).
  misc/make_model_name.mat  ``make_names`` (163x1 cell), ``model_names`` (1716x1 cell, some empty),
                            indexed by the 1-based make_id / model_id of the paths.
  misc/car_type.mat         ``types`` (1x12 cell: MPV, SUV, sedan, ...), indexed 1-based.
  misc/attributes.txt       header, then ``model_id maximum_speed displacement door_number
                            seat_number type`` per model, space separated; 0 = unknown (type too).
  train_test_split/classification/{train,test}.txt  one ``make/model/year/name.jpg`` per line.

Features: ``label`` = ClassLabel over the model ids of train.txt + test.txt (431) in increasing
model_id, named by ``model_names`` (whitespace collapsed; empty -> ``model_<id>``; shared names get
`` [<model_id>]``); ``model_id`` / ``make_id`` from the path; ``year`` = released_year folder, -1 if
not an integer (``unknown``); ``viewpoint`` = line 1 (-1 without label file); ``bbox`` =
((y1-1)/H, (x1-1)/W, y2/H, x2/W) of the first box clipped to [0, 1], (0, 0, 1, 1) without label
file or box (listed in ``metadata['label_problems']``); ``index`` = 0-based line in the split file
(blank lines ignored); ``attributes`` float32 (5,) = (maximum_speed km/h, displacement L,
door_number, seat_number, type = 1-based car_type.mat index) as written, NaN where unknown (<= 0 or
no row); ``attribute_classes`` int64 (5,) for softmax heads (A3M), -1 where unknown: speed /
displacement binned by SPEED_EDGES / DISPLACEMENT_EDGES (class = number of edges <= value), doors /
seats = index in the sorted distinct known values over the subset's models, type = type - 1 (12);
names, counts, edges in ``metadata``. Splits ``train`` / ``test`` = the official lists; a listed
image missing or unreadable is skipped and listed in ``metadata['bad_files']``. Key = relative path.
A3M (Han et al. 2018) reports 36,456 / 15,627 images for this subset, not the official lists' sizes
(CompCars paper: 16,016 / 14,939); we use the official lists.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from fgjax.data.builders import common

NAME = 'compcars'
VIEWPOINTS = {-1: 'uncertain', 1: 'front', 2: 'rear', 3: 'side', 4: 'front-side', 5: 'rear-side'}
ATTRIBUTES = ('maximum_speed', 'displacement', 'door_number', 'seat_number', 'type')
SPEED_EDGES = (160.0, 180.0, 200.0, 220.0, 250.0)  # km/h
DISPLACEMENT_EDGES = (1.4, 1.7, 2.1, 2.6, 3.5)  # litres; edges sit between the usual values
SPLIT_DIR = 'train_test_split/classification'
_ARCHIVE_ENDINGS = ('.zip', '.tar', '.tar.gz', '.tgz')

_CITATION = """@inproceedings{yang2015compcars, author={Yang, Linjie and Luo, Ping and Loy, Chen Change
  and Tang, Xiaoou}, title={A Large-Scale Car Dataset for Fine-Grained Categorization and
  Verification}, booktitle={CVPR}, pages={3973--3981}, year={2015}}"""


def _required():
  src = ' (CompCars "data" release, see MANUAL_DOWNLOAD_INSTRUCTIONS)'
  return [common.Required(p, what + src) for p, what in (
      ('misc/make_model_name.mat', 'make/model names'), ('misc/car_type.mat', 'car type names'),
      ('misc/attributes.txt', 'per-model attributes'),
      (f'{SPLIT_DIR}/train.txt', 'classification train list'),
      (f'{SPLIT_DIR}/test.txt', 'classification test list'),
      ('image', 'folder image/<make>/<model>/<year>/<name>.jpg'),
      ('label', 'folder label/<make>/<model>/<year>/<name>.txt'))]


def _find_root(base: str, depth: int = 3) -> str | None:
  """The first folder (breadth first, <= depth levels down) holding misc/ or train_test_split/."""
  frontier = [base]
  for _ in range(depth + 1):
    deeper = []
    for d in frontier:
      if os.path.isdir(os.path.join(d, 'misc')) or os.path.isdir(os.path.join(d, SPLIT_DIR)):
        return d
      deeper += sorted(e.path for e in os.scandir(d)
                       if e.is_dir() and e.name not in ('image', 'label', 'part'))
    frontier = deeper
  return None


def _cell(c) -> str:
  """One cell of a MATLAB cell array of strings, whitespace collapsed ('' for an empty cell)."""
  while isinstance(c, np.ndarray):
    c = c.ravel()[0] if c.size else ''
  return ' '.join(str(c).split())


def _load_cells(path: str, *keys: str) -> list[list[str]]:
  mat = scipy.io.loadmat(path)
  return [[_cell(c) for c in np.asarray(mat[k], dtype=object).ravel()] for k in keys]


def _read_split(path: str) -> list[tuple[int, str, int, int, int]]:
  """(index, relative path, make_id, model_id, year) per non-empty line of a split file."""
  rows = []
  with open(path, encoding='utf-8-sig') as f:
    lines = [line.strip().replace('\\', '/') for line in f if line.strip()]
  for index, rel in enumerate(lines):
    rel = rel.removeprefix('./').removeprefix('image/')
    parts = rel.split('/')
    if len(parts) != 4 or not (parts[0].isdigit() and parts[1].isdigit()):
      raise ValueError(f'{path}:{index + 1}: expected make_id/model_id/year/name.jpg, got {rel!r}')
    year = int(parts[2]) if parts[2].isdigit() else -1
    rows.append((index, rel, int(parts[0]), int(parts[1]), year))
  return rows


def _read_attributes(path: str) -> dict[int, np.ndarray]:
  """model_id -> float64 (5,) as written, NaN for unknown (<= 0); the header line is skipped."""
  out = {}
  with open(path, encoding='utf-8-sig') as f:
    for line in f:
      tok = line.split()
      if tok and tok[0].isdigit() and len(tok) < 6:  # (the header / blank lines are skipped)
        raise ValueError(f'{path}: expected 6 columns (model_id + 5 attributes), got {line!r}')
      if tok and tok[0].isdigit():
        vals = np.array([float(t) for t in tok[1:6]], np.float64)
        out[int(tok[0])] = np.where(vals > 0, vals, np.nan)
  return out


def _read_label(path: str, width: int, height: int):
  """(viewpoint, bbox or None) from a label file."""
  with open(path, encoding='utf-8-sig') as f:
    lines = [line.split() for line in f if line.strip()]
  viewpoint = int(float(lines[0][0])) if lines else -1
  if len(lines) < 3 or int(float(lines[1][0])) < 1 or len(lines[2]) < 4:
    return viewpoint, None
  return viewpoint, common.box_from_corners(*(float(v) for v in lines[2][:4]), height, width)


class CompCars(common.BuilderBase):
  """CompCars web-nature classification subset (431 car models) with the 5 model attributes."""

  name = NAME  # tfds would derive 'comp_cars' from the class name; data lives in <data_dir>/compcars
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CompCars is given out on request: http://mmlab.ie.cuhk.edu.hk/datasets/comp_cars/ (sign and e-mail
the license agreement to get the links and the unzip password). Download the "data" release (a
split zip: data.zip, data.z01, ...), join and unzip it with the password, e.g.
    zip -s 0 data.zip --out joined.zip && unzip -P <password> joined.zip    (or: 7z x data.zip)
and put (or symlink) the data/ folder in the manual dir: <manual_dir>/data/{image,label}/...,
data/misc/{make_model_name.mat,car_type.mat,attributes.txt} and
data/train_test_split/classification/{train,test}.txt (data/'s contents directly in the manual dir
also work). One UNENCRYPTED archive of data/ (data.zip/.tar/.tar.gz/.tgz) there is extracted."""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info(  # label names set from the files in _split_generators
        common.image_features(
            **{k: tfds.features.Scalar(dtype=np.int64)
               for k in ('index', 'model_id', 'make_id', 'year', 'viewpoint')},
            bbox=common.bbox_feature(),
            attributes=tfds.features.Tensor(shape=(5,), dtype=np.float32),
            attribute_classes=tfds.features.Tensor(shape=(5,), dtype=np.int64)),
        description=__doc__,
        homepage='http://mmlab.ie.cuhk.edu.hk/datasets/comp_cars/',
        citation=_CITATION,
    )

  def _locate(self, dl_manager) -> str:
    try:
      manual = str(dl_manager.manual_dir)
    except AssertionError as e:
      raise common.MissingFiles(f'{NAME}: {e}') from None
    if (root := _find_root(manual)) is not None:
      return root
    names = sorted(os.listdir(manual), key=lambda n: (not n.lower().startswith('data'), n))
    if any(n.lower().endswith('.z01') for n in names):
      raise common.MissingFiles(f'{NAME}: {manual} holds a split (multi-part) zip; join and unzip '
                                f'it first:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    for name in names:
      if not name.lower().endswith(_ARCHIVE_ENDINGS) or name.lower().startswith('sv_'):
        continue
      try:
        extracted = common.extract(dl_manager, os.path.join(manual, name), NAME)
      except Exception as e:  # encrypted / corrupt archive
        raise common.MissingFiles(
            f'{NAME}: could not extract {os.path.join(manual, name)} ({type(e).__name__}: {e}); '
            f'the official zip is password-protected:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}') from e
      if (root := _find_root(extracted)) is not None:
        return root
    return os.path.join(manual, 'data')  # nothing found: require() names every missing file

  def _split_generators(self, dl_manager):
    root = self._locate(dl_manager)
    common.require(root, _required(), NAME)
    misc = os.path.join(root, 'misc')
    make_names, model_names = _load_cells(f'{misc}/make_model_name.mat', 'make_names', 'model_names')
    [types] = _load_cells(f'{misc}/car_type.mat', 'types')
    attrs = _read_attributes(f'{misc}/attributes.txt')
    splits = {s: _read_split(os.path.join(root, SPLIT_DIR, f'{s}.txt')) for s in ('train', 'test')}

    makes = {}
    for rows in splits.values():
      for _, rel, make_id, model_id, _ in rows:
        if makes.setdefault(model_id, make_id) != make_id:
          raise ValueError(f'{NAME}: model {model_id} under makes {makes[model_id]} and {make_id}')
    model_ids = sorted(makes)
    pick = lambda seq, i: seq[i - 1] if 1 <= i <= len(seq) else ''
    class_names = [pick(model_names, m) or f'model_{m}' for m in model_ids]
    class_names = [f'{n} [{m}]' if class_names.count(n) > 1 else n
                   for n, m in zip(class_names, model_ids)]
    self.info.features['label'].names = class_names

    raw = {m: attrs.get(m, np.full(5, np.nan)) for m in model_ids}
    values = [sorted({int(raw[m][k]) for m in model_ids if not np.isnan(raw[m][k])})
              for k in (2, 3)]  # door_number, seat_number

    def classes(a):
      c = np.full(5, -1, np.int64)
      for k, edges in ((0, SPEED_EDGES), (1, DISPLACEMENT_EDGES)):
        if not np.isnan(a[k]):
          c[k] = np.searchsorted(edges, a[k], side='right')
      for k, vals in zip((2, 3), values):
        if not np.isnan(a[k]):
          c[k] = vals.index(int(a[k]))
      if not np.isnan(a[4]) and 1 <= a[4] <= len(types):
        c[4] = int(a[4]) - 1
      return c

    per_model = {m: (i, raw[m].astype(np.float32), classes(raw[m])) for i, m in enumerate(model_ids)}
    fmt = lambda e: [f'<{e[0]:g}'] + [f'[{a:g},{b:g})' for a, b in zip(e, e[1:])] + [f'>={e[-1]:g}']
    class_lists = [fmt(SPEED_EDGES), fmt(DISPLACEMENT_EDGES), *[list(map(str, v)) for v in values],
                   types]
    self._label_problems = []  # filled while generating
    self.info.metadata.update({
        'class_model_ids': model_ids, 'class_make_ids': [makes[m] for m in model_ids],
        'class_make_names': [pick(make_names, makes[m]) for m in model_ids],
        'viewpoint_names': {str(k): v for k, v in VIEWPOINTS.items()},
        'attribute_names': list(ATTRIBUTES),
        'attribute_units': ['km/h', 'L', 'doors', 'seats', 'index into car_type.mat (1-based)'],
        'attribute_bin_edges': [list(SPEED_EDGES), list(DISPLACEMENT_EDGES), [], [], []],
        'attribute_class_names': class_lists, 'attribute_num_classes': list(map(len, class_lists)),
        'models_without_attributes': [m for m in model_ids if m not in attrs],
        'split_rule': f'official {SPLIT_DIR}/train.txt and test.txt',
    })
    return {s: self._generate_examples(root, rows, per_model) for s, rows in splits.items()}

  def _generate_examples(self, root, rows, per_model):
    yield from self.examples(rows, functools.partial(self._example, root, per_model),
                             functools.partial(self._read, root))
    self.info.metadata['label_problems'] = list(self._label_problems)

  def _read(self, root, row):
    path = os.path.join(root, 'image', *row[1].split('/'))
    if not os.path.exists(path):
      self.images.skipped.append({'file': path, 'reason': 'listed in the split file, missing'})
      return None, None
    return self.images.read_sized(path)

  def _example(self, root, per_model, row, data, size):
    index, rel, make_id, model_id, year = row
    height, width = size
    label_path = os.path.splitext(os.path.join(root, 'label', *rel.split('/')))[0] + '.txt'
    viewpoint, bbox = -1, None
    if os.path.exists(label_path):
      viewpoint, bbox = _read_label(label_path, width, height)
    if bbox is None:
      reason = 'no box in the label file' if os.path.exists(label_path) else 'no label file'
      self._label_problems.append({'file': label_path, 'reason': reason})
      bbox = np.array([0.0, 0.0, 1.0, 1.0], np.float32)
    label, attributes, attribute_classes = per_model[model_id]
    return rel, {
        'image': data, 'label': label, 'index': index, 'model_id': model_id,
        'make_id': make_id, 'year': year, 'viewpoint': viewpoint, 'bbox': bbox,
        'attributes': attributes, 'attribute_classes': attribute_classes,
    }
