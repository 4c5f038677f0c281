"""Image files: find them (folders recursed, sorted) and decode them, the same way everywhere.

`to_rgb` is the one decoding rule of fgjax, used by `python -m fgjax.predict` (`read_image`,
`decode`) and by the real-dataset builders (`fgjax.data.builders.common.ImageReader`), so a photo
is seen with the same pixels in training, evaluation and prediction:

1. the first frame of the file (animated GIF / multi-page TIFF);
2. the EXIF orientation tag applied (`PIL.ImageOps.exif_transpose`): a phone photo stored
   sideways with orientation 6 or 8 is turned upright, as image viewers show it;
3. alpha (RGBA, LA, palette with a transparent colour) composited over a white background;
4. 16-bit / 32-bit grey scaled to 8 bits by its bit depth (values above 255 are taken as 16-bit
   and divided by 257; otherwise they are kept), so a dark image stays dark;
5. anything else (grey, palette, CMYK, YCbCr, ...) converted to RGB uint8.

Decoding uses PIL, no TensorFlow. Datasets prepared before this rule applied EXIF orientation hold
a rotated photo's pixels as stored in the file; rebuild them to see such photos upright.

A file that cannot be read is reported, never fatal: `read_image` raises `ImageError` with the
reason, and the caller writes `SKIP path: reason` and goes on. A readable but tiny image is
predicted, with a warning (`tiny_image_warning`): its shorter side is below `MIN_SIDE` (32)
pixels, or below 1/8 of the model input's shorter side, so the model sees an upscaled blur.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
from PIL import Image, ImageOps

# Extensions picked up inside folders (case-insensitive). A file named on the command line is
# tried whatever its extension.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm',
                    '.pgm', '.pbm')

# An image whose shorter side is below this many pixels (or below 1/8 of the model input's shorter
# side, whichever is larger) is predicted with a warning.
MIN_SIDE = 32
_EXIF_ORIENTATION = 0x0112
_WIDE_GREY = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')


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


def exif_orientation(im: Image.Image) -> int:
  """The EXIF orientation tag of `im` (1 = stored upright, also when absent or unreadable)."""
  try:
    return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
  except Exception:  # pylint: disable=broad-except  # a damaged EXIF block: keep the stored layout
    return 1


def to_rgb(im: Image.Image) -> Image.Image:
  """The first frame of `im`, upright (EXIF orientation applied), as an RGB PIL image: alpha
  composited over white, wide grey scaled to 8 bits, every other mode converted (see the module
  docstring). `im` is not changed, apart from seeking to its first frame."""
  im.seek(0)
  im.load()
  if exif_orientation(im) != 1:
    im = ImageOps.exif_transpose(im)
  if im.mode in ('RGBA', 'LA', 'PA') or (im.mode == 'P' and 'transparency' in im.info):
    rgba = im.convert('RGBA')
    background = Image.new('RGB', rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel('A'))  # alpha composited over white
    return background
  if im.mode in _WIDE_GREY:
    a = np.asarray(im, np.float64)
    if a.size and a.max() > 255:
      a = a / 257.0  # 16-bit: 65535 -> 255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert('RGB')
  return im.convert('RGB')  # RGB (a copy), L, 1, P, CMYK, YCbCr, ...


def decode(data: bytes) -> np.ndarray:
  """(H, W, 3) uint8 RGB pixels of encoded image bytes (`to_rgb`); ImageError on failure."""
  return _read(io.BytesIO(data))


def read_image(path: str) -> np.ndarray:
  """(H, W, 3) uint8 RGB pixels of the image file (`to_rgb`); ImageError with the reason on
  failure."""
  return _read(path)


def _read(source) -> np.ndarray:
  try:
    with Image.open(source) as im:
      rgb = np.asarray(to_rgb(im), np.uint8)
  except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    raise ImageError(f'{type(e).__name__}: {e}') from None
  if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise ImageError(f'empty image of shape {rgb.shape}')
  return np.ascontiguousarray(rgb)


def tiny_image_warning(shape, input_hw: tuple[int, int]) -> str | None:
  """A one-line warning when an image of `shape` (H, W, ...) is too small for a model input of
  `input_hw` (height, width): its shorter side below `MIN_SIDE` pixels or below 1/8 of the input's
  shorter side; None otherwise."""
  h, w = int(shape[0]), int(shape[1])
  limit = max(MIN_SIDE, -(-min(input_hw) // 8))
  if min(h, w) >= limit:
    return None
  return (f'{w}x{h} image is smaller than {limit} px on its shorter side (the model input is '
          f'{input_hw[1]}x{input_hw[0]}): it is upscaled and the prediction may be meaningless')
