"""``image_folder``: your own images, one subfolder per class, at ``config.dataset.path``.

Layouts (FOLDER = config.dataset.path; images: the extensions of `fgjax.images.IMAGE_EXTENSIONS`,
found recursively inside a class folder; files and folders whose name starts with ``.``, and class
folders starting with ``__`` such as ``__MACOSX``, are not read)::

    FOLDER/train/<class>/*.jpg   FOLDER/test/<class>/*.jpg     split by you (when train/ exists)
    FOLDER/<class>/*.jpg                                      split here (below)

(so a flat folder cannot have a class named ``train``; next to train/ and test/, other folders are
not read).

Labels: the class folder names, sorted (Python string order) -> label 0, 1, ...; with train/ and
test/, the classes are train/'s and every test/ class must be one of them. A class folder with no
image, fewer than 2 classes, or a missing / empty FOLDER is a `ConfigError` naming
config.dataset.path and what was expected.

Split of a flat folder (splits ``train`` / ``test``), stratified: in each class, of its n image
files (sorted by path), round-half-up(test_fraction * n), at most n - 1, go to ``test``, drawn by
a permutation from NumPy's generator seeded with (split_seed, CRC-32 of the class name), so a
class's split depends on its own files only. Options: ``config.dataset.config=
'test_fraction=0.2,split_seed=0'`` (the defaults; fgjax.data.prepare: ``--builder_config=...``).
The split is drawn over the files found, before decoding: an unreadable file leaves its split one
image shorter.

Annotations (optional): ``FOLDER/annotations.csv``, a header row, one row per image file (every
image needs one, and every row an image): ``path`` (relative to FOLDER, ``/``-separated, as found:
``cat/1.jpg`` or ``train/cat/1.jpg``), and any of these columns, each the feature of the same name
the other builders have:

- ``y_min,x_min,y_max,x_max`` (all four): a box in pixels of the upright image (after EXIF
  orientation), 0-based continuous coordinates (the whole image is 0,0,H,W) -> ``bbox`` float32
  (ymin, xmin, ymax, xmax) as fractions of H and W, clipped to [0, 1] (`common.box_from_xywh`);
  four empty cells = the whole image;
- ``identity``, ``camera``: integers -> int64 ``identity`` / ``camera`` (re-id);
- ``attr_<name>`` (any number): integers >= 0, empty = unknown (-1) -> ``attributes`` int64 (K,)
  in column order; metadata ``attribute_names``, ``attribute_num_values`` (max + 1, read by a3m's
  config check), ``attribute_values``, ``attribute_unknown``.

Every example also has ``image_id`` int64: the file's index in ``info.metadata['image_files']``
(every image file found, sorted by path), so exported ids name files. Unreadable images are
skipped and convertible ones converted (`common.ImageReader`; ``info.metadata['bad_files']``).

Caching: tfds keeps a build under DATA_DIR/image_folder/<config name>/1.0.0 and reuses it by that
name. The config name is ``<folder name>_<12 hex digits>``, the digits a SHA-256 of the folder's
real path, the split options and the listing (each image's path, class, split, size and
modification time, and annotations.csv's bytes): two folders never share a build, and a changed
folder (images added, removed, moved or edited, a new CSV) is built anew under a new name on its
next use, never read stale. Earlier builds stay until deleted.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import posixpath
import re
import zlib

import numpy as np
import tensorflow_datasets as tfds

from fgjax import images as images_lib
from fgjax.data.builders import common
from fgjax.default_config import ConfigError, parse_arg

NAME = 'image_folder'
ANNOTATIONS = 'annotations.csv'
SPLITS = ('train', 'test')
BOX_COLUMNS = ('y_min', 'x_min', 'y_max', 'x_max')
ID_COLUMNS = ('identity', 'camera')
ATTRIBUTE_PREFIX = 'attr_'
OPTIONS = {'test_fraction': 0.2, 'split_seed': 0}  # config.dataset.config keys and defaults
LAYOUT = ('one subfolder per class holding its images: FOLDER/<class>/*.jpg, or FOLDER/train/'
          '<class>/ and FOLDER/test/<class>/')


@dataclasses.dataclass(frozen=True)
class ImageFile:
  file: str  # relative to the folder, '/'-separated
  label: int
  split: str


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """A folder as found by `folder_config`: what the builder writes, decided before building."""
  path: str = ''  # the folder's real path
  layout: str = 'flat'  # 'flat' | 'split folders'
  test_fraction: float = OPTIONS['test_fraction']
  split_seed: int = OPTIONS['split_seed']
  # (repr=False: tfds logs the config's repr, which would list every file)
  class_names: tuple = dataclasses.field(default=(), repr=False)
  files: tuple = dataclasses.field(default=(), repr=False)  # ImageFile, by file: image_id = index
  columns: tuple = ()  # the features annotations.csv gives: bbox, identity, camera, attributes
  attribute_names: tuple = dataclasses.field(default=(), repr=False)
  rows: dict = dataclasses.field(default_factory=dict, repr=False)  # file -> {feature: value}


def _where(path) -> str:
  return f'config.dataset.path={path}'


def parse_options(text: str | None) -> dict:
  """test_fraction and split_seed from config.dataset.config ('key=value,...'; None: defaults)."""
  try:
    options = parse_arg(text, runlocal=None, **OPTIONS)
  except ValueError as e:
    raise ConfigError(f'config.dataset.config={text!r}: dataset {NAME!r} takes '
                      f'"test_fraction=F,split_seed=N" (defaults {OPTIONS}): {e}') from None
  if not 0.0 < options.test_fraction < 1.0:
    raise ConfigError(f'config.dataset.config={text!r}: test_fraction must be in (0, 1), got '
                      f'{options.test_fraction}')
  return dict(options)


def _is_image(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in images_lib.IMAGE_EXTENSIONS


def _hidden(relpath: str) -> bool:
  return any(part.startswith('.') for part in relpath.split(os.sep))


def _class_folders(root: str, path) -> dict[str, list[str]]:
  """{class name: the paths of its image files, sorted} of the class folders in `root`."""
  names = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))
                 and not n.startswith(('.', '__')))
  if not names:
    loose = sum(_is_image(n) for n in os.listdir(root))
    note = f'; it holds {loose} image files directly: put them in class subfolders' if loose else ''
    raise ConfigError(f'{_where(path)}: no class folder in {root} (expected {LAYOUT}){note}')
  found = {n: [f.path for f in images_lib.find_images([os.path.join(root, n)])[0]
                if not _hidden(os.path.relpath(f.path, os.path.join(root, n)))] for n in names}
  empty = [n for n, f in found.items() if not f]
  if empty:
    raise ConfigError(f'{_where(path)}: class folders with no image '
                      f'({", ".join(images_lib.IMAGE_EXTENSIONS)}) in {root}: {", ".join(empty)}')
  return found


def split_flat(files: list[str], class_name: str, test_fraction: float, seed: int) -> set[str]:
  """The test files of one class of a flat folder (module docstring)."""
  files, n = sorted(files), len(files)
  n_test = min(math.floor(test_fraction * n + 0.5), n - 1)
  rng = np.random.default_rng([seed, zlib.crc32(class_name.encode('utf-8'))])
  return {files[i] for i in rng.permutation(n)[:n_test]}


def _listing(path: str, options: dict) -> tuple[str, list[str], list[ImageFile]]:
  """(layout, class names, image files sorted by file) of the folder at `path`."""
  rel = lambda p: os.path.relpath(p, path).replace(os.sep, '/')  # noqa: E731
  if os.path.isdir(os.path.join(path, 'train')):
    if not os.path.isdir(os.path.join(path, 'test')):
      raise ConfigError(f'{_where(path)} has train/ but no test/ (expected {LAYOUT})')
    if options != OPTIONS:
      raise ConfigError(f'config.dataset.config: {_where(path)} is split by its train/ and test/ '
                        'folders; test_fraction and split_seed apply to a flat folder only')
    found = {s: _class_folders(os.path.join(path, s), path) for s in SPLITS}
    extra = sorted(set(found['test']) - set(found['train']))
    if extra:
      raise ConfigError(f'{_where(path)}: test/ has classes that train/ lacks: {", ".join(extra)}')
    classes = sorted(found['train'])
    label = {c: i for i, c in enumerate(classes)}
    files = [ImageFile(rel(f), label[c], s) for s in SPLITS for c, fs in found[s].items()
             for f in fs]
    layout = 'split folders'
  else:
    found = _class_folders(path, path)
    classes = sorted(found)
    files = []
    for label, c in enumerate(classes):
      test = split_flat(found[c], c, options['test_fraction'], options['split_seed'])
      files += [ImageFile(rel(f), label, 'test' if f in test else 'train') for f in found[c]]
    layout = 'flat'
  if len(classes) < 2:
    raise ConfigError(f'{_where(path)}: found 1 class folder ({classes[0]}); a classifier needs at '
                      f'least 2 (expected {LAYOUT})')
  if not any(f.split == 'test' for f in files):
    raise ConfigError(f'{_where(path)}: the test split would be empty (each class needs 2 images '
                      'to give one to test; raise test_fraction in config.dataset.config)')
  return layout, classes, sorted(files, key=lambda f: f.file)


def _number(text: str, kind, where: str):
  try:
    value = float(text)
    if not math.isfinite(value) or (kind is int and value != int(value)):
      raise ValueError
    return kind(value)
  except (ValueError, OverflowError):
    raise ConfigError(f'{where}: expected {"an integer" if kind is int else "a number"}, got '
                      f'{text!r}') from None


def read_annotations(path: str, data: bytes, files: list[str]):
  """(columns, attribute names, {file: {feature: value}}) of annotations.csv's bytes `data`;
  bbox values stay pixel boxes (y_min, x_min, y_max, x_max) or None (whole image) until the image
  size is known."""
  name = os.path.join(path, ANNOTATIONS)
  reader = csv.DictReader(io.StringIO(data.decode('utf-8-sig')))
  header = [h.strip() for h in reader.fieldnames or []]
  attrs = [h for h in header if h.startswith(ATTRIBUTE_PREFIX) and len(h) > len(ATTRIBUTE_PREFIX)]
  known = {'path', *BOX_COLUMNS, *ID_COLUMNS, *attrs}
  unknown = [h for h in header if h not in known]
  has_box = [c in header for c in BOX_COLUMNS]
  if 'path' not in header or unknown or any(has_box) != all(has_box):
    raise ConfigError(
        f'{name}: header {",".join(header)}: expected a column "path" and any of '
        f'{",".join(BOX_COLUMNS)} (all four), {", ".join(ID_COLUMNS)}, {ATTRIBUTE_PREFIX}<name>'
        + (f'; unknown columns: {", ".join(unknown)}' if unknown else ''))
  columns = ('bbox',) * all(has_box) + tuple(c for c in ID_COLUMNS if c in header) + (
      ('attributes',) if attrs else ())
  rows = {}
  for raw in reader:
    row = {k.strip(): (v or '').strip() for k, v in raw.items() if k is not None}
    where = f'{name} line {reader.line_num}'
    file = posixpath.normpath(row['path'].replace('\\', '/'))
    if file in rows:
      raise ConfigError(f'{where}: {file} has a row already')
    values = {}
    if 'bbox' in columns:
      cells = [row[c] for c in BOX_COLUMNS]
      if any(cells) and not all(cells):
        raise ConfigError(f'{where}: give all four of {",".join(BOX_COLUMNS)}, or none (the '
                          'whole image)')
      box = [_number(c, float, f'{where} {k}') for c, k in zip(cells, BOX_COLUMNS)] if all(
          cells) else None
      if box and (box[2] <= box[0] or box[3] <= box[1]):
        raise ConfigError(f'{where}: the box needs y_max > y_min and x_max > x_min, got {box}')
      values['bbox'] = box
    for c in ID_COLUMNS:
      if c in columns:
        values[c] = _number(row[c], int, f'{where} {c}')
    if attrs:
      values['attributes'] = np.array(
          [_number(row[a], int, f'{where} {a}') if row[a] else -1 for a in attrs], np.int64)
      if (values['attributes'] < -1).any():
        raise ConfigError(f'{where}: attribute values must be integers >= 0 (empty = unknown)')
    rows[file] = values
  missing, orphans = sorted(set(files) - set(rows)), sorted(set(rows) - set(files))
  for what, listed in (('image files without a row', missing),
                       ('rows naming no image file found', orphans)):
    if listed:
      raise ConfigError(f'{name}: {len(listed)} {what} (paths are relative to {path}, '
                        f'"/"-separated): {", ".join(listed[:10])}')
  return columns, tuple(a[len(ATTRIBUTE_PREFIX):] for a in attrs), rows


def _slug(path: str) -> str:
  return re.sub(r'[^a-z0-9]+', '_', os.path.basename(path).lower()).strip('_')[:40] or 'folder'


def folder_config(path: str | None, options_text: str | None = None) -> ImageFolderConfig:
  """The builder config of the folder `path` (config.dataset.path) with the split options of
  `options_text` (config.dataset.config): lists the folder and reads annotations.csv, so every
  problem is found before building. ConfigError for a missing, empty or malformed folder."""
  if not path:
    raise ConfigError(f'config.dataset.path is not set: dataset {NAME!r} reads your images from '
                      f'a folder with {LAYOUT}; pass --config.dataset.path=FOLDER (python -m '
                      f'fgjax.data.prepare {NAME} --path=FOLDER)')
  shown = path
  path = os.path.realpath(os.path.expanduser(os.path.expandvars(path)))
  if not os.path.isdir(path):
    what = 'is a file, not a folder' if os.path.exists(path) else 'does not exist'
    raise ConfigError(f'{_where(shown)} {what} (expected a folder with {LAYOUT})')
  options = parse_options(options_text)
  layout, classes, files = _listing(path, options)
  digest = hashlib.sha256(json.dumps([path, layout, options], sort_keys=True).encode())
  for f in files:
    st = os.stat(os.path.join(path, f.file))
    digest.update(f'{f.file}\t{f.label}\t{f.split}\t{st.st_size}\t{st.st_mtime_ns}\n'.encode())
  columns, attribute_names, rows = (), (), {}
  if os.path.isfile(os.path.join(path, ANNOTATIONS)):
    with open(os.path.join(path, ANNOTATIONS), 'rb') as f:
      data = f.read()
    digest.update(data)
    columns, attribute_names, rows = read_annotations(path, data, [f.file for f in files])
  return ImageFolderConfig(
      name=f'{_slug(path)}_{digest.hexdigest()[:12]}', description=f'the images of {path}',
      path=path, layout=layout, class_names=tuple(classes), files=tuple(files), columns=columns,
      attribute_names=attribute_names, rows=rows, **options)


class ImageFolder(common.BuilderBase, skip_registration=True):
  """A folder of class subfolders (module docstring); made by `datasets.make_builder` from
  config.dataset.path through `builder_config_from`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  @classmethod
  def builder_config_from(cls, cfg) -> ImageFolderConfig:
    """The builder config of config.dataset (`path`, `config` = the split options)."""
    return folder_config(cfg.get('path'), cfg.get('config'))

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    if not isinstance(c, ImageFolderConfig):
      raise ConfigError('config.dataset.path is not set: the image_folder builder is made from it '
                        '(fgjax.data.datasets.make_builder)')
    more = {'image_id': np.int64}
    metadata = dict(path=c.path, layout=c.layout, class_names=list(c.class_names),
                    image_files=[f.file for f in c.files], annotation_columns=list(c.columns))
    if c.layout == 'flat':
      metadata.update(test_fraction=c.test_fraction, split_seed=c.split_seed)
    if 'bbox' in c.columns:
      more['bbox'] = common.bbox_feature()
      metadata['bbox_format'] = ('(ymin, xmin, ymax, xmax) in [0, 1]; source y_min x_min y_max '
                                 'x_max in 0-based continuous pixels')
    more.update({k: np.int64 for k in ID_COLUMNS if k in c.columns})
    if c.attribute_names:
      more['attributes'] = tfds.features.Tensor(shape=(len(c.attribute_names),), dtype=np.int64)
      values = np.stack([r['attributes'] for r in c.rows.values()])
      counts = [max(1, int(v) + 1) for v in values.max(0)]
      metadata.update(attribute_names=list(c.attribute_names), attribute_num_values=counts,
                      attribute_values=[[str(v) for v in range(n)] for n in counts],
                      attribute_unknown=-1)
    return self.dataset_info(
        common.image_features(tfds.features.ClassLabel(names=list(c.class_names)), **more),
        description=f'Your images: {len(c.class_names)} classes from the folder {c.path} '
                    f'({c.layout}).', metadata=metadata)

  def _split_generators(self, dl_manager):
    del dl_manager  # the folder is read in place
    return {s: self._generate_examples(s) for s in SPLITS}

  def _generate_examples(self, split):
    c = self.builder_config
    records = [(i, f) for i, f in enumerate(c.files) if f.split == split]
    return self.examples(records, self._example,
                         read=lambda r: self.images.read_sized(os.path.join(c.path, r[1].file)))

  def _example(self, record, data: bytes, size: tuple[int, int]):
    i, f = record
    out = {'image': data, 'label': f.label, 'image_id': np.int64(i)}
    row = self.builder_config.rows.get(f.file, {})
    out.update({k: np.int64(row[k]) for k in ID_COLUMNS if k in row})
    if 'attributes' in row:
      out['attributes'] = row['attributes']
    if 'bbox' in row:
      h, w = size
      y0, x0, y1, x1 = row['bbox'] or (0.0, 0.0, h, w)
      out['bbox'] = common.box_from_xywh(x0, y0, x1 - x0, y1 - y0, h, w)
    return f.file, out
