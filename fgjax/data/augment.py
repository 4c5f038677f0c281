"""Per-example preprocessing in NumPy: resize, random/centre crop, horizontal flip, pixel shift.

Every function is pure given its `rng` (a `np.random.Generator`), so the pipeline can seed each
example from its position in the global stream and a resumed run sees the same pixels. `bbox`
(ymin, xmin, ymax, xmax, normalised to [0, 1]) follows the geometry when present.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize(image: np.ndarray, mode: str, size: int) -> np.ndarray:
  """'square': size x size; 'short_edge': short side = size, aspect kept; 'none': unchanged."""
  h, w = image.shape[:2]
  if mode == 'none':
    return image
  if mode == 'square':
    out_h, out_w = size, size
  elif mode == 'short_edge':
    scale = size / min(h, w)
    out_h, out_w = max(size, round(h * scale)), max(size, round(w * scale))
  else:
    raise ValueError(f"dataset.resize must be 'square', 'short_edge' or 'none', got {mode!r}")
  if (out_h, out_w) == (h, w):
    return image
  return np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.BILINEAR))


def crop(image: np.ndarray, bbox: np.ndarray | None, size: int,
         rng: np.random.Generator | None):
  """Random crop (rng given) or centre crop (rng None) of size x size; bbox re-normalised."""
  h, w = image.shape[:2]
  if h < size or w < size:
    raise ValueError(f'image of {h}x{w} after resizing is smaller than the crop {size}x{size}; '
                     'raise dataset.resize_size or lower dataset.image_size')
  if rng is None:
    y0, x0 = (h - size) // 2, (w - size) // 2
  else:
    y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
  image = image[y0:y0 + size, x0:x0 + size]
  if bbox is not None:
    bbox = _move_bbox(bbox, h, w, y0, x0, size, size)
  return image, bbox


def hflip(image: np.ndarray, bbox: np.ndarray | None):
  image = image[:, ::-1]
  if bbox is not None:
    bbox = np.asarray([bbox[0], 1.0 - bbox[3], bbox[2], 1.0 - bbox[1]], np.float32)
  return image, bbox


def shift(image: np.ndarray, bbox: np.ndarray | None, dy: int, dx: int):
  """Translate by (dy, dx) pixels, filling uncovered pixels with zeros (size unchanged)."""
  h, w = image.shape[:2]
  out = np.zeros_like(image)
  ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
  xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
  out[yd, xd] = image[ys, xs]
  if bbox is not None:
    bbox = _move_bbox(bbox, h, w, -dy, -dx, h, w)
  return out, bbox


def _move_bbox(bbox, h, w, y0, x0, out_h, out_w):
  """bbox in an h x w frame -> the out_h x out_w window starting at (y0, x0), clipped."""
  ymin, xmin, ymax, xmax = bbox[0] * h, bbox[1] * w, bbox[2] * h, bbox[3] * w
  box = np.asarray([(ymin - y0) / out_h, (xmin - x0) / out_w,
                    (ymax - y0) / out_h, (xmax - x0) / out_w], np.float32)
  return np.clip(box, 0.0, 1.0)


def preprocess(example: dict, cfg, rng: np.random.Generator | None) -> dict:
  """Training (rng given) or evaluation (rng None) geometry for one example dict.

  `cfg` is config.dataset. Returns a new dict: `image` uint8 (S, S, 3), other keys unchanged
  except `bbox`, which follows the geometry.
  """
  image = np.asarray(example['image'])
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
  bbox = example.get('bbox')
  bbox = None if bbox is None else np.asarray(bbox, np.float32)
  image = resize(image, cfg.resize, cfg.resize_size)
  train = rng is not None
  image, bbox = crop(image, bbox, cfg.image_size, rng if (train and cfg.random_crop) else None)
  if train and cfg.hflip and rng.random() < 0.5:
    image, bbox = hflip(image, bbox)
  if train and cfg.max_shift > 0:
    dy, dx = (int(v) for v in rng.integers(-cfg.max_shift, cfg.max_shift + 1, size=2))
    image, bbox = shift(image, bbox, dy, dx)
  out = dict(example)
  out['image'] = np.ascontiguousarray(image, dtype=np.uint8)
  if bbox is not None:
    out['bbox'] = bbox
  return out
