"""Shared pieces of the real-dataset builders: where files must be, and decoding bad images.

`require(root, files, dataset)` raises one `MissingFiles` error naming every missing file, where it
must be put and where to get it. `ImageReader.read(path)` returns encoded image bytes ready for
`tfds.features.Image` (JPEG), decoded by `fgjax.images.to_rgb` (the decoding that predict uses:
EXIF orientation applied, alpha composited over white, grayscale / CMYK / palette to RGB) and
skipping unreadable ones (corrupt, truncated, zero-byte, 1-pixel); every conversion and skip is
counted and listed by `ImageReader.report()`, which builders store in `info.metadata['bad_files']`.

Features: every builder's examples hold `image` and `label` (`image_features`); the person re-id
builders add `identity` and `camera` (`reid_features`); boxes are (ymin, xmin, ymax, xmax) float32
in [0, 1] (`bbox_feature`, normalised by `box_from_corners` / `box_from_xywh`), and
`BuilderBase.examples` is the loop that reads each record's image and yields its example.

Builders also override `code_path` (see `BuilderBase`): tfds 4.9.10 resolves a builder's code path
through `importlib_resources`, which it only installs on Python < 3.9 (tensorflow/datasets#11212).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from fgjax import images as images_lib

MIN_SIDE = 2  # images with a side below this are skipped (a 1-pixel image carries nothing)


class MissingFiles(FileNotFoundError):
  pass


def image_features(label: tfds.features.ClassLabel | None = None,
                   **more) -> tfds.features.FeaturesDict:
  """`image` (RGB JPEG of any size), `label` (default: a ClassLabel whose names the builder sets
  from the dataset's files), then the features `more`."""
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      'label': tfds.features.ClassLabel() if label is None else label,
      **more})


def reid_features(num_classes: int, *scalars: str, **more) -> tfds.features.FeaturesDict:
  """A person re-id dataset's features: `image`; `label` = the index of the identity in its split's
  label space (`num_classes` labels); int64 `identity` and `camera`; the int64 scalars named in
  `scalars`; then the features `more`."""
  return image_features(tfds.features.ClassLabel(num_classes=num_classes),
                        **{k: np.int64 for k in ('identity', 'camera', *scalars)}, **more)


def bbox_feature() -> tfds.features.Tensor:
  """One box: float32 (ymin, xmin, ymax, xmax), as fractions of the image height / width."""
  return tfds.features.Tensor(shape=(4,), dtype=np.float32)


def box_from_corners(x1, y1, x2, y2, height: int, width: int) -> np.ndarray:
  """`bbox_feature` of a box given as 1-based inclusive pixel indices (the MATLAB convention):
  ((y1 - 1) / H, (x1 - 1) / W, y2 / H, x2 / W), clipped to [0, 1]."""
  return _clip_box([(y1 - 1) / height, (x1 - 1) / width, y2 / height, x2 / width])


def box_from_xywh(x, y, w, h, height: int, width: int) -> np.ndarray:
  """`bbox_feature` of a box x, y, w, h read as 0-based continuous pixel coordinates:
  (y / H, x / W, (y + h) / H, (x + w) / W), clipped to [0, 1]."""
  return _clip_box([y / height, x / width, (y + h) / height, (x + w) / width])


def _clip_box(box) -> np.ndarray:
  return np.clip(box, 0.0, 1.0).astype(np.float32)


def check_label_spaces(spaces: Mapping[str, Sequence], num_classes: int, dataset: str) -> None:
  """Raise ValueError when a label space (name -> its identities) has more than `num_classes`."""
  for space, ids in spaces.items():
    if len(ids) > num_classes:
      raise ValueError(f'{dataset}: {len(ids)} identities in {space}, more than {num_classes}')


@dataclasses.dataclass(frozen=True)
class Required:
  path: str  # relative to the dataset's manual/extracted directory
  what: str  # one line: what it is and where to get it


def require(root: str, files: Sequence[Required], dataset: str) -> None:
  """Raise MissingFiles listing each file of `files` that is missing under `root`."""
  missing = [f for f in files if not os.path.exists(os.path.join(root, f.path))]
  if missing:
    lines = '\n'.join(f'  {os.path.join(root, f.path)}  <- {f.what}' for f in missing)
    raise MissingFiles(
        f'{dataset}: missing files (download them and put them exactly here, or pass '
        f'--manual_dir / config.dataset.manual_dir pointing at the folder that holds them):\n'
        f'{lines}')


def extract(dl_manager, path: str, dataset: str) -> str:
  """Unpack a local archive (offline); returns the extracted folder.

  Uses `dl_manager.extract` when it works; tfds 4.9.10 extracts through `tf.io.gfile`, so without
  TensorFlow the archive is unpacked with tarfile / zipfile into
  <download_dir>/extracted/<dataset>.<archive name> (once; an interrupted unpack is redone).
  """
  try:
    return str(dl_manager.extract(path))
  except Exception as e:  # pylint: disable=broad-except
    if not isinstance(e, ImportError) and not isinstance(e.__cause__, ImportError):
      raise
  out = os.path.join(str(dl_manager.download_dir), 'extracted', f'{dataset}.{os.path.basename(path)}')
  if not os.path.isdir(out):
    tmp = out + '.incomplete'
    shutil.rmtree(tmp, ignore_errors=True)
    is_zip = path.lower().endswith('.zip')
    with (zipfile.ZipFile(path) if is_zip else tarfile.open(path)) as archive:
      archive.extractall(tmp, **({} if is_zip else {'filter': 'data'}))
    os.rename(tmp, out)
  return out


class ImageReader:
  """Decodes images for a builder, converting what can be converted and listing what was done."""

  def __init__(self):
    self.converted: list[dict] = []
    self.skipped: list[dict] = []

  def read(self, path: str, data: bytes | None = None) -> bytes | None:
    """JPEG/PNG bytes of an RGB image, or None if the file was skipped (recorded either way)."""
    return self.read_sized(path, data)[0]

  def read_sized(self, path: str, data: bytes | None = None):
    """(bytes, (height, width)) as `read`, or (None, None) for a skipped file."""
    name = str(path)
    try:
      if data is None:
        with open(path, 'rb') as f:
          data = f.read()
      if not data:
        return self._skip(name, 'zero-byte file')
      with Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes fully: truncated or corrupt data raises here
        if min(im.size) < MIN_SIDE:
          return self._skip(name, f'{im.size[0]}x{im.size[1]} pixels')
        orientation = images_lib.exif_orientation(im)
        if im.format in ('JPEG', 'PNG') and im.mode == 'RGB' and orientation == 1:
          return data, (im.size[1], im.size[0])
        reason = (f'{im.format} {im.mode} -> RGB' if orientation == 1 else
                  f'{im.format} {im.mode}, EXIF orientation {orientation} -> upright RGB')
        rgb = images_lib.to_rgb(im)
        size = (rgb.size[1], rgb.size[0])
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
      return self._skip(name, f'unreadable: {type(e).__name__}: {e}')
    self.converted.append({'file': name, 'reason': reason})
    out = io.BytesIO()
    rgb.save(out, format='JPEG', quality=95)
    return out.getvalue(), size

  def _skip(self, name: str, reason: str):
    self.skipped.append({'file': name, 'reason': reason})
    return None, None

  def dedupe(self) -> None:
    """List a file read more than once (e.g. for train and retrieval_train) once."""
    for entries in (self.converted, self.skipped):
      seen = set()
      entries[:] = [e for e in entries if not (e['file'] in seen or seen.add(e['file']))]

  def report(self) -> dict:
    return {'num_converted': len(self.converted), 'num_skipped': len(self.skipped),
            'converted': list(self.converted), 'skipped': list(self.skipped)}


class BuilderBase(tfds.core.GeneratorBasedBuilder):
  """array_record output (readable without TensorFlow) and a code_path that works on Python 3.11."""

  def __init__(self, *, file_format='array_record', **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    self.images = ImageReader()

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))

  def dataset_info(self, features: tfds.features.FeaturesDict, metadata: Mapping | None = None,
                   **kwargs) -> tfds.core.DatasetInfo:
    """The builder's DatasetInfo: `features`, supervised keys (image, label), `metadata` (stored
    in metadata.json) and `kwargs` (description, homepage, citation, ...)."""
    return tfds.core.DatasetInfo(
        builder=self, features=features, supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict(metadata or {}), **kwargs)

  def examples(self, records: Iterable, example: Callable, read: Callable | None = None,
               once: bool = False) -> Iterator:
    """Yield `example(record, image, (height, width))` -> (key, features) for each record whose
    image reads, then store the bad files (`record_bad_files(once)`).

    `read(record)` gives (image bytes, (height, width)), or (None, None) for a skipped image
    (recorded by the reader); default: `self.images.read_sized(record['path'])`.
    """
    read = read or (lambda r: self.images.read_sized(r['path']))
    for record in records:
      data, size = read(record)
      if data is not None:
        yield example(record, data, size)
    self.record_bad_files(once)

  def record_bad_files(self, once: bool = False) -> None:
    """Store the ImageReader report in info.metadata['bad_files'] (persisted with the dataset);
    `once`: a file read for several splits is listed once."""
    if once:
      self.images.dedupe()
    self.info.metadata['bad_files'] = self.images.report()
