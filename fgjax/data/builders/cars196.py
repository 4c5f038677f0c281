"""``cars196``: Stanford Cars (196 classes) read from the official archives (manual download).

Official files (Krause et al. 2013; the original ai.stanford.edu URLs are dead, see
``MANUAL_DOWNLOAD_INSTRUCTIONS``)::

    cars_train.tgz -> cars_train/00001.jpg .. 08144.jpg
    cars_test.tgz  -> cars_test/00001.jpg .. 08041.jpg
    car_devkit.tgz -> devkit/cars_meta.mat          class_names: 1x196 cell of strings
                      devkit/cars_train_annos.mat   annotations: 1x8144 struct
    cars_test_annos_withlabels.mat                  annotations: 1x8041 struct (with labels)

``annotations`` structs have the fields ``bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname``:
1-based class ids into ``class_names`` and MATLAB pixel coordinates. The manual dir may hold
the archives as they are (unpacked by ``common.extract``, see ``archives``) or their extracted
folders. Also accepted (unverified mirror layouts): ``cars_train/cars_train/``,
``cars_test/cars_test/``, ``car_devkit/devkit/`` and ``devkit/cars_test_annos_withlabels.mat``.

Features: ``image`` (JPEG; the few grayscale JPEGs are converted to RGB, see
``info.metadata['bad_files']``); ``label`` = class - 1 (names from ``class_names``); ``bbox``
float32 (ymin, xmin, ymax, xmax) = ((y1 - 1) / H, (x1 - 1) / W, y2 / H, x2 / W) clipped to
[0, 1], i.e. the box is read as 1-based inclusive pixel indices (MATLAB devkit; tfds' cars196
divides x1 / W without the - 1, a difference of at most one pixel); ``image_id`` = the file
number for ``cars_train/NNNNN.jpg`` and 100000 + the file number for ``cars_test/NNNNN.jpg``
(train and test files reuse the same names), so ids are unique over the dataset.

Splits: ``train`` / ``test`` = the official 8,144 / 8,041 images; ``retrieval_train`` /
``retrieval_test`` = all images (train then test files) of the first / last half of the classes
(classes 1-98: 8,054 images / 99-196: 8,131 images in the real data, as in A3M and the
metric-learning literature). Order: annotation-file order; example keys ``train/00001.jpg``.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from fgjax.data.builders import archives, common

NAME = 'cars196'
PAGE = 'https://ai.stanford.edu/~jkrause/cars/car_dataset.html'
MIRRORS = ('the original URLs are dead; mirrors are listed in '
           'https://github.com/pytorch/vision/issues/7545 (e.g. Kaggle '
           '"jessicali9530/stanford-cars-dataset"; car_devkit.tgz attached to that issue)')
TEST_ID_OFFSET = 100000
_SPLITS = ('train', 'test', 'retrieval_train', 'retrieval_test')
_FIELDS = ('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'fname')


class Cars196(common.BuilderBase, skip_registration=True):
  """Stanford Cars: 196 classes, bbox, official train/test and class-disjoint retrieval splits."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put these four official files in the manual dir (archives as they are, or extracted there):
    cars_train.tgz  (cars_train/*.jpg, 8,144 images)
    cars_test.tgz   (cars_test/*.jpg, 8,041 images)
    car_devkit.tgz  (devkit/cars_meta.mat, devkit/cars_train_annos.mat, ...)
    cars_test_annos_withlabels.mat  (test labels and boxes)
  Home page: {PAGE}; {MIRRORS}.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info(  # label names come from devkit/cars_meta.mat
        common.image_features(bbox=common.bbox_feature(), image_id=np.int64),
        description='Stanford Cars (Cars196): 16,185 images of 196 car models, one box each.',
        homepage=PAGE,
        metadata=dict(
            bbox_format='(ymin, xmin, ymax, xmax) in [0, 1]; source x1 y1 x2 y2 read as 1-based '
                        'inclusive pixels',
            image_id=f'file number (cars_train) or {TEST_ID_OFFSET} + file number (cars_test)',
            split_rules={'train/test': 'official files',
                         'retrieval_train': 'first half of the classes (1-98 of 196)',
                         'retrieval_test': 'second half of the classes (99-196 of 196)'}),
    )

  def _split_generators(self, dl_manager):
    train_dir, test_dir, devkit, test_annos = self._locate(dl_manager)
    class_names = [str(n).strip() for n in np.atleast_1d(
        scipy.io.loadmat(os.path.join(devkit, 'cars_meta.mat'), squeeze_me=True)['class_names'])]
    self.info.features['label'].names = class_names
    num_classes, half = len(class_names), len(class_names) // 2
    records = {
        'train': _annotations(os.path.join(devkit, 'cars_train_annos.mat'), train_dir, 'train',
                              0, num_classes),
        'test': _annotations(test_annos, test_dir, 'test', TEST_ID_OFFSET, num_classes)}
    for split, folder in (('train', train_dir), ('test', test_dir)):
      archives.require_listed(folder, [r['fname'] for r in records[split]],
                              f'image listed in the {split} annotations; {MIRRORS}', NAME)
    both = records['train'] + records['test']
    records['retrieval_train'] = [r for r in both if r['label'] < half]
    records['retrieval_test'] = [r for r in both if r['label'] >= half]
    self.info.metadata.update(
        class_names=class_names, retrieval_train_classes=list(range(half)),
        retrieval_test_classes=list(range(half, num_classes)))
    return {s: self._generate_examples(records[s]) for s in _SPLITS}

  def _generate_examples(self, records):
    return self.examples(records, _example, once=True)

  def _locate(self, dl_manager) -> tuple[str, str, str, str]:
    """Folders of the train / test images and of the devkit, and the test annotation file."""
    find = lambda markers, archive=(): archives.find(dl_manager, NAME, markers, archive)
    parts = {
        'cars_train.tgz': (find(('cars_train',), ('cars_train.tgz',)),
                           'the 8,144 training images (or the extracted cars_train/ folder)'),
        'cars_test.tgz': (find(('cars_test',), ('cars_test.tgz',)),
                          'the 8,041 test images (or the extracted cars_test/ folder)'),
        'car_devkit.tgz': (find(('devkit', 'car_devkit/devkit'), ('car_devkit.tgz',)),
                           'the devkit: class names and training annotations (or the '
                           'extracted devkit/ folder)'),
        'cars_test_annos_withlabels.mat': (
            find(('cars_test_annos_withlabels.mat', 'devkit/cars_test_annos_withlabels.mat',
                  'cars_test_annos_withlabels (1).mat')),
            'test annotations WITH class labels (not devkit/cars_test_annos.mat)')}
    paths = {k: os.path.join(*found) if found else None for k, (found, _) in parts.items()}
    in_devkit = paths['car_devkit.tgz'] and os.path.join(paths['car_devkit.tgz'],
                                                         'cars_test_annos_withlabels.mat')
    if not paths['cars_test_annos_withlabels.mat'] and in_devkit and os.path.exists(in_devkit):
      paths['cars_test_annos_withlabels.mat'] = in_devkit  # a re-packed devkit that holds it
      parts['cars_test_annos_withlabels.mat'] = (in_devkit, '')
    required = [common.Required(k, f'{what}; {MIRRORS}') for k, (found, what) in parts.items()
                if found is None]
    for k, f, what in (('cars_train.tgz', '', 'training images folder'),
                       ('cars_test.tgz', '', 'test images folder'),
                       ('car_devkit.tgz', 'cars_meta.mat', 'class names'),
                       ('car_devkit.tgz', 'cars_train_annos.mat', 'training boxes and labels')):
      if paths[k]:  # absolute paths: `require` names them as they are
        required.append(common.Required(os.path.join(paths[k], f), f'{what}, from {k}; {MIRRORS}'))
    common.require(archives.expected_manual_dir(dl_manager), required, NAME)
    for k in ('cars_train.tgz', 'cars_test.tgz'):  # a mirror's doubled cars_train/cars_train/
      inner = os.path.join(paths[k], os.path.basename(paths[k]))
      paths[k] = inner if os.path.isdir(inner) else paths[k]
    return (paths['cars_train.tgz'], paths['cars_test.tgz'], paths['car_devkit.tgz'],
            paths['cars_test_annos_withlabels.mat'])


def _example(r: dict, data: bytes, size: tuple[int, int]):
  return r['key'], {'image': data, 'label': r['label'],
                    'bbox': common.box_from_corners(*r['box'], *size),
                    'image_id': np.int64(r['image_id'])}


def _annotations(path: str, image_dir: str, split: str, id_offset: int,
                 num_classes: int) -> list[dict]:
  """One record per entry of the `annotations` struct array, in file order."""
  mat = scipy.io.loadmat(path, squeeze_me=True)
  if 'annotations' not in mat:
    raise ValueError(f'{path}: no `annotations` struct array')
  ann = np.atleast_1d(mat['annotations'])
  missing = [f for f in _FIELDS if f not in (ann.dtype.names or ())]
  if missing:
    raise ValueError(f'{path}: annotations lack the fields {missing} (cars_test_annos.mat from '
                     'the devkit has no labels: use cars_test_annos_withlabels.mat)')
  records = []
  for a in ann:
    fname, label = str(a['fname']).strip(), int(a['class'])
    if not 1 <= label <= num_classes:
      raise ValueError(f'{path}: {fname}: class {label} outside 1..{num_classes}')
    records.append(dict(
        key=f'{split}/{fname}', fname=fname, path=os.path.join(image_dir, fname),
        label=label - 1, image_id=id_offset + int(os.path.splitext(os.path.basename(fname))[0]),
        box=[float(a[f]) for f in _FIELDS[:4]]))
  return records
