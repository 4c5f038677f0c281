"""Procedural renderer of ``synthetic_parts/fgvc``: the embedded benchmark whose images carry the
properties of real fine-grained data that attention, zooming and spatial recurrence exist for.

Pure NumPy; ``fgjax.data.synthetic`` serves it as a tfds builder config. Shapes, colours and the
determinism rules are those of ``fgjax.data.synthetic_render`` (the default config's renderer):
only uniform/integer draws from ``np.random.default_rng([seed, stream, ...])``, trigonometry on
Python scalars only, per-pixel work in exact arithmetic, so pixels are bit-identical everywhere.

The object
    The bird-like silhouette of ``synthetic_render`` (body ellipse, head disc, tail fan) carries
    five part groups (``GROUPS``), each an attribute (A3M):

    - ``head``, ``fore``, ``aft``, ``tail``: one marking each, a shape variant (``VARIANTS``: disc,
      ring, bar, triangle, square; all of the same area) in the identity's accent colour. ``fore``
      and ``aft`` sit on the body at u = +-0.5, where their surroundings look alike (the body
      ellipse is symmetric front to back).
    - ``eye``: a fine detail between ``fore`` and ``aft``: two small accent dots side by side along
      the body (variant 0) or one above the other (variant 1). Same colour, same area either way:
      only the arrangement, a few pixels across at the image-level resolution, tells them apart.

Classes (``class_table``)
    ``num_classes`` = ``base`` + 2 * ``layout_pairs`` + 2 * ``detail_pairs``:

    - base classes: distinct random tuples (head, fore, aft, tail, eye);
    - layout pairs: (h, f, a, t, e) and (h, a, f, t, e) with f != a: the same local patterns, only
      where they sit relative to each other (which of them is next to the head) differs. Orderless
      pooling of local features cannot separate them unless a local feature sees the head;
    - detail pairs: (h, f, a, t, 0) and (h, f, a, t, 1): only the fine ``eye`` detail differs.
    ``pair_kind[c]`` ('base' | 'layout' | 'detail') and ``partner[c]`` (-1 for base) say which.

The scene (``FgvcScene.render``)
    - scale: the object's length is ``object_scale`` (low, high) of the image side, log-uniform
      (default 0.25-0.6), at a random position that keeps it inside the image;
    - pose: rotation within +-``rotation_deg``, facing left or right (mirror), and a small
      per-identity deformation (body aspect, head and tail size, ``deformation``);
    - background: a texture of two triangle-wave gratings and a smooth colour field, a random
      palette per image;
    - clutter: ``clutter`` decoys, each a headless, tailless body fragment of another class with
      that class's ``fore`` / ``aft`` markings (and loose markings of other classes' head and tail
      variants), at object-like sizes, placed away from the object when possible; the object is
      drawn last. Sum pooling over the whole image mixes their markings into the feature;
    - illumination: a gain and colour cast per image, pixel noise.

Outputs: ``image`` uint8 (S, S, 3), ``label``, ``attributes`` int64 (5,), ``bbox`` float32 (4,)
(ymin, xmin, ymax, xmax) of the silhouette in [0, 1], ``part_boxes`` float32 (5, 4) of each
group's marking (the eye: both dots), ``mask``, ``parts`` and ``decoys`` (boolean maps of the
object, its markings and the visible decoy pixels, for tests).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from fgjax.data import synthetic_render as base

GROUPS = ('head', 'fore', 'aft', 'tail', 'eye')
VARIANTS = base.VARIANTS
EYE_VARIANTS = ('along', 'across')
PART_CENTRES = {'head': base.PART_CENTRES['head'], 'fore': (0.5, 0.0), 'aft': (-0.5, 0.0),
                'tail': base.PART_CENTRES['tail']}
PART_ANGLES = {'head': 0.5 * math.pi, 'fore': 0.0, 'aft': 0.0, 'tail': 0.0}
PART_RADIUS = 0.27
EYE_CENTRE, EYE_OFFSET, EYE_RADIUS = (0.0, 0.0), 0.11, 0.07
OBJECT_LENGTH = base.OBJECT_EXTENT_U[1] - base.OBJECT_EXTENT_U[0]
_STREAM_CLASSES, _STREAM_IDENTITY, _STREAM_CAMERA = 10, 11, 12
_hsv, _upsample = base._hsv, base._upsample  # pylint: disable=protected-access


def class_table(num_base: int, layout_pairs: int, detail_pairs: int, num_variants: int,
                seed: int):
  """(attributes int64 (C, 5), pair_kind list of str, partner int64 (C,)); see the docstring."""
  rng = np.random.default_rng([seed, _STREAM_CLASSES])
  chosen, kinds, partner = [], [], []

  def draw(distinct_fore_aft=False):
    while True:
      t = [int(x) for x in rng.integers(0, num_variants, 4)] + [int(rng.integers(0, 2))]
      if distinct_fore_aft and t[1] == t[2]:
        continue
      if tuple(t) not in chosen:
        return tuple(t)

  for _ in range(num_base):
    chosen.append(draw())
    kinds.append('base')
    partner.append(-1)
  for kind, count in (('layout', layout_pairs), ('detail', detail_pairs)):
    for _ in range(count):
      while True:
        t = draw(distinct_fore_aft=kind == 'layout')
        mate = ((t[0], t[2], t[1], t[3], t[4]) if kind == 'layout'
                else (t[0], t[1], t[2], t[3], 1 - t[4]))
        if mate not in chosen:
          break
      c = len(chosen)
      chosen += [t, mate]
      kinds += [kind, kind]
      partner += [c + 1, c]
  return np.array(chosen, np.int64), kinds, np.array(partner, np.int64)


def marking_masks(u, v, attributes, radius):
  """Boolean masks of the five groups (the eye: both dots), same shape as ``u``."""
  masks = []
  for group, variant in zip(GROUPS[:4], attributes[:4]):
    cu, cv = PART_CENTRES[group]
    ca, sa = math.cos(PART_ANGLES[group]), math.sin(PART_ANGLES[group])
    du, dv = u - cu, v - cv
    masks.append(base.marking_mask(int(variant), ca * du + sa * dv, -sa * du + ca * dv, radius))
  ou, ov = (EYE_OFFSET, 0.0) if int(attributes[4]) == 0 else (0.0, EYE_OFFSET)
  eye = np.zeros(u.shape, bool)
  for sign in (1.0, -1.0):
    du, dv = u - (EYE_CENTRE[0] + sign * ou), v - (EYE_CENTRE[1] + sign * ov)
    eye |= du * du + dv * dv <= EYE_RADIUS * EYE_RADIUS
  masks.append(eye)
  return masks


def textured_background(rng, x, y):
  """A random-palette smooth colour field with two triangle-wave gratings (exact arithmetic) on
  the pixel-centre grids `x`, `y` (S, S): the backgrounds of the fgvc and pretrain scenes."""
  s = x.shape[0]
  h, sat, val, f1, f2, a1, a2, o1, o2 = rng.random(9)
  colour = _hsv(h, 0.1 + 0.4 * sat, 0.3 + 0.55 * val)
  img = _upsample(colour + 0.25 * (rng.random((5, 5, 3)) - 0.5), s)
  for freq, ang, off, amp in ((f1, a1, o1, 0.10), (f2, a2, o2, 0.06)):
    period = s * (0.05 + 0.2 * freq)
    ca, sa = math.cos(math.pi * ang), math.sin(math.pi * ang)
    t = (ca * x + sa * y) / period + off
    tri = np.abs(2.0 * (t - np.floor(t)) - 1.0) - 0.5  # triangle wave, exact arithmetic
    img = img + amp * tri[..., None] * (rng.random(3) + 0.5)
  return img


def box(mask, s):
  """(ymin, xmin, ymax, xmax) of a boolean (S, S) mask in [0, 1]; zeros when it is empty."""
  rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
  if not len(rows):
    return np.zeros((4,), np.float32)
  return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32) / np.float32(s)


class FgvcScene:
  """All identities and cameras of one ``fgvc`` configuration (arguments: the knobs of
  ``fgjax.data.synthetic.SyntheticPartsConfig``'s fgvc fields, documented there)."""

  def __init__(self, image_size=128, num_base=20, layout_pairs=8, detail_pairs=7,
               num_variants=5, identities_per_class=14, object_scale=(0.25, 0.6),
               rotation_deg=30.0, deformation=0.1, clutter=2, part_scale=1.0, seed=0):
    if image_size < 32:
      raise ValueError(f'image_size must be >= 32, got {image_size}')
    if not 2 <= num_variants <= len(VARIANTS):
      raise ValueError(f'num_variants must be in [2, {len(VARIANTS)}], got {num_variants}')
    lo, hi = (float(x) for x in object_scale)
    if not 0.05 <= lo <= hi <= 0.9:
      raise ValueError(f'object_scale must be (low, high) with 0.05 <= low <= high <= 0.9, got '
                       f'{tuple(object_scale)}')
    if clutter < 0 or not 0 <= deformation <= 0.3 or not 0 < part_scale <= 1.1:
      raise ValueError('clutter must be >= 0, deformation in [0, 0.3], part_scale in (0, 1.1]')
    self.image_size, self.num_variants = int(image_size), int(num_variants)
    self.identities_per_class = int(identities_per_class)
    self.object_scale, self.rotation_deg = (lo, hi), float(rotation_deg)
    self.deformation, self.clutter = float(deformation), int(clutter)
    self.part_radius, self.seed = PART_RADIUS * float(part_scale), int(seed)
    self.attributes, self.pair_kind, self.partner = class_table(
        num_base, layout_pairs, detail_pairs, self.num_variants, self.seed)
    self.num_classes = len(self.attributes)
    pix = np.arange(self.image_size, dtype=np.float64) + 0.5
    self._y, self._x = np.meshgrid(pix, pix, indexing='ij')

  @property
  def num_identities(self):
    return self.num_classes * self.identities_per_class

  def identity_params(self, identity):
    """Class-independent appearance of one identity (colours, deformation)."""
    rng = np.random.default_rng([self.seed, _STREAM_IDENTITY, int(identity)])
    h, s, v, ah, as_, av, d1, d2 = rng.random(8)
    d = self.deformation
    return dict(body=_hsv(h, 0.35 + 0.35 * s, 0.55 + 0.35 * v),
                accent=_hsv(h + 0.5 + 0.16 * (ah - 0.5), 0.6 + 0.35 * as_,
                                 0.12 + 0.25 * av),
                body_b=base.BODY_AXES[1] * (1.0 + d * (d1 - 0.5)),
                stretch=1.0 + d * (d2 - 0.5))

  def _frame(self, rng, length_px, avoid=None):
    """(u, v) object coordinates of every pixel for an object `length_px` long, at a random
    position (away from `avoid` = (cy, cx, r) when a few tries allow) and pose."""
    s = self.image_size
    cy, cx, rot, facing = rng.random(4)
    half = 0.5 * length_px
    for _ in range(8):
      py, px = half + (s - 2 * half) * cy, half + (s - 2 * half) * cx
      if avoid is None or math.hypot(py - avoid[0], px - avoid[1]) >= avoid[2] + 0.6 * half:
        break
      cy, cx = rng.random(2)
    unit = length_px / OBJECT_LENGTH
    theta = math.radians(self.rotation_deg * (2.0 * rot - 1.0))
    sign = 1.0 if facing < 0.5 else -1.0
    mid_u = 0.5 * (base.OBJECT_EXTENT_U[0] + base.OBJECT_EXTENT_U[1])
    ct, st = math.cos(theta), math.sin(theta)
    dx, dy = self._x - px, self._y - py
    u = sign * (ct * dx + st * dy) / unit + mid_u
    v = (-st * dx + ct * dy) / unit
    return u, v, (py, px, half)

  def _length(self, rng):
    lo, hi = self.object_scale
    return self.image_size * lo * math.exp(math.log(hi / lo) * float(rng.random()))

  def _background(self, rng):
    return textured_background(rng, self._x, self._y)

  def _decoys(self, rng, img, label, object_place):
    """`clutter` body fragments of other classes with their fore / aft markings, plus loose
    markings of other classes' head and tail variants. Returns (image, decoy pixel mask)."""
    others = [c for c in range(self.num_classes) if c != label]
    painted = np.zeros(self._x.shape, bool)
    for _ in range(self.clutter):
      other = self.attributes[others[int(rng.integers(0, len(others)))]]
      h, s_, v_, ah, av = rng.random(5)
      body = _hsv(h, 0.35 + 0.35 * s_, 0.55 + 0.35 * v_)
      accent = _hsv(h + 0.5 + 0.16 * (ah - 0.5), 0.8, 0.12 + 0.25 * av)
      u, v, _ = self._frame(rng, self._length(rng), avoid=object_place)
      frag = (u / base.BODY_AXES[0]) ** 2 + (v / base.BODY_AXES[1]) ** 2 <= 1.0
      img = np.where(frag[..., None], body, img)
      painted |= frag
      marks = marking_masks(u, v, other, self.part_radius)
      on = marks[1] | marks[2]
      # A loose marking beside the fragment: another class's head or tail variant.
      loose_variant = int(other[0] if rng.random() < 0.5 else other[3])
      du, dv = u - 0.0, v - 1.2
      on |= base.marking_mask(loose_variant, du, dv, self.part_radius)
      img = np.where(on[..., None], accent, img)
      painted |= on
    return img, painted

  def render(self, identity, camera):
    identity, camera = int(identity), int(camera)
    if not 0 <= identity < self.num_identities:
      raise ValueError(f'identity {identity} out of range [0, {self.num_identities})')
    label = identity // self.identities_per_class
    attributes = self.attributes[label]
    ident = self.identity_params(identity)
    rng = np.random.default_rng([self.seed, _STREAM_CAMERA, identity, camera])
    s = self.image_size
    length = self._length(rng)
    u, v, place = self._frame(rng, length)
    u = u / ident['stretch']
    img = self._background(rng)
    img, decoys = self._decoys(rng, img, label, place)
    mask = base.silhouette_mask(u, v, ident['body_b'])
    parts = marking_masks(u, v, attributes, self.part_radius)
    shade = (1.0 - 0.15 * v)[..., None]
    img = np.where(mask[..., None], ident['body'] * shade, img)
    img = np.where(functools.reduce(np.logical_or, parts)[..., None], ident['accent'] * shade,
                   img)
    gain, r_, g_, b_ = rng.random(4)
    img = img * ((0.75 + 0.45 * gain) * (1.0 + 0.16 * (np.array([r_, g_, b_]) - 0.5)))
    img = img + 0.06 * (rng.random((s, s, 3)) - 0.5)
    image = np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return dict(image=image, mask=mask, parts=np.stack(parts), decoys=decoys & ~mask,
                bbox=box(mask, s),
                part_boxes=np.stack([box(p, s) for p in parts]), label=label,
                attributes=attributes.copy())
