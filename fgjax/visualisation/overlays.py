"""Attention overlays: render what a method attends to over the image the model saw (PNG).

A method describes its maps as a list of `Panel`s (its `Method.attention_panels` hook, see
fgjax/methods/common.py); `render` draws the model input (after evaluation preprocessing) and
one axes per panel in a grid of at most `MAX_COLUMNS` columns, each cell `CELL_PX` pixels, so a
figure with P panels is exactly `figure_size_px(P)` pixels (no tight bounding box). Matplotlib's
constrained layout fits the title above the first row and every panel title, colour bar and its
labels inside the figure; panel titles and notes are wrapped to `TITLE_PX` (about the width of a
panel, since the layout does not make room for a title wider than its axes).

Coordinates: every panel coordinate is NORMALISED to the drawn model input, (y, x) order like the
datasets' `bbox`: boxes (y0, x0, y1, x1) in [0, 1] (they may extend past the image, e.g. the
padded NTS-Net anchors of focus_discriminate, and are drawn clipped by the axes), `extent` the
rectangle a heatmap covers (default: the whole input; activation_attention's scales 2..S attend
inside a crop), `marker` a point. A heatmap on an h x w feature grid is upsampled bilinearly (PIL,
half-pixel centres: cell i covers [i/h, (i+1)/h) of the extent) to the extent's size in pixels and
alpha-blended over the image with a colour bar.

Matplotlib is used through `matplotlib.figure.Figure` and the Agg canvas only: no pyplot, no global
figure state, safe in threads and in tests.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from fgjax.visualisation.panels import Panel

MAX_COLUMNS = 5
CELL_PX = (300, 260)  # (height, width) in pixels of one panel cell, title and colour bar included
DPI = 100
TITLE_PX = 180  # panel titles and notes are wrapped to this width (the axes are about 190 wide)
RANK_COLOURS = ('#e41a1c', '#ff7f00', '#ffff33', '#4daf4a', '#377eb8', '#984ea3', '#a65628',
                '#f781bf')  # rank 1 = red, 2 = orange, 3 = yellow, 4 = green, ...


def grid_layout(num_panels: int) -> tuple[int, int]:
  """(rows, columns) of the figure: the input image + `num_panels` maps."""
  cells = num_panels + 1
  cols = min(cells, MAX_COLUMNS)
  return math.ceil(cells / cols), cols


def figure_size_px(num_panels: int) -> tuple[int, int]:
  """(width, height) in pixels of the PNG for `num_panels` panels."""
  rows, cols = grid_layout(num_panels)
  return cols * CELL_PX[1], rows * CELL_PX[0]


def upsample(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear (PIL, half-pixel centres) resize of a 2-D float map to height x width."""
  m = np.asarray(heatmap, np.float32)
  if m.ndim != 2:
    raise ValueError(f'a heatmap must be 2-D (h, w), got shape {m.shape}')
  if m.shape == (height, width):
    return m
  return np.asarray(Image.fromarray(m, mode='F').resize((width, height), Image.BILINEAR))


def _wrap(text: str, width_px: float, fontsize: float) -> str:
  """`text` wrapped to lines that fit in `width_px` pixels at `fontsize` points (an average glyph
  is taken as 0.55 em wide)."""
  chars = max(8, int(width_px * 72 / DPI / (0.55 * fontsize)))
  return '\n'.join(textwrap.fill(line, chars) for line in text.split('\n'))


def _pixels(extent, hw):
  h, w = hw
  y0, x0, y1, x1 = extent
  return y0 * h, x0 * w, y1 * h, x1 * w


def _draw_panel(fig, ax, image: np.ndarray, panel: Panel) -> None:
  h, w = image.shape[:2]
  ax.imshow(image, extent=(0, w, h, 0), interpolation='nearest')
  ax.set_xlim(0, w)
  ax.set_ylim(h, 0)
  ax.set_xticks([])
  ax.set_yticks([])
  # Constrained layout leaves a title's width out of the margins: keep it within the axes.
  ax.set_title(_wrap(panel.title, TITLE_PX, 8), fontsize=8)
  py0, px0, py1, px1 = _pixels(panel.extent, (h, w))
  ext_h, ext_w = max(1, round(py1 - py0)), max(1, round(px1 - px0))
  if panel.heatmap is not None:
    m = upsample(panel.heatmap, ext_h, ext_w)
    vmin = float(np.min(panel.heatmap)) if panel.vmin is None else panel.vmin
    vmax = float(np.max(panel.heatmap)) if panel.vmax is None else panel.vmax
    if vmax <= vmin:
      vmax = vmin + 1e-6
    im = ax.imshow(m, extent=(px0, px1, py1, py0), cmap=panel.cmap, vmin=vmin, vmax=vmax,
                   alpha=panel.alpha, interpolation='nearest')
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cbar.ax.tick_params(labelsize=6)
    if panel.colorbar_label:
      cbar.set_label(panel.colorbar_label, fontsize=6)
  if panel.extent != (0.0, 0.0, 1.0, 1.0):
    ax.add_patch(Rectangle((px0, py0), px1 - px0, py1 - py0, fill=False, ec='white', lw=0.8,
                           ls='--'))
  if panel.contour is not None:
    c = np.asarray(panel.contour, np.float32)
    if c.min() < c.max():  # an empty or full mask has no outline
      # Nearest upsampling: the outline follows the borders of the mask's cells.
      c = np.asarray(Image.fromarray(c, mode='F').resize((ext_w, ext_h), Image.NEAREST))
      c = np.pad(c, 1)  # closed outlines at the extent's edges
      ys = py0 + (np.arange(ext_h + 2) - 0.5) * (py1 - py0) / ext_h
      xs = px0 + (np.arange(ext_w + 2) - 0.5) * (px1 - px0) / ext_w
      ax.contour(xs, ys, c, levels=[0.5], colors='white', linewidths=1.0)
  if panel.boxes is not None:
    handles = []
    for i, box in enumerate(np.asarray(panel.boxes, np.float64).reshape(-1, 4)):
      by0, bx0, by1, bx1 = _pixels(box, (h, w))
      colour = RANK_COLOURS[i % len(RANK_COLOURS)] if panel.ranked else panel.box_colour
      label = (f'rank {i + 1}' if panel.ranked else
               (panel.box_labels[i] if panel.box_labels else None))
      handles.append(ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False,
                                            ec=colour, lw=1.6, label=label)))
    if handles and (panel.ranked or panel.box_labels):
      ax.legend(handles=handles, fontsize=6, loc='lower center', bbox_to_anchor=(0.5, -0.22),
                ncol=min(4, len(handles)), frameon=False, handlelength=1.0)
  if panel.marker is not None:
    ax.plot([panel.marker[1] * w], [panel.marker[0] * h], marker='x', color='white', ms=8,
            mew=2.5)
    ax.plot([panel.marker[1] * w], [panel.marker[0] * h], marker='x', color='black', ms=6,
            mew=1.2)
  if panel.note:
    ax.text(0.5, 0.5, _wrap(panel.note, TITLE_PX, 7), transform=ax.transAxes,
            ha='center', va='center', fontsize=7,
            bbox={'facecolor': 'white', 'alpha': 0.8, 'edgecolor': 'none'})


def render(image: np.ndarray, panels: Sequence[Panel], title: str) -> Figure:
  """A Figure (Agg canvas attached) of the model input and one axes per panel."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'expected an (H, W, 3) image, got shape {image.shape}')
  rows, cols = grid_layout(len(panels))
  width, height = figure_size_px(len(panels))
  fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout='constrained')
  fig.get_layout_engine().set(w_pad=4 / 72, h_pad=4 / 72, wspace=0.06, hspace=0.06)
  FigureCanvasAgg(fig)
  fig.suptitle(_wrap(title, width - 20, 9), fontsize=9)
  ax = fig.add_subplot(rows, cols, 1)
  ax.imshow(image, interpolation='nearest')
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(f'model input {image.shape[0]}x{image.shape[1]}', fontsize=8)
  for i, panel in enumerate(panels):
    _draw_panel(fig, fig.add_subplot(rows, cols, i + 2), image, panel)
  return fig


def save(image: np.ndarray, panels: Sequence[Panel], title: str, path: str) -> None:
  """Render and write a PNG of exactly `figure_size_px(len(panels))` pixels."""
  fig = render(image, panels, title)
  fig.savefig(path, dpi=DPI, format='png')


def to_array(fig: Figure) -> np.ndarray:
  """(H, W, 4) uint8 RGBA pixels of a rendered figure."""
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba()).copy()
