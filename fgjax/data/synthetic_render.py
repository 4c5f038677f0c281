"""Procedural renderer for the embedded fine-grained dataset ``synthetic_parts``.

Pure NumPy, no tfds. ``fgjax.data.synthetic`` wraps it in a tfds builder.

The scene
    Every object is a bird-like silhouette: a body ellipse, a head disc in front and a tail fan at
    the back, all in the identity's body colour. Three *part groups* -- ``head``, ``wing`` (on the
    body) and ``tail`` -- each carry one small marking in the identity's accent colour. A marking
    has one of ``num_variants`` shape variants (``VARIANTS``: disc, ring, bar, triangle, square),
    all with the SAME area (an equal-area disc of radius ``PART_RADIUS * part_scale``) and all lying
    inside the silhouette. A class is a tuple of variants, one per group; ``attributes`` is that
    tuple. The silhouette, the colour distributions, poses, lighting and backgrounds are shared by
    all classes, so the class lives only in the shape of small parts at consistent relative
    positions: per-image colour histograms carry (in expectation) no class information.

Identities and cameras
    Identity ``i`` belongs to class ``i // identities_per_class`` and draws its own body colour,
    accent colour (complementary hue, dark) and size. Camera ``c`` of an identity draws position,
    scale, a small rotation, facing direction (mirror), a textured background with distractor
    blobs (same colour palette as the objects; ``clutter`` sets their number, size and opacity)
    and an illumination (gain and colour cast). ``render(identity, camera)`` is a pure function of
    ``(seed, identity, camera)``, so any split can reuse exactly the same images.

Rendering is inverse mapping: every pixel centre ``p`` is mapped to object coordinates
``(u, v) = R^-1 (p - centre) / unit`` (``u`` mirrored when the object faces left; ``u`` points
forward, ``v`` down), and shapes are evaluated implicitly in ``(u, v)``. Edges are hard (no
anti-aliasing) so a marking's pixel count is, in expectation over sub-pixel positions, exactly its
area, with no perimeter-dependent blended colours.

Determinism
    Every random draw comes from ``np.random.default_rng([seed, stream, ...])`` (PCG64, identical
    on every platform) and only uses uniform/integer draws (no libm-based normal sampling).
    Trigonometry and HSV conversion only happen on Python scalars; per-pixel work uses only
    IEEE-exact arithmetic (+, -, *, /, comparisons) and no reductions, so images are
    bit-identical across machines and runs.
"""

from __future__ import annotations

import colorsys
import functools
import math

import numpy as np

GROUPS = ('head', 'wing', 'tail')
VARIANTS = ('disc', 'ring', 'bar', 'triangle', 'square')  # most distinct first

# Object-frame geometry (units: one body half-length). u forward, v down.
BODY_AXES = (1.0, 0.56)
HEAD = (1.1, -0.15, 0.5)  # centre u, centre v, radius
TAIL_APEX_U, TAIL_BASE_U, TAIL_HALF_WIDTH = -0.5, -1.8, 0.75
PART_CENTRES = {'head': (1.1, -0.15), 'wing': (-0.05, -0.05), 'tail': (-1.28, 0.0)}
PART_ANGLES = {'head': 0.5 * math.pi, 'wing': 0.0, 'tail': 0.0}  # bar/triangle orientation
PART_RADIUS = 0.3  # radius of the equal-area disc at part_scale = 1
MAX_PART_SCALE = 1.05  # larger markings would leave the silhouette
OBJECT_EXTENT_U = (TAIL_BASE_U, HEAD[0] + HEAD[2])
RING_HOLE = 0.55  # inner radius / outer radius of the ring

_STREAM_CLASSES, _STREAM_IDENTITY, _STREAM_CAMERA = 0, 1, 2


def _hsv(h, s, v):
  return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float64)


def class_attributes(num_classes, num_variants, seed, num_groups=len(GROUPS)):
  """Deterministic distinct variant tuples, int64 (num_classes, num_groups).

  Tuples are drawn greedily in a seeded random order of all ``num_variants ** num_groups`` tuples,
  accepting a tuple only if it differs from an accepted one in exactly one group (so every class
  has a sibling that differs in a single part: fine-grained), preferring tuples that use a
  variant not yet used by its group (so every attribute value appears when possible).
  """
  total = num_variants ** num_groups
  if not 1 <= num_classes <= total:
    raise ValueError(f'num_classes must be in [1, {total}] for {num_variants} variants '
                     f'and {num_groups} groups, got {num_classes}')
  rng = np.random.default_rng([seed, _STREAM_CLASSES])
  order = rng.permutation(total)
  tuples = [tuple(int(x) for x in np.unravel_index(k, (num_variants,) * num_groups))
            for k in order]
  chosen = [tuples[0]]
  while len(chosen) < num_classes:
    used = [{t[g] for t in chosen} for g in range(num_groups)]
    best, best_score = None, -1
    for t in tuples:
      if t in chosen or not any(sum(a != b for a, b in zip(t, c)) == 1 for c in chosen):
        continue
      score = sum(t[g] not in used[g] for g in range(num_groups))
      if score > best_score:
        best, best_score = t, score
    chosen.append(best)
  return np.array(chosen, dtype=np.int64)


def marking_mask(variant, a, b, radius):
  """Boolean mask of a marking in part-local coordinates (a forward, b across).

  Every variant covers the area ``pi * radius**2`` (the equal-area disc).
  """
  name = VARIANTS[variant]
  if name == 'disc':
    return a * a + b * b <= radius * radius
  if name == 'ring':
    outer2 = radius * radius / (1.0 - RING_HOLE * RING_HOLE)
    d2 = a * a + b * b
    return (d2 <= outer2) & (d2 >= RING_HOLE * RING_HOLE * outer2)
  if name == 'bar':  # 2w x w rectangle along a
    w = radius * math.sqrt(math.pi / 2.0)
    return (np.abs(a) <= w) & (np.abs(b) <= 0.5 * w)
  if name == 'triangle':  # equilateral, centroid at origin, apex pointing +a
    side = radius * math.sqrt(4.0 * math.pi / math.sqrt(3.0))
    rc = side / math.sqrt(3.0)
    return (a >= -0.5 * rc) & (np.abs(b) <= (side / 3.0) * (rc - a) / rc)
  if name == 'square':
    h = 0.5 * radius * math.sqrt(math.pi)
    return (np.abs(a) <= h) & (np.abs(b) <= h)
  raise ValueError(name)


def silhouette_mask(u, v, body_b=BODY_AXES[1]):
  """Body ellipse | head disc | tail fan, in object coordinates."""
  body = (u / BODY_AXES[0]) ** 2 + (v / body_b) ** 2 <= 1.0
  hu, hv, hr = HEAD
  head = (u - hu) ** 2 + (v - hv) ** 2 <= hr * hr
  half = TAIL_HALF_WIDTH * (TAIL_APEX_U - u) / (TAIL_APEX_U - TAIL_BASE_U)
  tail = (u <= TAIL_APEX_U) & (u >= TAIL_BASE_U) & (np.abs(v) <= half)
  return body | head | tail


def part_masks(u, v, attributes, radius):
  """One boolean mask per part group, same shape as ``u``."""
  masks = []
  for group, variant in zip(GROUPS, attributes):
    cu, cv = PART_CENTRES[group]
    ca, sa = math.cos(PART_ANGLES[group]), math.sin(PART_ANGLES[group])
    du, dv = u - cu, v - cv
    masks.append(marking_mask(int(variant), ca * du + sa * dv, -sa * du + ca * dv, radius))
  return masks


def _upsample(grid, size):
  """Bilinear upsampling of a (g, g, 3) grid to (size, size, 3), arithmetic only."""
  g = grid.shape[0]
  t = (np.arange(size, dtype=np.float64) + 0.5) * ((g - 1) / size)
  i0 = np.minimum(t.astype(np.int64), g - 2)
  f = (t - i0)[:, None]
  rows = grid[i0] * (1.0 - f[:, :, None]) + grid[i0 + 1] * f[:, :, None]  # (S, g, 3)
  return rows[:, i0] * (1.0 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]


class Scene:
  """All identities and cameras of one dataset configuration.

  Args:
    image_size: output images are (image_size, image_size, 3) uint8.
    num_classes: number of variant tuples (classes).
    num_variants: shape variants per part group (<= len(VARIANTS)).
    identities_per_class: identities per class (train + test).
    clutter: difficulty in [0, 1]: distractor count/size/opacity and background texture contrast.
    part_scale: marking size multiplier (<= MAX_PART_SCALE).
    seed: the global seed.
  """

  def __init__(self, image_size=64, num_classes=10, num_variants=3, identities_per_class=100,
               clutter=0.5, part_scale=1.0, seed=0):
    if not 1 <= num_variants <= len(VARIANTS):
      raise ValueError(f'num_variants must be in [1, {len(VARIANTS)}], got {num_variants}')
    if not 0.0 < part_scale <= MAX_PART_SCALE:
      raise ValueError(f'part_scale must be in (0, {MAX_PART_SCALE}], got {part_scale}')
    if not 0.0 <= clutter <= 1.0:
      raise ValueError(f'clutter must be in [0, 1], got {clutter}')
    if image_size < 16:
      raise ValueError(f'image_size must be >= 16, got {image_size}')
    self.image_size = int(image_size)
    self.num_classes = int(num_classes)
    self.num_variants = int(num_variants)
    self.identities_per_class = int(identities_per_class)
    self.clutter = float(clutter)
    self.part_radius = PART_RADIUS * float(part_scale)
    self.seed = int(seed)
    self.attributes = class_attributes(self.num_classes, self.num_variants, self.seed)
    pix = np.arange(self.image_size, dtype=np.float64) + 0.5
    self._y, self._x = np.meshgrid(pix, pix, indexing='ij')

  @property
  def num_identities(self):
    return self.num_classes * self.identities_per_class

  def identity_class(self, identity):
    return int(identity) // self.identities_per_class

  def identity_params(self, identity):
    """Class-independent appearance of one identity (colours, size, body shape)."""
    rng = np.random.default_rng([self.seed, _STREAM_IDENTITY, int(identity)])
    h, s, v, ah, as_, av, size, body_b = rng.random(8)
    return dict(
        body=_hsv(h, 0.35 + 0.35 * s, 0.55 + 0.35 * v),
        accent=_hsv(h + 0.5 + 0.16 * (ah - 0.5), 0.6 + 0.35 * as_, 0.12 + 0.25 * av),
        size=0.92 + 0.16 * size,
        body_b=BODY_AXES[1] * (0.96 + 0.04 * body_b))

  def _background(self, rng):
    s, c = self.image_size, self.clutter
    h, sat, val = rng.random(3)
    base = _hsv(h, 0.1 + 0.4 * sat, 0.3 + 0.55 * val)
    grid = base + (0.08 + 0.22 * c) * (rng.random((5, 5, 3)) - 0.5)
    img = _upsample(grid, s)
    n = int(rng.integers(0, 2 * int(round(8 * c)) + 1)) if c > 0 else 0
    for _ in range(n):
      cy, cx, ay, ax, ang, kind, ch, cs, cv, alpha = rng.random(10)
      ay, ax = s * (0.05 + 0.12 * ay), s * (0.05 + 0.12 * ax)
      ca, sa = math.cos(math.pi * ang), math.sin(math.pi * ang)
      dy, dx = self._y - s * cy, self._x - s * cx
      a, b = (ca * dx + sa * dy) / ax, (-sa * dx + ca * dy) / ay
      mask = a * a + b * b <= 1.0
      if kind < 0.5:  # body palette
        col = _hsv(ch, 0.35 + 0.35 * cs, 0.55 + 0.35 * cv)
      else:  # accent palette
        col = _hsv(ch, 0.6 + 0.35 * cs, 0.12 + 0.25 * cv)
      alpha = 0.25 + 0.55 * c * alpha
      img = np.where(mask[..., None], img * (1.0 - alpha) + col * alpha, img)
    return img

  def render(self, identity, camera):
    """Renders one (identity, camera) view.

    Returns a dict: ``image`` uint8 (S, S, 3), ``mask`` bool (S, S) object silhouette,
    ``parts`` bool (G, S, S) marking masks, ``bbox`` float32 (4,) (ymin, xmin, ymax, xmax) of the
    silhouette in [0, 1], ``label`` int, ``attributes`` int64 (G,).
    """
    identity, camera = int(identity), int(camera)
    if not 0 <= identity < self.num_identities:
      raise ValueError(f'identity {identity} out of range [0, {self.num_identities})')
    label = self.identity_class(identity)
    attributes = self.attributes[label]
    ident = self.identity_params(identity)
    rng = np.random.default_rng([self.seed, _STREAM_CAMERA, identity, camera])
    s = self.image_size
    cy, cx, scale, rot, facing, gain, r_, g_, b_ = rng.random(9)
    length = OBJECT_EXTENT_U[1] - OBJECT_EXTENT_U[0]
    unit = s * 0.6 / length * ident['size'] * (0.85 + 0.3 * scale)
    theta = math.radians(40.0 * (rot - 0.5))
    sign = 1.0 if facing < 0.5 else -1.0
    # Object centre (u = mid of the extent) stays inside the central part of the image.
    mid_u = 0.5 * (OBJECT_EXTENT_U[0] + OBJECT_EXTENT_U[1])
    cy, cx = s * (0.32 + 0.36 * cy), s * (0.32 + 0.36 * cx)
    ct, st = math.cos(theta), math.sin(theta)
    dx, dy = self._x - cx, self._y - cy
    u = sign * (ct * dx + st * dy) / unit + mid_u
    v = (-st * dx + ct * dy) / unit

    img = self._background(rng)
    mask = silhouette_mask(u, v, ident['body_b'])
    parts = part_masks(u, v, attributes, self.part_radius)
    shade = (1.0 - 0.15 * v)[..., None]  # lit from above, same for all classes
    img = np.where(mask[..., None], ident['body'] * shade, img)
    any_part = functools.reduce(np.logical_or, parts)
    img = np.where(any_part[..., None], ident['accent'] * shade, img)
    cast = np.array([r_, g_, b_]) - 0.5
    img = img * ((0.75 + 0.45 * gain) * (1.0 + 0.16 * cast))
    img = img + 0.06 * (rng.random((s, s, 3)) - 0.5)
    image = np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    bbox = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32) / np.float32(s)
    return dict(image=image, mask=mask, parts=np.stack(parts), bbox=bbox, label=label,
                attributes=attributes.copy())
