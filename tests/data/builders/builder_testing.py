"""Helpers shared by the builder tests (imported from the test files' own directory)."""

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

CARS_FIELDS = ('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'fname')


def build_by_image_id(cls, manual, data_dir, splits):
  """Build `cls` from `manual` and read every split back as the pipeline does:
  (builder, {split: {image_id: example}})."""
  cls(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  builder = cls(data_dir=data_dir)
  sources = builder.as_data_source()
  rows = {s: [sources[s][i] for i in range(len(sources[s]))] for s in splits}
  return builder, {s: {int(e['image_id']): e for e in rows[s]} for s in splits}


def cars_annotations_mat(path, entries, fields=CARS_FIELDS):
  """A Cars196 devkit-style 1xN MATLAB struct array `annotations` with the official field names and
  types; entries: {fname: (class 1-based, (x1, y1, x2, y2) 1-based inclusive, anything)}."""
  ann = np.zeros((1, len(entries)), dtype=[(f, 'O') for f in fields])
  for j, (fname, (c, box, _)) in enumerate(entries.items()):
    values = dict(zip(CARS_FIELDS, [np.uint16(v) for v in box] + [np.uint8(c), fname]))
    ann[0, j] = tuple(values[f] for f in fields)
  scipy.io.savemat(path, {'annotations': ann})
