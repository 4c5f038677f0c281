"""NTS-Net default anchors (yangze0930/NTS-Net `core/anchors.py`, `generate_default_anchor_maps`).

Three levels, in this order (NTS-Net's `_default_anchors_setting`):

  | level | stride | size | scales                    | aspect ratios      | grid at 448 |
  |-------|--------|------|---------------------------|--------------------|-------------|
  | p3    | 32     | 48   | 2^(1/3), 2^(2/3)          | 0.667, 1, 1.5      | 14x14       |
  | p4    | 64     | 96   | 2^(1/3), 2^(2/3)          | 0.667, 1, 1.5      | 7x7         |
  | p5    | 128    | 192  | 1, 2^(1/3), 2^(2/3)       | 0.667, 1, 1.5      | 4x4         |

Within a level the loops run over scale, then aspect ratio, then grid row, then grid column. The
grid has ceil(input / stride) cells per axis, centres at stride/2 + k*stride; an anchor has height
size*scale/sqrt(ar) and width size*scale*sqrt(ar). 6*196 + 6*49 + 9*16 = 1614 anchors at 448.
Arithmetic is float32 exactly as the reference (heights/widths computed in float64, stored as
float32; edges = centre -+ half-size in float32), so `padded_integer_boxes` reproduces NTS-Net's
`(edge_anchors + 224).astype(int)` bit for bit.

Other input sizes (how the scheme scales; `geometry_scale`):
  - geometry_scale=1 (default) is NTS-Net's own behaviour for another INPUT_SIZE: strides and
    anchor sizes stay in pixels (they are tied to ResNet-50's stride-32 feature map), only the grids
    change to ceil(input / stride), so the anchor count depends on the input size.
  - geometry_scale=s multiplies every stride and size by s (centres at s*stride*(k + 1/2)). With
    s = input / 448 the anchor set is the 448 one shrunk proportionally: the same 1614 anchors at
    the same relative positions and relative sizes (the CPU-sized synthetic configs use this, with
    the zero padding and the zoomed region size shrunk by the same factor).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NTS_ANCHOR_SETTINGS = (
    dict(stride=32, size=48, scales=(2 ** (1. / 3.), 2 ** (2. / 3.)), ratios=(0.667, 1, 1.5)),
    dict(stride=64, size=96, scales=(2 ** (1. / 3.), 2 ** (2. / 3.)), ratios=(0.667, 1, 1.5)),
    dict(stride=128, size=192, scales=(1, 2 ** (1. / 3.), 2 ** (2. / 3.)),
         ratios=(0.667, 1, 1.5)),
)


def nts_default_anchors(input_size: int | Sequence[int] = 448, geometry_scale: float = 1.0,
                        settings=NTS_ANCHOR_SETTINGS) -> tuple[np.ndarray, np.ndarray]:
  """NTS-Net's default anchors for an input of `input_size` (int or (H, W)) pixels.

  Returns:
    (center_anchors, edge_anchors): (N, 4) float32 arrays, (cy, cx, h, w) and
    (y0, x0, y1, x1) in input pixels (edge coordinates, unpadded frame), in NTS-Net order.
  """
  hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
  s = float(geometry_scale)
  centers, edges = [], []
  for level in settings:
    stride, size = level['stride'] * s, level['size'] * s
    gh, gw = (int(np.ceil(np.float32(n) / np.float32(stride))) for n in hw)
    oy = stride / 2. + stride * np.arange(gh)
    ox = stride / 2. + stride * np.arange(gw)
    template = np.zeros((gh, gw, 4), np.float32)
    template[:, :, 0] = oy[:, None]
    template[:, :, 1] = ox[None, :]
    for scale in level['scales']:
      for ratio in level['ratios']:
        c = template.copy()
        c[:, :, 2] = size * scale / float(ratio) ** 0.5
        c[:, :, 3] = size * scale * float(ratio) ** 0.5
        e = np.concatenate((c[..., :2] - c[..., 2:4] / 2., c[..., :2] + c[..., 2:4] / 2.), -1)
        centers.append(c.reshape(-1, 4))
        edges.append(e.reshape(-1, 4))
  return np.concatenate(centers), np.concatenate(edges)


def padded_integer_boxes(edge_anchors: np.ndarray, pad: int) -> np.ndarray:
  """NTS-Net's integer boxes in the image zero-padded by `pad`: `(edge + pad).astype(int)` (int64).

  Truncation of float32 values, as `attention_net.__init__` does (all positive when pad is large
  enough, so this is a floor). Subtract `pad` for unpadded pixel-edge boxes
  (`fgjax.ops.crop.crop_and_resize`'s convention).
  """
  padded = np.asarray(edge_anchors, np.float32) + np.float32(pad)
  if padded.min() < 0:
    raise ValueError(f'pad {pad} is too small: an anchor starts at {padded.min() - pad} px')
  return padded.astype(np.int64)
