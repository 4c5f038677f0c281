"""PyTorch peer of `fgjax.models.spatial_lstm`: the same cells, as a PyTorch user would write them.

A Python loop over the H+W-1 anti-diagonals, every cell of a diagonal computed together (batched
matmuls over the diagonal's cells); the previous diagonal's states padded with the outside state at
both ends give the up and left predecessors by slicing; the outputs are concatenated and put back in
raster order by one index. The attentive cell attends over all H*W locations with the causal mask
(`masked_fill(-inf)`, softmax), as `AttentiveSpatialLSTM` is usually written. Parameters are the
fgjax ones (NumPy arrays of `model.init(...)['params']`), same layout and gate order (i, f_up,
f_left, o, g; `w_up`/`w_left` columns [i, f, o, g]), so both frameworks compute the same function:
`check_against_fgjax` compares them (run by `benchmarks.spatial_lstm` in every row against torch).

Needs torch (a benchmark-only extra, CPU build): `pip install torch==2.13.0` into a venv that also
has fgjax (`pip install -e .`); the project venv has no torch, and this module imports it lazily.
"""
from __future__ import annotations

import numpy as np


def _torch():
  import torch  # pylint: disable=import-outside-toplevel
  return torch


def diagonal_cells(height: int, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """(rows, cols) of each anti-diagonal d = i + j, rows ascending."""
  out = []
  for d in range(height + width - 1):
    rows = np.arange(max(0, d - width + 1), min(d, height - 1) + 1)
    out.append((rows, d - rows))
  return out


def spatial_lstm(gx, w_up, w_left, bias, *, output: str = 'paper', init=None, attention=None,
                 query: str = 'mean', mask=None):
  """Eq. (2) (and (3)-(4) with `attention`) on gate inputs gx (B, H, W, 5*hidden), torch tensors.

  attention: None, or (U (q, H*W), b (H*W,)): the cell input at (i,j) is sum_k L_k gx_k with L
  the softmax of U^T query + b over the locations that `mask` (H*W, H*W bool) allows for (i,j).
  init: (h0, c0), each (B, hidden), the state outside the grid (zeros if None).
  Returns h (B, H, W, hidden) and, with attention, L (B, H, W, H, W).
  """
  torch = _torch()
  n, height, width, g = gx.shape
  hid = g // 5
  h0, c0 = (gx.new_zeros(n, hid),) * 2 if init is None else init
  h0, c0 = h0[:, None], c0[:, None]                       # (B, 1, hid)
  flat = gx.reshape(n, height * width, g)
  hs, atts, order = [], [], []
  h_prev = c_prev = None
  first_prev = 0
  for rows, cols in diagonal_cells(height, width):
    idx = torch.as_tensor(rows * width + cols)
    order.append(idx)
    length, first = len(rows), int(rows[0])
    if h_prev is None:
      h_up = h_left = h0.expand(n, length, hid)
      c_up = c_left = c0.expand(n, length, hid)
    else:  # padded[k] is the previous diagonal's row first_prev - 1 + k
      ph, pc = torch.cat([h0, h_prev, h0], 1), torch.cat([c0, c_prev, c0], 1)
      a = first - first_prev
      h_up, c_up = ph[:, a:a + length], pc[:, a:a + length]
      h_left, c_left = ph[:, a + 1:a + 1 + length], pc[:, a + 1:a + 1 + length]
    ui, uf, uo, ug = (h_up @ w_up).chunk(4, -1)
    li, lf, lo, lg = (h_left @ w_left).chunk(4, -1)
    if attention is None:
      x = flat[:, idx]
    else:
      u_mat, u_bias = attention
      q = {'mean': lambda: 0.5 * (h_up + h_left), 'up': lambda: h_up, 'left': lambda: h_left,
           'concat': lambda: torch.cat([h_up, h_left], -1)}[query]()
      logits = (q @ u_mat + u_bias).masked_fill(~mask[idx][None], float('-inf'))
      att = torch.softmax(logits, -1)                     # (B, L, H*W)
      atts.append(att)
      x = att @ flat                                      # (B, L, 5*hid)
    xi, xfu, xfl, xo, xg = (x + bias).chunk(5, -1)
    i_g, f_up = torch.sigmoid(xi + ui + li), torch.sigmoid(xfu + uf)
    f_left = torch.sigmoid(xfl + lf)
    o_g, g_g = torch.sigmoid(xo + uo + lo), torch.tanh(xg + ug + lg)
    c = g_g * i_g + c_left * f_left + c_up * f_up
    h = torch.tanh(c * o_g) if output == 'paper' else o_g * torch.tanh(c)
    hs.append(h)
    h_prev, c_prev, first_prev = h, c, first
  inverse = torch.argsort(torch.cat(order))
  h = torch.cat(hs, 1)[:, inverse].reshape(n, height, width, hid)
  if attention is None:
    return h
  return h, torch.cat(atts, 1)[:, inverse].reshape(n, height, width, height, width)


def tensors(params: dict, x: np.ndarray, attention: bool, window: int | None = None):
  """fgjax params (nested dict of arrays) and input -> dict of float32 torch leaf tensors that
  require grad (x, w_up, w_left, bias; plain: the input `kernel` (D, 5h); attentive: U `u`, its
  bias `ub`) and, attentive, the causal `mask` (H*W, H*W) (window: see AttentiveSpatialLSTM)."""
  torch = _torch()
  t = lambda a: torch.tensor(np.asarray(a, np.float32), requires_grad=True)
  out = {'x': t(x), 'w_up': t(params['w_up']), 'w_left': t(params['w_left']),
         'bias': t(params['bias'])}
  if attention:
    out.update(u=t(params['attention_kernel']), ub=t(params['attention_bias']))
    from fgjax.models.spatial_lstm import attention_mask  # pylint: disable=import-outside-toplevel
    out['mask'] = torch.as_tensor(attention_mask(*x.shape[1:3], window))
  else:
    out.update(kernel=t(params['input']['kernel']))
  return out


def forward(ts: dict, attention: bool, output: str = 'paper'):
  """The peer's forward on `tensors(...)`: h, or (h, L) with attention."""
  if not attention:
    gx = ts['x'] @ ts['kernel']
    return spatial_lstm(gx, ts['w_up'], ts['w_left'], ts['bias'], output=output)
  return spatial_lstm(ts['x'], ts['w_up'], ts['w_left'], ts['bias'], output=output,
                      attention=(ts['u'], ts['ub']), mask=ts['mask'])


def loss(out, attention: bool):
  """The benchmark's loss: mean(h) (+ mean(L**2) with attention), as in benchmarks.spatial_lstm."""
  return out[0].mean() + (out[1] ** 2).mean() if attention else out.mean()


def check_against_fgjax(fgjax_out, params: dict, x: np.ndarray, attention: bool,
                        window: int | None = None) -> dict:
  """Max |fgjax - torch| of h (and L) on the same parameters and input; float32 both sides."""
  torch = _torch()
  with torch.no_grad():
    out = forward(tensors(params, x, attention, window), attention)
  outs = out if attention else (out,)
  fg = fgjax_out if attention else (fgjax_out,)
  diffs = [float(np.max(np.abs(np.asarray(a, np.float64) - b.numpy().astype(np.float64))))
           for a, b in zip(fg, outs)]
  return {'max_abs_diff_h': diffs[0], **({'max_abs_diff_attention': diffs[1]} if attention else {})}
