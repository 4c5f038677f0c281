"""``fgvc_aircraft``: FGVC-Aircraft 2013b at the variant level, read from the official archive.

Official layout (``fgvc-aircraft-2013b.tar.gz``; README of the benchmark)::

    fgvc-aircraft-2013b/data/images/<7-digit id>.jpg
    fgvc-aircraft-2013b/data/variants.txt                  one variant name per line (100)
    fgvc-aircraft-2013b/data/images_variant_trainval.txt   <id> <variant name, may hold spaces>
    fgvc-aircraft-2013b/data/images_variant_test.txt       <id> <variant name, may hold spaces>
    fgvc-aircraft-2013b/data/images_box.txt                <id> <xmin> <ymin> <xmax> <ymax>

The README: "Each image has at the bottom a banner 20 pixels high containing copyright
information. Please make sure to remove this banner"; "The top-left pixel of an image has
coordinate (1,1)". So every image is cropped to its top H - 20 rows (decoded, cropped with PIL,
re-encoded as JPEG quality 95: one extra lossy generation) and the box, read as 1-based inclusive
pixel indices, is normalised to the cropped image and clipped: (ymin, xmin, ymax, xmax) =
((ymin - 1) / (H - 20), (xmin - 1) / W, ymax / (H - 20), xmax / W) in [0, 1]. An image with fewer
than 2 rows left is skipped and listed in ``info.metadata['bad_files']`` (with the conversions
and unreadable files of ``common.ImageReader``).

Features: ``image``; ``label`` = index in variants.txt (names = variants.txt); ``bbox``;
``image_id`` = the 7-digit image name as an integer. Splits: ``trainval`` and ``test`` (the
official lists, in file order; 6,667 / 3,333 images), and ``train`` = the same examples as
``trainval`` (the fine-grained papers train on trainval; stored twice). Family and manufacturer
labels are not read.

Manual dir: ``fgvc-aircraft-2013b.tar.gz`` or its extracted ``fgvc-aircraft-2013b/`` (or that
folder itself, or its ``data/`` folder). With nothing there the archive is downloaded (see
``archives``); failing that, ``common.MissingFiles`` names the archive and where to get it.
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from fgjax.data.builders import archives, common

NAME = 'fgvc_aircraft'
ARCHIVE = 'fgvc-aircraft-2013b.tar.gz'
PAGE = 'https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/'
URL = 'https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz'
BANNER = 20  # pixels of copyright banner at the bottom of every image
_LISTS = {'trainval': 'images_variant_trainval.txt', 'test': 'images_variant_test.txt'}


class FgvcAircraft(common.BuilderBase, skip_registration=True):
  """FGVC-Aircraft 2013b: 100 variants, bbox, banner removed, trainval (= train) / test."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  URLS = (URL,)
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put the official archive {ARCHIVE} (2.75 GB, {URL}, from {PAGE}) in the manual dir as is, or
  extract it there (the manual dir then holds fgvc-aircraft-2013b/data/...).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info(  # label names come from variants.txt
        common.image_features(bbox=common.bbox_feature(), image_id=np.int64),
        description='FGVC-Aircraft 2013b, variant level (100 classes), copyright banner removed.',
        homepage=PAGE,
        metadata=dict(
            banner_pixels=BANNER,
            bbox_format=f'(ymin, xmin, ymax, xmax) in [0, 1] of the image without its {BANNER}-px '
                        'banner; source xmin ymin xmax ymax read as 1-based inclusive pixels',
            split_rules={'trainval': _LISTS['trainval'], 'train': 'same examples as trainval',
                         'test': _LISTS['test']}),
    )

  def _split_generators(self, dl_manager):
    data = self._locate(dl_manager)
    variants = [line.strip() for line in _lines(data, 'variants.txt') if line.strip()]
    self.info.features['label'].names = variants
    self.info.metadata['class_names'] = variants
    label = {v: i for i, v in enumerate(variants)}
    boxes = {}
    for n, line in enumerate(_lines(data, 'images_box.txt'), 1):
      p = line.split()
      if p:
        if len(p) != 5:
          raise ValueError(f'{data}/images_box.txt:{n}: expected 5 fields, got {line.strip()!r}')
        boxes[p[0]] = [float(v) for v in p[1:]]
    records = {}
    for split, name in _LISTS.items():
      records[split] = []
      for n, line in enumerate(_lines(data, name), 1):
        fields = line.split(None, 1)  # the variant name may hold spaces
        if not fields:
          continue
        image, variant = fields[0], fields[1].strip() if len(fields) > 1 else ''
        if variant not in label or image not in boxes:
          raise ValueError(f'{data}/{name}:{n}: unknown variant {variant!r} (variants.txt) or no '
                           f'box for {image!r} (images_box.txt)')
        records[split].append(dict(image=image, label=label[variant], box=boxes[image],
                                   path=os.path.join(data, 'images', f'{image}.jpg')))
      archives.require_listed(os.path.join(data, 'images'),
                              [f'{r["image"]}.jpg' for r in records[split]],
                              f'image listed in {name}, from {ARCHIVE} ({URL})', NAME)
    return {'trainval': self._generate_examples(records['trainval']),
            'train': self._generate_examples(records['trainval']),
            'test': self._generate_examples(records['test'])}

  def _generate_examples(self, records):
    return self.examples(records, _example, read=self._remove_banner, once=True)

  def _remove_banner(self, record: dict) -> tuple[bytes, tuple[int, int]] | tuple[None, None]:
    """(JPEG bytes, (height, width)) of the record's image without its bottom BANNER rows, or
    (None, None) for a skipped image."""
    path = record['path']
    data = self.images.read(path)
    if data is None:
      return None, None
    with Image.open(io.BytesIO(data)) as im:
      w, h = im.size
      if h - BANNER < common.MIN_SIDE:
        self.images.skipped.append(
            {'file': str(path), 'reason': f'{w}x{h} pixels: nothing left without the '
                                          f'{BANNER}-pixel banner'})
        return None, None
      out = io.BytesIO()
      im.convert('RGB').crop((0, 0, w, h - BANNER)).save(out, format='JPEG', quality=95)
    return out.getvalue(), (h - BANNER, w)

  def _locate(self, dl_manager) -> str:
    """The official data/ folder, with every annotation file checked."""
    root, marker = archives.find_required(
        dl_manager, NAME, ('fgvc-aircraft-2013b/data/variants.txt', 'data/variants.txt',
                           'variants.txt'), (ARCHIVE,), self.URLS,
        'the official archive (or its extracted fgvc-aircraft-2013b/ folder); not downloadable '
        f'now: get it from {URL} ({PAGE})')
    sub = os.path.dirname(marker)
    common.require(root, [
        common.Required(os.path.join(sub, f), f'{what}, from {ARCHIVE} ({URL})')
        for f, what in (('variants.txt', 'the 100 variant names'),
                        ('images_variant_trainval.txt', 'trainval images and variants'),
                        ('images_variant_test.txt', 'test images and variants'),
                        ('images_box.txt', 'one box per image'))], NAME)
    return os.path.join(root, sub)


def _example(r: dict, data: bytes, size: tuple[int, int]):
  return r['image'], {'image': data, 'label': r['label'],
                      'bbox': common.box_from_corners(*r['box'], *size),
                      'image_id': np.int64(int(r['image']))}


def _lines(folder: str, name: str) -> list[str]:
  with open(os.path.join(folder, name)) as f:
    return f.readlines()
