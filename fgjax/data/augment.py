"""Per-example preprocessing in NumPy: bbox crop, resize, random/centre crop, flip, pixel shift.

Every function is pure given its `rng` (a `np.random.Generator`), so the pipeline can seed each
example from its position in the global stream and a resumed run sees the same pixels. `bbox`
(ymin, xmin, ymax, xmax, normalised to [0, 1]) follows the geometry when present.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def input_hw(cfg) -> tuple[int, int]:
  """(height, width) of the model input for config.dataset `cfg`."""
  return cfg.image_size, cfg.image_width or cfg.image_size


def resize(image: np.ndarray, mode: str, size: int, width: int = 0) -> np.ndarray:
  """'fixed': size x (width or size); 'short_edge': short side = size, aspect kept; 'none'."""
  h, w = image.shape[:2]
  if mode == 'none':
    return image
  if mode == 'fixed':
    out_h, out_w = size, width or size
  elif mode == 'short_edge':
    scale = size / min(h, w)
    out_h, out_w = max(size, round(h * scale)), max(size, round(w * scale))
  else:
    raise ValueError(f"dataset.resize must be 'fixed', 'short_edge' or 'none', got {mode!r}")
  if (out_h, out_w) == (h, w):
    return image
  return np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.BILINEAR))


def crop_to_bbox(image: np.ndarray, bbox: np.ndarray):
  """Crop to the (normalised) box, at least 1 pixel; the box becomes the whole image."""
  h, w = image.shape[:2]
  eps = 1e-3  # float32 box edges (0.6 * 100 = 60.000002) must not pull in an extra pixel row
  y0, x0 = int(np.floor(bbox[0] * h + eps)), int(np.floor(bbox[1] * w + eps))
  y1 = max(y0 + 1, int(np.ceil(bbox[2] * h - eps)))
  x1 = max(x0 + 1, int(np.ceil(bbox[3] * w - eps)))
  return image[y0:y1, x0:x1], np.asarray([0.0, 0.0, 1.0, 1.0], np.float32)


def crop_box(example: dict, cfg) -> np.ndarray:
  """The normalised box `dataset.crop_to_bbox` crops to: the field `dataset.crop_box` ('bbox', or
  'FIELD:ROW' for one row of a (K, 4) field, e.g. synthetic_parts/fgvc's 'part_boxes:4', the
  eye detail), grown by `dataset.crop_margin` times its height / width on every side and clipped
  to the image."""
  name, _, row = cfg.crop_box.partition(':')
  if name not in example:
    raise ValueError(f'config.dataset.crop_box={cfg.crop_box!r}: the dataset has no field '
                     f'{name!r} (it has: {", ".join(sorted(example))})')
  box = np.asarray(example[name], np.float32)
  if row:
    if box.ndim != 2 or not row.isdigit() or int(row) >= box.shape[0]:
      rows = box.shape[0] if box.ndim == 2 else 0
      raise ValueError(f'config.dataset.crop_box={cfg.crop_box!r}: {name!r} has shape '
                       f'{box.shape}; expected FIELD:ROW with ROW < {rows}')
    box = box[int(row)]
  if box.shape != (4,):
    raise ValueError(f'config.dataset.crop_box={cfg.crop_box!r} is not one box (ymin, xmin, ymax, '
                     f'xmax) but shape {box.shape}; name a row: {name}:ROW')
  m = float(cfg.crop_margin)
  if m:
    dy, dx = m * (box[2] - box[0]), m * (box[3] - box[1])
    box = np.clip(np.asarray([box[0] - dy, box[1] - dx, box[2] + dy, box[3] + dx], np.float32),
                  0.0, 1.0)
  return box


def crop(image: np.ndarray, bbox: np.ndarray | None, size_hw: tuple[int, int],
         offset: tuple[int, int] | None = None):
  """Crop size_hw at `offset` (y0, x0), or centred when None; bbox re-normalised."""
  h, w = image.shape[:2]
  ch, cw = size_hw
  if h < ch or w < cw:
    raise ValueError(f'image of {h}x{w} after resizing is smaller than the crop {ch}x{cw}; '
                     'raise dataset.resize_size / resize_width or lower dataset.image_size / '
                     'image_width')
  y0, x0 = ((h - ch) // 2, (w - cw) // 2) if offset is None else offset
  image = image[y0:y0 + ch, x0:x0 + cw]
  if bbox is not None:
    bbox = _move_bbox(bbox, h, w, y0, x0, ch, cw)
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


def user_image(image: np.ndarray, cfg) -> np.ndarray:
  """The evaluation transform of a user's image (predict, search): uint8 (H, W, 3) model input.
  A user image has no box: with `crop_to_bbox` the whole image is the box."""
  example = {'image': image}
  if cfg.crop_to_bbox:
    example['bbox'] = np.asarray([0.0, 0.0, 1.0, 1.0], np.float32)
  return preprocess(example, cfg, None)['image']


def preprocess(example: dict, cfg, rng: np.random.Generator | None) -> dict:
  """Training (rng given) or evaluation (rng None) geometry for one example dict.

  `cfg` is config.dataset. Order: [crop to bbox] -> resize -> crop (random in training, with a
  padding-free shift folded into the crop offset) -> flip -> [zero-filled shift]. Returns a new
  dict: `image` uint8 (H, W, 3), other keys unchanged except `bbox`, which follows the geometry.
  """
  image = np.asarray(example['image'])
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
  bbox = example.get('bbox')
  bbox = None if bbox is None else np.asarray(bbox, np.float32)
  if cfg.crop_to_bbox:
    if cfg.crop_box == 'bbox' and not cfg.crop_margin:
      if bbox is None:
        raise ValueError('dataset.crop_to_bbox needs a `bbox` field in the dataset')
      image, bbox = crop_to_bbox(image, bbox)
    else:  # a part box or a margin: the object box follows the crop
      h, w = image.shape[:2]
      image, _ = crop_to_bbox(image, crop_box(example, cfg))
      if bbox is not None:
        box = crop_box(example, cfg)
        eps = 1e-3
        y0, x0 = int(np.floor(box[0] * h + eps)), int(np.floor(box[1] * w + eps))
        bbox = _move_bbox(bbox, h, w, y0, x0, image.shape[0], image.shape[1])
  image = resize(image, cfg.resize, cfg.resize_size, cfg.resize_width)
  train = rng is not None
  out_h, out_w = input_hw(cfg)
  h, w = image.shape[:2]
  if train and cfg.random_crop:
    y0, x0 = int(rng.integers(0, h - out_h + 1)), int(rng.integers(0, w - out_w + 1))
  else:
    y0, x0 = (h - out_h) // 2, (w - out_w) // 2
  dy = int(rng.integers(-cfg.shift_y, cfg.shift_y + 1)) if train and cfg.shift_y else 0
  dx = int(rng.integers(-cfg.shift_x, cfg.shift_x + 1)) if train and cfg.shift_x else 0
  if not cfg.shift_padding:  # move the window; clipped so that no padding is ever needed
    y0, x0 = min(max(y0 - dy, 0), max(h - out_h, 0)), min(max(x0 - dx, 0), max(w - out_w, 0))
  image, bbox = crop(image, bbox, (out_h, out_w), (y0, x0))
  if train and cfg.hflip and rng.random() < 0.5:
    image, bbox = hflip(image, bbox)
  if cfg.shift_padding and (dy or dx):
    image, bbox = shift(image, bbox, dy, dx)
  out = dict(example)
  out['image'] = np.ascontiguousarray(image, dtype=np.uint8)
  if bbox is not None:
    out['bbox'] = bbox
  return out
