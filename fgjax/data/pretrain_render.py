"""Procedural renderer of ``synthetic_parts/pretrain``: a generic many-class shape and texture
dataset that stands in for ImageNet pretraining before the embedded benchmark
(``synthetic_parts/fgvc``, ``fgjax.data.fgvc_render``).

Pure NumPy; ``fgjax.data.synthetic`` serves it as a tfds builder config. The determinism rules are
those of ``fgjax.data.synthetic_render``: only uniform/integer draws from
``np.random.default_rng([seed, stream, ...])``, trigonometry on Python scalars only, per-pixel work
in exact arithmetic (+ - * /, comparisons, abs, floor), so pixels are bit-identical everywhere.

Classes
    ``num_classes = num_shapes * num_textures``; class ``c`` is the pair (``SHAPES[c //
    num_textures]``, ``TEXTURES[c % num_textures]``), named ``'<shape>-<texture>'``. The first
    ``num_shapes`` / ``num_textures`` entries are used (most distinct first).

    - Shapes (``SHAPES``, implicit masks of circumradius <= 1 in shape-local coordinates): none is
      one of the benchmark's marking variants (disc, ring, bar, triangle, square); at equal area,
      centroid-aligned and at the best rotation, each has IoU < 0.8 with every variant (tested).
      A filled hexagon is left out: IoU 0.93 with its equal-area disc. ``xcross`` is two bars
      crossing at 60 degrees (at 90 degrees it would be ``plus`` rotated; rotation is free).
    - Textures (``TEXTURES``): the shape's fill, two colours, in IMAGE coordinates (stripe
      orientation is fixed in the image, not in the shape's frame: under free rotation
      shape-frame stripes would make ``hstripes`` and ``vstripes`` the same class), with a period
      proportional to the shape's size and a random phase.

The scene (``PretrainScene.render``)
    - the main shape: circumscribed diameter 35-80% of the image side (uniform), any rotation, a
      random position with the whole shape inside the image, random colours (the two texture
      colours differ in value), lit from above;
    - ``distractors`` smaller shapes (12-30% of the side) of random other classes, drawn first
      (the main shape occludes them), anywhere (partly outside the image allowed);
    - background: a smooth colour field and two triangle-wave gratings (as ``fgvc_render``);
    - illumination: a gain and colour cast per image, pixel noise (as ``fgvc_render``).
    Each layer (background, distractors, main shape, illumination) draws from its own stream
    ``[seed, 20, instance, camera, layer]``, so the main shape does not depend on ``distractors``.

Outputs: ``image`` uint8 (S, S, 3), ``label`` int, ``mask`` bool (S, S) of the main shape, ``bbox``
float32 (4,) (ymin, xmin, ymax, xmax) of the mask in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

from fgjax.data import fgvc_render
from fgjax.data import synthetic_render as base

SHAPES = ('hexagram', 'plus', 'crescent', 'arrow', 'frame', 'dumbbell', 'xcross', 'chevron')
TEXTURES = ('solid', 'hstripes', 'vstripes', 'dstripes', 'checker', 'dots')
MAIN_SCALE = (0.35, 0.8)  # circumscribed diameter / image side
DISTRACTOR_SCALE = (0.12, 0.3)
_STREAM_RENDER = 20
_S3 = math.sqrt(3.0) / 2.0
_C30, _S30 = math.cos(math.pi / 6.0), math.sin(math.pi / 6.0)
_CHEVRON = 0.78 / 1.4  # half-width / length of the chevron's outer triangle
_hsv = base._hsv  # pylint: disable=protected-access


def _bar(a, b, half_length, half_width):
  return (np.abs(a) <= half_length) & (np.abs(b) <= half_width)


def shape_mask(shape, a, b):
  """Boolean mask of shape ``shape`` (index into SHAPES) at unit circumradius, local (a, b)."""
  name = SHAPES[shape]
  if name == 'hexagram':  # two equilateral triangles of circumradius 1, apex +a and apex -a
    ab = _S3 * np.abs(b)
    return ((a >= -0.5) & (0.5 * a + ab <= 0.5)) | ((a <= 0.5) & (ab - 0.5 * a <= 0.5))
  if name == 'plus':  # equal arms at 90 degrees
    return _bar(a, b, 0.95, 0.27) | _bar(b, a, 0.95, 0.27)
  if name == 'crescent':  # unit disc minus an offset disc, horns pointing +a
    return (a * a + b * b <= 1.0) & ((a - 0.5) * (a - 0.5) + b * b > 0.64)
  if name == 'arrow':  # shaft along a, triangular head at +a
    head = (a >= 0.1) & (a <= 1.0) & (np.abs(b) <= 0.65 / 0.9 * (1.0 - a))
    return head | ((a >= -0.98) & (a <= 0.1) & (np.abs(b) <= 0.2))
  if name == 'frame':  # square outline
    outer, inner = _bar(a, b, 0.7, 0.7), _bar(a, b, 0.42, 0.42)
    return outer & ~inner
  if name == 'dumbbell':  # two end discs on a thin bar
    aa = np.abs(a) - 0.68
    return (aa * aa + b * b <= 0.1024) | _bar(a, b, 0.68, 0.1)
  if name == 'xcross':  # two bars crossing at 60 degrees
    return (_bar(_C30 * a + _S30 * b, _C30 * b - _S30 * a, 0.97, 0.2)
            | _bar(_C30 * a - _S30 * b, _C30 * b + _S30 * a, 0.97, 0.2))
  if name == 'chevron':  # a V pointing +a: a triangle minus a shifted copy
    ab = np.abs(b)
    return (a >= -0.6) & (ab <= _CHEVRON * (0.8 - a)) & (ab > _CHEVRON * (0.25 - a))
  raise ValueError(name)


def texture_mask(texture, x, y, period, phase):
  """Pattern mask (True = second colour) of texture ``texture`` (index into TEXTURES) at image
  offsets (x, y) in pixels, ``period`` in pixels, ``phase`` (2,) in [0, 1)."""
  name = TEXTURES[texture]
  tx, ty = x / period + phase[0], y / period + phase[1]
  fx, fy = tx - np.floor(tx), ty - np.floor(ty)
  if name == 'solid':
    return np.zeros(x.shape, bool)
  if name == 'hstripes':  # stripes run along x
    return fy < 0.5
  if name == 'vstripes':
    return fx < 0.5
  if name == 'dstripes':  # along the image diagonal y = -x
    t = (x + y) / (1.4142135623730951 * period) + phase[0]
    return t - np.floor(t) < 0.5
  if name == 'checker':
    return (fx < 0.5) != (fy < 0.5)
  if name == 'dots':
    dx, dy = fx - 0.5, fy - 0.5
    return dx * dx + dy * dy <= 0.1
  raise ValueError(name)


class PretrainScene:
  """All instances of one ``pretrain`` configuration (arguments: the fields of
  ``fgjax.data.synthetic.PretrainConfig``, documented there)."""

  def __init__(self, image_size=128, num_shapes=8, num_textures=6, instances_per_class=50,
               distractors=2, seed=0):
    if image_size < 32:
      raise ValueError(f'image_size must be >= 32, got {image_size}')
    if not 1 <= num_shapes <= len(SHAPES) or not 1 <= num_textures <= len(TEXTURES):
      raise ValueError(f'num_shapes must be in [1, {len(SHAPES)}] and num_textures in '
                       f'[1, {len(TEXTURES)}], got {num_shapes}, {num_textures}')
    if num_shapes * num_textures < 2 or instances_per_class < 1 or distractors < 0:
      raise ValueError('need >= 2 classes, instances_per_class >= 1 and distractors >= 0')
    self.image_size, self.num_shapes = int(image_size), int(num_shapes)
    self.num_textures, self.instances_per_class = int(num_textures), int(instances_per_class)
    self.distractors, self.seed = int(distractors), int(seed)
    self.num_classes = self.num_shapes * self.num_textures
    self.class_names = [f'{SHAPES[c // self.num_textures]}-{TEXTURES[c % self.num_textures]}'
                        for c in range(self.num_classes)]
    pix = np.arange(self.image_size, dtype=np.float64) + 0.5
    self._y, self._x = np.meshgrid(pix, pix, indexing='ij')

  @property
  def num_instances(self):
    return self.num_classes * self.instances_per_class

  def shape_texture(self, label):
    return int(label) // self.num_textures, int(label) % self.num_textures

  def _background(self, rng):
    return fgvc_render.textured_background(rng, self._x, self._y)

  def _draw(self, rng, img, label, scale, inside):
    """Paints one shape of class ``label`` with a circumscribed diameter drawn from ``scale``
    (fractions of the side); returns (image, mask)."""
    s = self.image_size
    shape, texture = self.shape_texture(label)
    size, cy, cx, rot, h, sat, val, h2, dv, per, p1, p2 = rng.random(12)
    r = 0.5 * s * (scale[0] + (scale[1] - scale[0]) * size)
    lo, hi = (r, s - r) if inside else (0.0, float(s))
    py, px = lo + (hi - lo) * cy, lo + (hi - lo) * cx
    theta = 2.0 * math.pi * rot
    ct, st = math.cos(theta), math.sin(theta)
    dx, dy = self._x - px, self._y - py
    mask = shape_mask(shape, (ct * dx + st * dy) / r, (ct * dy - st * dx) / r)
    # Two fill colours of clearly different value (the pattern must be visible).
    v1 = 0.25 + 0.7 * val
    v2 = v1 - 0.3 - 0.25 * dv if v1 > 0.6 else v1 + 0.3 + 0.25 * dv
    first = _hsv(h, 0.3 + 0.6 * sat, v1)
    second = _hsv(h2, 0.3 + 0.6 * sat, min(v2, 1.0))
    pattern = texture_mask(texture, dx, dy, r * (0.3 + 0.15 * per), (p1, p2))
    colour = np.where(pattern[..., None], second, first) * (1.0 - 0.12 * dy / r)[..., None]
    return np.where(mask[..., None], colour, img), mask

  def render(self, instance, camera=0):
    instance, camera = int(instance), int(camera)
    if not 0 <= instance < self.num_instances:
      raise ValueError(f'instance {instance} out of range [0, {self.num_instances})')
    label = instance // self.instances_per_class
    # One sub-stream per layer: the main shape and the lighting do not depend on `distractors`.
    rng = [np.random.default_rng([self.seed, _STREAM_RENDER, instance, camera, layer])
           for layer in range(4)]
    s = self.image_size
    img = self._background(rng[0])
    for _ in range(self.distractors):
      other = int(rng[1].integers(0, self.num_classes - 1))
      img, _ = self._draw(rng[1], img, other + (other >= label), DISTRACTOR_SCALE, inside=False)
    img, mask = self._draw(rng[2], img, label, MAIN_SCALE, inside=True)
    gain, r_, g_, b_ = rng[3].random(4)
    img = img * ((0.75 + 0.45 * gain) * (1.0 + 0.16 * (np.array([r_, g_, b_]) - 0.5)))
    img = img + 0.06 * (rng[3].random((s, s, 3)) - 0.5)
    image = np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return dict(image=image, label=label, mask=mask, bbox=fgvc_render.box(mask, s))
