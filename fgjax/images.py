"""Image files for `python -m fgjax.predict`: find them (folders recursed, sorted) and decode them.

Decoding uses PIL, no TensorFlow: the first frame of the file converted to RGB uint8 (palette,
grey, 16-bit, CMYK and alpha images included; alpha is dropped, not composited). The EXIF
orientation tag is NOT applied, like the tfds image decoding that the datasets go through, so a
photo is seen with the pixel layout stored in the file.

A file that cannot be read is reported, never fatal: `read_image` raises `ImageError` with the
reason, and the caller writes `SKIP path: reason` and goes on.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

# Extensions picked up inside folders (case-insensitive). A file named on the command line is
# tried whatever its extension.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm',
                    '.pgm', '.pbm')


class ImageError(Exception):
  """An image file that could not be decoded (the message is the reason)."""


@dataclasses.dataclass(frozen=True)
class ImageFile:
  path: str  # as found (the argument, or the argument joined with the path inside it)
  name: str  # relative name: the file's basename, or the folder's name + the path inside it


def find_images(args) -> tuple[list[ImageFile], list[tuple[str, str]]]:
  """(image files in argument order, folders recursed in sorted order, duplicates dropped;
  [(argument, reason)] for arguments that are neither a file nor a folder)."""
  found, missing, seen = [], [], set()

  def add(path, name):
    key = os.path.realpath(path)
    if key not in seen:
      seen.add(key)
      found.append(ImageFile(path, name))

  for arg in args:
    if os.path.isdir(arg):
      top = os.path.normpath(arg)
      base = os.path.dirname(top)
      inside = [os.path.join(root, f) for root, _, files in os.walk(top) for f in files
                if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
      for path in sorted(inside, key=lambda p: os.path.relpath(p, top).split(os.sep)):
        add(path, os.path.relpath(path, base or os.curdir))
    elif os.path.isfile(arg):
      add(arg, os.path.basename(arg))
    else:
      missing.append((arg, 'no such file or directory'))
  return found, missing


def read_image(path: str) -> np.ndarray:
  """(H, W, 3) uint8 RGB pixels of the first frame; ImageError with the reason on failure."""
  try:
    with Image.open(path) as im:
      im.seek(0)
      im.load()
      if im.mode in ('I;16', 'I;16B', 'I;16L', 'I'):  # 16/32-bit grey: scale to 8 bits
        a = np.asarray(im, np.float64)
        a = np.clip(a / (65535.0 if a.max() > 255 else 255.0) * 255.0, 0, 255)
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=-1)
      rgb = np.asarray(im.convert('RGB'), np.uint8)
  except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    raise ImageError(f'{type(e).__name__}: {e}') from None
  if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise ImageError(f'empty image of shape {rgb.shape}')
  return np.ascontiguousarray(rgb)
