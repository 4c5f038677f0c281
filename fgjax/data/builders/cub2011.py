"""``cub2011``: Caltech-UCSD Birds-200-2011 read from the official ``CUB_200_2011.tgz``.

Official layout (README inside the archive; ``attributes.txt`` sits NEXT TO ``CUB_200_2011/`` in
the archive, also accepted in ``CUB_200_2011/`` and ``CUB_200_2011/attributes/``)::

    CUB_200_2011/images.txt                        <image_id> <relative path under images/>
    CUB_200_2011/image_class_labels.txt            <image_id> <class_id>            (1-based)
    CUB_200_2011/train_test_split.txt              <image_id> <is_training_image>  (1 / 0)
    CUB_200_2011/bounding_boxes.txt                <image_id> <x> <y> <width> <height>  (float px)
    CUB_200_2011/classes.txt                       <class_id> <NNN.Class_name>
    CUB_200_2011/parts/parts.txt                   <part_id> <part name, may hold spaces>  (15)
    CUB_200_2011/parts/part_locs.txt               <image_id> <part_id> <x> <y> <visible>
    CUB_200_2011/attributes/image_attribute_labels.txt
                                   <image_id> <attr_id> <is_present> <certainty_id> <time>
    attributes.txt                                 <attr_id> <has_group::value>        (312)

Features: ``image`` (JPEG); ``label`` (class id - 1; names = classes.txt without the ``NNN.``
prefix); ``bbox`` float32 (ymin, xmin, ymax, xmax) = (y/H, x/W, (y+h)/H, (x+w)/W) clipped to
[0, 1], i.e. the box is read as 0-based continuous pixel coordinates (as tfds' caltech_birds2011
and the A3M reference, which crops with PIL ``(x, y, x+w, y+h)``); ``parts`` float32 (15, 3) =
(y/H, x/W, visible) per part id 1..15 (invisible parts keep the file's coordinates, 0 0);
``attributes`` int64 (312,) = ``is_present`` of attribute id 1..312 (no certainty threshold; an
image/attribute pair listed twice is present if any line says so); ``attribute_groups``
int64 (28,) = the multi-class attributes of A3M: groups are the consecutive runs of the same
``has_*`` prefix (text before ``::``) in attributes.txt; class 0 = no value of the group present,
class j = the group's j-th value; when several are present the highest attribute id wins (as
the A3M tool ``attributes_process.py``, which overwrites in file order); ``image_id`` (official).

image_attribute_labels.txt: only the first three fields are read; a few official lines carry an
extra field, so any number of trailing fields is accepted. The builder checks that attributes.txt
has 312 attributes in 28 groups and parts.txt 15 parts (the feature shapes).

Splits: ``train`` / ``test`` = official train_test_split.txt; ``retrieval_train`` /
``retrieval_test`` = all images of the first / last half of the classes (classes 1-100 / 101-200
for the 200 real classes, as in A3M and the metric-learning literature). Everything is ordered by
image id. Unreadable images are skipped (from every split), convertible ones converted; see
``info.metadata['bad_files']``.

Manual dir: ``CUB_200_2011.tgz``, or the extracted ``CUB_200_2011/`` (+ ``attributes.txt``), or
the ``CUB_200_2011`` folder itself. With nothing there the archive is downloaded (see
``archives``); failing that, ``common.MissingFiles`` names the archive and where to get it.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from fgjax.data.builders import archives, common

NAME = 'cub2011'
ARCHIVE = 'CUB_200_2011.tgz'
FOLDER = 'CUB_200_2011'
NUM_ATTRIBUTES, NUM_GROUPS, NUM_PARTS = 312, 28, 15
PAGE = 'https://www.vision.caltech.edu/datasets/cub_200_2011/'
URL = 'https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1'
_SPLITS = ('train', 'test', 'retrieval_train', 'retrieval_test')
_FILES = (('images.txt', 'image list'), ('image_class_labels.txt', 'class of each image'),
          ('train_test_split.txt', 'official split'), ('bounding_boxes.txt', 'boxes'),
          ('classes.txt', 'class names'), (os.path.join('parts', 'parts.txt'), 'part names'),
          (os.path.join('parts', 'part_locs.txt'), 'part locations'),
          (os.path.join('attributes', 'image_attribute_labels.txt'), 'attribute labels'))


class Cub2011(common.BuilderBase, skip_registration=True):
  """CUB-200-2011: label, bbox, 15 parts, 312 binary attributes and 28 attribute groups."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # The CaltechDATA record tfds' caltech_birds2011 uses first, then the address given in the issue.
  URLS = (URL, 'https://data.caltech.edu/records/65de6-vgk43/files/CUB_200_2011.tgz')
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put the official archive {ARCHIVE} (1.1 GB, from {PAGE} -> CaltechDATA, e.g. {URL})
  in the manual dir as is, or extract it there: the manual dir then holds CUB_200_2011/ and
  attributes.txt (attributes.txt sits next to CUB_200_2011/ in the official archive).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info(
        common.image_features(  # label names come from classes.txt
            bbox=common.bbox_feature(),
            parts=tfds.features.Tensor(shape=(NUM_PARTS, 3), dtype=np.float32),
            attributes=tfds.features.Tensor(shape=(NUM_ATTRIBUTES,), dtype=np.int64),
            attribute_groups=tfds.features.Tensor(shape=(NUM_GROUPS,), dtype=np.int64),
            image_id=np.int64),
        description='Caltech-UCSD Birds-200-2011: 200 species, bbox, 15 parts, 312 binary '
                    'attributes and their 28 multi-class groups (A3M).',
        homepage=PAGE,
        metadata=dict(
            bbox_format='(ymin, xmin, ymax, xmax) in [0, 1]; source x y w h read as 0-based px',
            parts_format='(y, x, visible) per part id 1..15, y/x in [0, 1]',
            split_rules={'train/test': 'train_test_split.txt',
                         'retrieval_train': 'first half of the classes (1-100 of 200)',
                         'retrieval_test': 'second half of the classes (101-200 of 200)'}),
    )

  def _split_generators(self, dl_manager):
    root, sub = self._locate(dl_manager)
    cub = os.path.join(root, sub)
    candidates = [os.path.normpath(os.path.join(sub, '..', 'attributes.txt')),  # official
                  os.path.join(sub, 'attributes.txt'),
                  os.path.join(sub, 'attributes', 'attributes.txt')]
    attr_rel = next((c for c in candidates if os.path.exists(os.path.join(root, c))), candidates[0])
    common.require(root, [common.Required(os.path.join(sub, f), f'{what}, from the official '
                                          f'{ARCHIVE} ({PAGE})') for f, what in _FILES] + [
        common.Required(attr_rel, f'the 312 attribute names; in {ARCHIVE} it sits next to '
                        f'{FOLDER}/ (also accepted: {FOLDER}/attributes/)')], NAME)

    images = dict(_rows(os.path.join(cub, 'images.txt'), 2, str))
    ids = sorted(images)
    index = {i: n for n, i in enumerate(ids)}
    labels = _table(os.path.join(cub, 'image_class_labels.txt'), index, 1, int)
    is_train = _table(os.path.join(cub, 'train_test_split.txt'), index, 1, int)
    boxes = _table(os.path.join(cub, 'bounding_boxes.txt'), index, 4, float)
    classes = _named(os.path.join(cub, 'classes.txt'))
    class_names = [n.split('.', 1)[1] if n.split('.', 1)[0].isdigit() else n for n in classes]
    part_names = _named(os.path.join(cub, 'parts', 'parts.txt'))
    if len(part_names) != NUM_PARTS:
      raise ValueError(f'{cub}/parts/parts.txt: expected {NUM_PARTS} parts, got {len(part_names)}')
    parts = np.zeros((len(ids), NUM_PARTS, 3), np.float64)  # x, y, visible
    for i, p in _rows(os.path.join(cub, 'parts', 'part_locs.txt'), 5, float):
      if i not in index or not 1 <= p[0] <= NUM_PARTS:
        raise ValueError(f'{cub}/parts/part_locs.txt: bad image id {i} or part id {p[0]}')
      parts[index[i], int(p[0]) - 1] = p[1:]
    attr_names = _named(os.path.join(root, attr_rel))
    groups = attribute_groups(attr_names)
    if len(attr_names) != NUM_ATTRIBUTES or len(groups) != NUM_GROUPS:
      raise ValueError(f'{os.path.join(root, attr_rel)}: expected {NUM_ATTRIBUTES} attributes in '
                       f'{NUM_GROUPS} has_* groups, got {len(attr_names)} in {len(groups)}')
    attrs = _attribute_labels(os.path.join(cub, 'attributes', 'image_attribute_labels.txt'),
                              index, NUM_ATTRIBUTES)

    num_classes = len(class_names)
    if labels.min() < 1 or labels.max() > num_classes:
      raise ValueError(f'{cub}/image_class_labels.txt: class ids outside 1..{num_classes}')
    self.info.features['label'].names = class_names
    half = num_classes // 2
    self.info.metadata.update(
        class_names=class_names, part_names=part_names, attribute_names=attr_names,
        attribute_group_names=[g for g, _, _ in groups],
        attribute_group_values=[v for _, _, v in groups],  # class j of group k = values[k][j-1]
        attribute_group_num_classes=[len(v) + 1 for _, _, v in groups],  # + class 0 = none
        attribute_group_first_attribute=[s + 1 for _, s, _ in groups],  # 1-based attribute id
        retrieval_train_classes=list(range(half)),
        retrieval_test_classes=list(range(half, num_classes)))
    archives.require_listed(os.path.join(cub, 'images'), [images[i] for i in ids],
                            f'image listed in images.txt, from {ARCHIVE} ({PAGE})', NAME)
    records = [dict(image_id=i, path=os.path.join(cub, 'images', images[i]),
                    label=int(labels[n]) - 1, box=boxes[n], parts=parts[n], attrs=attrs[n],
                    groups=_group_classes(attrs[n], groups), train=is_train[n] == 1)
               for n, i in enumerate(ids)]
    rule = {'train': lambda r: r['train'], 'test': lambda r: not r['train'],
            'retrieval_train': lambda r: r['label'] < half,
            'retrieval_test': lambda r: r['label'] >= half}
    return {s: self._generate_examples([r for r in records if rule[s](r)]) for s in _SPLITS}

  def _generate_examples(self, records):
    return self.examples(records, _example, once=True)

  def _locate(self, dl_manager) -> tuple[str, str]:
    """(root, sub): the dataset folder is root/sub (sub = '' when manual dir is that folder)."""
    root, marker = archives.find_required(
        dl_manager, NAME, (f'{FOLDER}/images.txt', 'images.txt'),
        (ARCHIVE, 'CUB_200_2011.tar.gz'), self.URLS,
        f'the official archive (or its extracted {FOLDER}/ folder with attributes.txt next to '
        f'it); not downloadable now: get it from {PAGE} ({URL})')
    return root, os.path.dirname(marker)


def _example(r: dict, data: bytes, size: tuple[int, int]):
  h, w = size
  p = r['parts']
  parts = np.stack([np.clip(p[:, 1] / h, 0, 1), np.clip(p[:, 0] / w, 0, 1), p[:, 2]], 1)
  return r['image_id'], {
      'image': data, 'label': r['label'], 'bbox': common.box_from_xywh(*r['box'], h, w),
      'parts': parts.astype(np.float32), 'attributes': r['attrs'].astype(np.int64),
      'attribute_groups': r['groups'], 'image_id': np.int64(r['image_id'])}


def attribute_groups(names: list[str]) -> list[tuple[str, int, list[str]]]:
  """(group name, 0-based first attribute index, value names) per run of one has_* prefix."""
  groups = []
  for i, name in enumerate(names):
    group, _, value = name.partition('::')
    if not groups or groups[-1][0] != group:
      groups.append((group, i, []))
    groups[-1][2].append(value)
  return groups


def _group_classes(attrs: np.ndarray, groups) -> np.ndarray:
  out = np.zeros(len(groups), np.int64)
  for k, (_, start, values) in enumerate(groups):
    present = np.flatnonzero(attrs[start:start + len(values)])
    out[k] = present[-1] + 1 if present.size else 0  # highest attribute id wins; 0 = none
  return out


def _attribute_labels(path: str, index: dict[int, int], num: int) -> np.ndarray:
  out = np.zeros((len(index), num), np.int64)
  with open(path) as f:
    for n, line in enumerate(f, 1):
      p = line.split()
      if not p:
        continue
      try:  # fields after is_present (certainty, time, and the odd extra field) are not used
        image, attr, present = int(p[0]), int(p[1]), int(p[2])
        if present not in (0, 1) or not 1 <= attr <= num:
          raise ValueError
        if present:
          out[index[image], attr - 1] = 1
      except (ValueError, IndexError, KeyError):
        raise ValueError(f'{path}:{n}: cannot parse {line.strip()!r}') from None
  return out


def _rows(path: str, fields: int, kind):
  """(id, value) per non-empty line; value = the rest as `kind` (str: the rest of the line)."""
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      p = line.split(None, 1) if kind is str else line.split()
      try:
        if len(p) < fields:
          raise ValueError
        yield int(p[0]), (p[1].strip() if kind is str else [kind(v) for v in p[1:fields]])
      except ValueError:
        raise ValueError(f'{path}:{n}: expected {fields} fields, got {line.strip()!r}') from None


def _table(path: str, index: dict[int, int], width: int, kind) -> np.ndarray:
  out = np.full((len(index), width), np.nan)
  for i, v in _rows(path, width + 1, kind):
    if i not in index:
      raise ValueError(f'{path}: image id {i} is not in images.txt')
    out[index[i]] = v
  missing = [i for i, n in index.items() if np.isnan(out[n]).any()]
  if missing:
    raise ValueError(f'{path}: no line for image ids {missing[:10]}')
  return out[:, 0] if width == 1 else out


def _named(path: str) -> list[str]:
  rows = list(_rows(path, 2, str))
  if [i for i, _ in rows] != list(range(1, len(rows) + 1)):
    raise ValueError(f'{path}: ids must be 1..{len(rows)} in order')
  return [v for _, v in rows]
