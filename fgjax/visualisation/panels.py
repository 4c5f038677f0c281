"""The maps a method draws over its input: `Panel` (returned by `Method.attention_panels`) and the
coordinate helpers. NumPy only, so method modules import it without matplotlib; rendering is
`fgjax.visualisation.overlays`.

Coordinates: every panel coordinate is NORMALISED to the drawn model input, (y, x) order like the
datasets' `bbox` (see fgjax.visualisation.overlays for how each field is drawn).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass
class Panel:
  """One map drawn over the model input (all coordinates normalised, see the module docstring).

  title: what the map is (say "not attention" where it is not).
  heatmap: (h, w) float map on its own grid, or None (boxes / note only).
  extent: (y0, x0, y1, x1) rectangle of the input the heatmap covers.
  contour: (h', w') binary mask on the heatmap's extent, drawn as a white outline (e.g. Otsu M_b).
  boxes: (n, 4) boxes; `ranked` colours them by rank (row 0 = rank 1) with a legend, otherwise
    they are drawn in `box_colour` with optional `box_labels`.
  marker: (y, x) point marked with a cross (e.g. the chosen LSTM cell).
  vmin, vmax: colour range (default: the map's min and max); cmap; colorbar_label.
  note: text written in the panel (e.g. why a map is missing).
  """
  title: str
  heatmap: np.ndarray | None = None
  extent: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
  contour: np.ndarray | None = None
  boxes: np.ndarray | None = None
  box_labels: Sequence[str] | None = None
  ranked: bool = False
  box_colour: str = '#00ff00'
  marker: tuple[float, float] | None = None
  vmin: float | None = None
  vmax: float | None = None
  cmap: str = 'jet'
  alpha: float = 0.5
  colorbar_label: str = ''
  note: str = ''


def grid_shape(num_cells: int, image_hw: tuple[int, int]) -> tuple[int, int]:
  """(h, w) with h * w = num_cells whose aspect ratio is closest to the image's (for maps that a
  model returns flattened over locations, e.g. a3m's region attention)."""
  aspect = image_hw[0] / image_hw[1]
  best = min((abs(math.log((h / (num_cells // h)) / aspect)), h)
             for h in range(1, num_cells + 1) if num_cells % h == 0)[1]
  return best, num_cells // best


def normalised_boxes(boxes_px: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
  """Pixel-edge boxes (y0, x0, y1, x1) in an image of image_hw -> normalised boxes."""
  h, w = image_hw
  return np.asarray(boxes_px, np.float64) / np.asarray([h, w, h, w], np.float64)
