"""``viper``: VIPeR person re-id (Gray, Brennan & Tao, PETS 2007), 10 random 316/316 splits.

Official layout (VIPeR.v1.0.zip, or the folder it extracts to)::

    VIPeR/cam_a/000_45.bmp ... VIPeR/cam_a/873_0.bmp     (632 images, 128 x 48)
    VIPeR/cam_b/000_45.bmp ... VIPeR/cam_b/873_180.bmp   (632 images)

A file name is ``{identity}_{viewpoint}.bmp``: the prefix is the person (632 numbers between 000
and 873, not contiguous), the suffix the viewpoint angle in degrees; each person has one image per
camera (persons seen by one camera only would be left out and listed in metadata). Other files
(README.txt, Thumbs.db) are not read.

Splits, k = 0..9: the sorted identities are permuted with ``np.random.default_rng(SEED)`` (SEED =
0, one generator drawn 10 times in order k = 0..9); ``perm[:n // 2]`` (316 persons) make
``split{k}_train`` and the rest (316) ``split{k}_test``, both cameras of each person (632 images
each). ``split{k}_query`` / ``split{k}_gallery`` are the camera A / camera B images of
``split{k}_test`` (316 each): the usual single-shot evaluation, query = cam_a, gallery = cam_b.
``info.metadata['identities'][split{k}_train|test]`` lists each split's persons (label ->
identity; ``label_space`` names the list each split's labels index: query and gallery use their
test split's).

Features: ``identity`` (file-name prefix), ``camera`` (0 = cam_a, 1 = cam_b), ``viewpoint``
(file-name suffix, degrees), ``label`` = index of the identity among its train / test split's
sorted identities (``num_classes`` = 316). BMP images are stored as JPEG (quality 95, like the
reader's conversions); a BMP that is not plain RGB goes through the reader (converted or skipped,
listed in ``bad_files``).
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from fgjax.data.builders import archives, common

FOLDER, ARCHIVE = 'VIPeR', 'VIPeR.v1.0.zip'
CAMERAS = ('cam_a', 'cam_b')
SEED, NUM_SPLITS, NUM_CLASSES = 0, 10, 316
_NAME = re.compile(r'^(\d+)_(\d+)\.bmp$', re.IGNORECASE)


def _root_in(folder: str) -> str | None:
  for cand in (os.path.join(folder, FOLDER), folder, os.path.join(folder, 'VIPeR.v1.0', FOLDER)):
    if any(os.path.isdir(os.path.join(cand, c)) for c in CAMERAS):
      return cand
  return None


class Viper(common.BuilderBase):
  """VIPeR: 632 persons, 2 cameras, 10 random 316/316 splits from a fixed seed."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  URL = 'http://users.soe.ucsc.edu/~manduchi/VIPeR.v1.0.zip'
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put in the manual dir (config.dataset.manual_dir / --manual_dir):
    {ARCHIVE}  (or the folder {FOLDER}/ it extracts to, holding cam_a/ and cam_b/), from
        https://vision.soe.ucsc.edu/node/178 ({URL}; downloaded when absent and a network is
        available).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info(
        common.reid_features(NUM_CLASSES, 'viewpoint'),
        description=(
            'VIPeR person re-identification: 632 persons, one image from each of 2 cameras. '
            f'{NUM_SPLITS} random 316/316 identity splits (seed {SEED}): split{{k}}_train / '
            'split{k}_test, and split{k}_query / split{k}_gallery = camera A / B of the test '
            'persons. `label` = index in the sorted identities of the train / test split.'),
        homepage='https://vision.soe.ucsc.edu/node/178',
        metadata=dict(seed=SEED, num_splits=NUM_SPLITS, num_cameras=2, cameras=list(CAMERAS)),
    )

  def _find(self, dl_manager) -> str:
    manual, base = archives.manual_dirs(dl_manager)
    root = _root_in(manual) if manual else None
    if root is None and manual and os.path.isfile(os.path.join(manual, ARCHIVE)):
      root = _root_in(common.extract(dl_manager, os.path.join(manual, ARCHIVE), 'viper'))
    if root is None and (downloaded := archives.fetch(dl_manager, self.URL)):
      try:  # nothing in the manual dir: the public archive
        root = _root_in(common.extract(dl_manager, downloaded, 'viper'))
      except Exception:  # pylint: disable=broad-except  (report the missing files instead)
        root = None
    root = root or os.path.join(base, FOLDER)
    common.require(root, [common.Required(c, f'folder {c}/ of {ARCHIVE} (VIPeR, '
                                          'https://vision.soe.ucsc.edu/node/178)')
                          for c in CAMERAS], 'viper')
    return root

  def _split_generators(self, dl_manager):
    root = self._find(dl_manager)
    files = [{}, {}]  # per camera: identity -> (path, viewpoint)
    for cam, folder in enumerate(CAMERAS):
      for name in sorted(os.listdir(os.path.join(root, folder))):
        m = _NAME.match(name)
        if m is None:
          continue  # README, Thumbs.db, ...
        pid = int(m.group(1))
        if pid in files[cam]:
          raise ValueError(f'viper: two images of person {pid} in {folder}/ ({name} and '
                           f'{os.path.basename(files[cam][pid][0])})')
        files[cam][pid] = (os.path.join(root, folder, name), int(m.group(2)))
    ids = np.array(sorted(set(files[0]) & set(files[1])), np.int64)
    rng = np.random.default_rng(SEED)
    identities, rows = {}, {}
    for k in range(NUM_SPLITS):
      perm = rng.permutation(len(ids))
      for part, members in (('train', perm[:len(ids) // 2]), ('test', perm[len(ids) // 2:])):
        identities[f'split{k}_{part}'] = [int(i) for i in np.sort(ids[members])]
        rows[f'split{k}_{part}'] = [(pid, cam) for pid in identities[f'split{k}_{part}']
                                    for cam in (0, 1)]
      for part, cam in (('query', 0), ('gallery', 1)):  # test persons seen by camera A / B
        rows[f'split{k}_{part}'] = [r for r in rows[f'split{k}_test'] if r[1] == cam]
    if len(ids) - len(ids) // 2 > NUM_CLASSES:
      raise ValueError(f'viper: {len(ids)} paired persons, more than 2 x {NUM_CLASSES}')
    space_of = {name: re.sub('_(query|gallery)$', '_test', name) for name in rows}
    self.info.metadata.update(identities=identities, label_space=space_of,
                              unpaired_identities=sorted(set(files[0]) ^ set(files[1])))
    cache = {}
    return {name: self._generate_examples(name, r, identities[space_of[name]], files, cache)
            for name, r in rows.items()}

  def _read(self, path: str) -> bytes | None:
    try:
      with Image.open(path) as im:
        im.load()
        if im.format == 'BMP' and im.mode == 'RGB':
          out = io.BytesIO()
          im.save(out, format='JPEG', quality=95)
          return self.images.read(path, out.getvalue())
    except (OSError, SyntaxError, ValueError):
      pass
    return self.images.read(path)  # not a plain RGB BMP: converted or skipped, and listed

  def _generate_examples(self, split, rows, ids, files, cache):
    index = {pid: n for n, pid in enumerate(ids)}
    for pid, cam in rows:
      path, viewpoint = files[cam][pid]
      if path not in cache:  # each file is read (and reported) once for all splits
        cache[path] = self._read(path)
      if cache[path] is None:
        continue
      yield f'{split}/{CAMERAS[cam]}/{os.path.basename(path)}', {
          'image': cache[path], 'label': index[pid], 'identity': np.int64(pid),
          'camera': np.int64(cam), 'viewpoint': np.int64(viewpoint)}
    self.record_bad_files()
