"""Helpers shared by the builder tests (imported from the test files' own directory).

A builder test writes a tiny copy of the official files (`write(manual_dir)`), builds it with
`build` (into a temporary data dir, as `fgjax prepare` does) and reads every split back;
`build_fixture` makes the module-wide fixture that does this once; `missing_files_message` is
what a build from incomplete files says; `pack` makes the official archive of a folder;
`fake_downloads` serves the public files a builder downloads.
"""

import io
import os
import tarfile
import zipfile

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from fgjax.data.builders import archives, common

CARS_FIELDS = ('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'fname')


def prepare(cls, manual, data_dir, **kwargs):
  """Build `cls(data_dir=data_dir, **kwargs)` from the manual dir `manual`."""
  cls(data_dir=data_dir, **kwargs).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


def missing_files_message(cls, manual, data_dir, **kwargs):
  """The text of the `common.MissingFiles` error that `prepare` raises."""
  with pytest.raises(common.MissingFiles) as info:
    prepare(cls, manual, data_dir, **kwargs)
  return str(info.value)


def build(cls, manual, data_dir, splits=None, key=None, **kwargs):
  """`prepare`, then read every split (or `splits`) back as the pipeline does:
  (builder, {split: [example, ...]}), in stored order or sorted by `key`."""
  prepare(cls, manual, data_dir, **kwargs)
  builder = cls(data_dir=data_dir, **kwargs)
  sources = builder.as_data_source()
  rows = {s: [sources[s][i] for i in range(len(sources[s]))] for s in splits or sources}
  return builder, {s: sorted(r, key=key) if key else r for s, r in rows.items()}


def build_by_image_id(cls, manual, data_dir, splits):
  """`build` `splits`: (builder, {split: {image_id: example}})."""
  builder, rows = build(cls, manual, data_dir, splits)
  return builder, {s: {int(e['image_id']): e for e in r} for s, r in rows.items()}


def assert_split_ids(builder, splits, ids):
  """Split s of `splits` ({split: {image_id: example}}) holds the examples `ids[s]` (sorted), and
  the builder's info counts as many."""
  for split, want in ids.items():
    assert sorted(splits[split]) == want, split
    assert builder.info.splits[split].num_examples == len(want)


def build_fixture(write, build_fn):
  """A module-scoped fixture: `build_fn(manual, data_dir)` of a manual dir filled by `write`."""

  @pytest.fixture(scope='module')
  def fixture(tmp_path_factory):
    manual = tmp_path_factory.mktemp('manual')
    write(str(manual))
    return build_fn(manual, str(tmp_path_factory.mktemp('data')))

  return fixture


def assert_same_examples(got, expected):
  """`got` and `expected` ({split: {key: example}}) hold the same examples, feature for feature."""
  assert got.keys() == expected.keys()
  for split, examples in expected.items():
    assert got[split].keys() == examples.keys(), split
    for i, e in got[split].items():
      assert e.keys() == examples[i].keys()
      for feature, value in e.items():
        np.testing.assert_array_equal(value, examples[i][feature])


def pack(archive, folder, names=None):
  """Write `archive` (a .zip, else a gzipped tar) holding `names` (default: everything) of
  `folder`, stored under their paths relative to `folder`."""
  folder = str(folder)
  names = sorted(os.listdir(folder)) if names is None else names
  if str(archive).endswith('.zip'):
    with zipfile.ZipFile(archive, 'w') as z:
      for name in names:
        path = os.path.join(folder, name)
        walk = os.walk(path) if os.path.isdir(path) else [(folder, [], [name])]
        for dirpath, _, files in walk:
          for f in files:
            z.write(os.path.join(dirpath, f), os.path.relpath(os.path.join(dirpath, f), folder))
  else:
    with tarfile.open(archive, 'w:gz') as tar:
      for name in names:
        tar.add(os.path.join(folder, name), arcname=name)


def fake_downloads(monkeypatch, serve):
  """Every URL is reachable and `DownloadManager.download(url)` returns `serve(manager, url)`;
  returns the list of the URLs downloaded."""
  urls = []

  def download(manager, url):
    urls.append(url)
    return serve(manager, url)

  monkeypatch.setattr(archives, 'reachable', lambda url: True)
  monkeypatch.setattr(tfds.download.DownloadManager, 'download', download)
  return urls


def jpeg(image, **kwargs):
  """The JPEG bytes of a PIL image (quality 95 unless `kwargs` say otherwise)."""
  out = io.BytesIO()
  image.save(out, format='JPEG', **{'quality': 95, **kwargs})
  return out.getvalue()


def truncate(path):
  """Cut the file at `path` in half (a truncated image)."""
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])


def cars_annotations_mat(path, entries, fields=CARS_FIELDS):
  """A Cars196 devkit-style 1xN MATLAB struct array `annotations` with the official field names and
  types; entries: {fname: (class 1-based, (x1, y1, x2, y2) 1-based inclusive, anything)}."""
  ann = np.zeros((1, len(entries)), dtype=[(f, 'O') for f in fields])
  for j, (fname, (c, box, _)) in enumerate(entries.items()):
    values = dict(zip(CARS_FIELDS, [np.uint16(v) for v in box] + [np.uint8(c), fname]))
    ann[0, j] = tuple(values[f] for f in fields)
  scipy.io.savemat(path, {'annotations': ann})
