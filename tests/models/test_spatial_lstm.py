"""Spatial LSTM (fgjax.models.spatial_lstm): parity with a float64 NumPy raster-order oracle of
Wu & Wang 2017 eq. (2)-(4), causality by gradients, wavefront == per-cell scan, shapes and dtypes.

The oracle is written from the paper's equations, not from the module: loops over i, j in raster
order, one gate at a time with its own weight blocks (the paper's W_x*, W_h*^l acting on h_{i-1,j}
and W_h*^r on h_{i,j-1}; f^l only sees h_{i-1,j}, f^r only h_{i,j-1}), an explicit masked softmax
over the causal rectangle (or window), and, for attention, the attended bilinear matrix
I_ij = sum_uv L_uv a_uv b_uv^T formed explicitly and then projected by W_x (so the test also checks
that the module's "project first, attend after" equals the paper's order).

Tolerance: float32 module vs float64 oracle, `rtol=1e-5, atol=2e-6`. States are bounded by 1
(tanh, sigmoid); each gate sums a few dozen float32 products (relative rounding ~ sqrt(L)*6e-8)
and the recurrence carries errors over at most H+W-1 = 6 steps. Observed (all grids here and a
6x7 grid, both outputs, with init, attention full and window 1): max abs error 2.3e-7 for h of the
plain cell, 2.8e-7 for h and 1.1e-7 for L of the attentive cell.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.models import spatial_lstm as sl

KEY = jax.random.key(0, impl='rbg')
RTOL, ATOL = 1e-5, 2e-6
GRIDS = [(3, 4), (4, 3), (1, 5), (5, 1), (2, 2)]
HID = 3


# ----------------------------------------------------------------------------- float64 oracle
def _sig(z):
  return 1.0 / (1.0 + np.exp(-z))


def oracle(params, inputs, output='paper', init=None, query='mean', window=None, att_params=None,
           region='causal'):
  """Raster-order eq. (2)-(4) in float64.

  inputs: ('x', x (N,H,W,D), W_x (D, 5h)) for the plain cell, or ('bilinear', a, b, W (Ca,Cb,5h))
  for the attentive cell (I_ij formed explicitly). att_params: (U (q, H*W), bU) or None.
  region: 'causal' (u <= i, v <= j) or 'grid' (every location); window: at most that many rows /
  columns away (back, or either side). Returns h (N,H,W,h) and, with attention, L (N,H,W,H,W).
  """
  f64 = lambda t: np.asarray(t, np.float64)
  hid = params['w_up'].shape[0]
  wu_i, wu_f, wu_o, wu_g = np.split(f64(params['w_up']), 4, axis=1)      # W_h*^l, on h_{i-1,j}
  wl_i, wl_f, wl_o, wl_g = np.split(f64(params['w_left']), 4, axis=1)    # W_h*^r, on h_{i,j-1}
  b_i, b_fu, b_fl, b_o, b_g = np.split(f64(params['bias']), 5)
  kind, *arrs = inputs
  arrs = [f64(t) for t in arrs]
  n_, height, width = arrs[0].shape[:3]
  h_out = np.zeros((n_, height, width, hid))
  l_out = np.zeros((n_, height, width, height, width))
  for n in range(n_):
    h = np.zeros((height, width, hid))
    c = np.zeros((height, width, hid))
    h0 = np.zeros(hid) if init is None else f64(init[0][n])
    c0 = np.zeros(hid) if init is None else f64(init[1][n])
    for i in range(height):
      for j in range(width):
        h_up, c_up = (h[i - 1, j], c[i - 1, j]) if i > 0 else (h0, c0)
        h_left, c_left = (h[i, j - 1], c[i, j - 1]) if j > 0 else (h0, c0)
        if kind == 'x':
          x, wx = arrs
          inp, w_in = x[n, i, j], wx
        else:
          a, b, w = arrs
          u_mat, u_bias = (f64(t) for t in att_params)
          q = {'mean': (h_up + h_left) / 2, 'up': h_up, 'left': h_left,
               'concat': np.concatenate([h_up, h_left])}[query]
          logits = (q @ u_mat + u_bias).reshape(height, width)
          if region == 'causal':
            seen = [(u, v) for u in range(i + 1) for v in range(j + 1)
                    if window is None or (i - u <= window and j - v <= window)]
          else:
            seen = [(u, v) for u in range(height) for v in range(width)
                    if window is None or (abs(i - u) <= window and abs(j - v) <= window)]
          top = max(logits[u, v] for u, v in seen)
          z = sum(np.exp(logits[u, v] - top) for u, v in seen)
          big_i = np.zeros((a.shape[-1], b.shape[-1]))
          for u, v in seen:
            l_out[n, i, j, u, v] = np.exp(logits[u, v] - top) / z
            big_i += l_out[n, i, j, u, v] * np.outer(a[n, u, v], b[n, u, v])
          inp, w_in = big_i.reshape(-1), w.reshape(-1, w.shape[-1])
        wx_i, wx_fu, wx_fl, wx_o, wx_g = np.split(w_in, 5, axis=1)
        gi = _sig(inp @ wx_i + h_left @ wl_i + h_up @ wu_i + b_i)
        f_up = _sig(inp @ wx_fu + h_up @ wu_f + b_fu)
        f_left = _sig(inp @ wx_fl + h_left @ wl_f + b_fl)
        o = _sig(inp @ wx_o + h_up @ wu_o + h_left @ wl_o + b_o)
        g = np.tanh(inp @ wx_g + h_up @ wu_g + h_left @ wl_g + b_g)
        c[i, j] = g * gi + c_left * f_left + c_up * f_up
        h[i, j] = np.tanh(c[i, j] * o) if output == 'paper' else o * np.tanh(c[i, j])
    h_out[n] = h
  return h_out, l_out


# ----------------------------------------------------------------------------- helpers
def _rand(shape, seed, scale=1.0):
  return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _randomize(variables, seed, scale=0.7):
  """Random non-zero weights everywhere (biases and attention included); shapes only are read."""
  leaves, tree = jax.tree.flatten(variables)
  return jax.tree.unflatten(tree, [_rand(l.shape, seed + k, scale) for k, l in enumerate(leaves)])


def _init_states(n, seed):
  return (jnp.tanh(_rand((n, HID), seed)), _rand((n, HID), seed + 1))


def _attentive_setup(grid, n=2, ca=3, cb=2, rank=None, seed=0, **kw):
  a, b = _rand((n, *grid, ca), seed), _rand((n, *grid, cb), seed + 1)
  gate = sl.BilinearGateInput(HID, rank=rank)
  gvars = _randomize(jax.eval_shape(gate.init, KEY, a, b), seed + 10, 0.5)
  lstm = sl.AttentiveSpatialLSTM(HID, **kw)
  lvars = _randomize(jax.eval_shape(lstm.init, KEY, gate.apply(gvars, a, b)), seed + 20)
  return a, b, gate, gvars, lstm, lvars


def _full_kernel(gparams):
  if 'kernel' in gparams:
    return gparams['kernel']
  return jnp.einsum('ak,bk,kg->abg', gparams['p'], gparams['q'], gparams['r'])


# ----------------------------------------------------------------------------- oracle parity
@pytest.mark.parametrize('grid', GRIDS)
@pytest.mark.parametrize('output,with_init',
                         [('paper', False), ('paper', True), ('standard', True)])
def test_oracle_plain(grid, output, with_init):
  n = 2
  x = _rand((n, *grid, 4), 0)
  model = sl.SpatialLSTM(HID, output=output)
  p = _randomize(jax.eval_shape(model.init, KEY, x), 1)['params']
  init = _init_states(n, 2) if with_init else None
  h = jax.jit(model.apply)({'params': p}, x, init)
  want, _ = oracle(p, ('x', x, p['input']['kernel']), output, init)
  assert h.shape == (n, *grid, HID) and h.dtype == jnp.float32
  np.testing.assert_allclose(h, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('grid', GRIDS)
@pytest.mark.parametrize('output,window,with_init', [
    ('paper', None, False), ('standard', None, True), ('paper', 1, True)])
def test_oracle_attentive(grid, output, window, with_init):
  a, b, gate, gvars, lstm, lvars = _attentive_setup(grid, output=output, window=window)
  init = _init_states(a.shape[0], 3) if with_init else None
  p = lvars['params']
  h, att = jax.jit(lambda a, b: lstm.apply(lvars, gate.apply(gvars, a, b), init))(a, b)
  want_h, want_l = oracle(p, ('bilinear', a, b, gvars['params']['kernel']), output, init,
                          window=window, att_params=(p['attention_kernel'], p['attention_bias']))
  np.testing.assert_allclose(att, want_l, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(h, want_h, rtol=RTOL, atol=ATOL)



@pytest.mark.parametrize('grid', GRIDS + [(4, 5)])
@pytest.mark.parametrize('window,with_init', [(None, True), (1, False)])
def test_oracle_attentive_whole_grid(grid, window, with_init):
  """region='grid': every cell attends over every location (or the window around it) and the
  recurrence is the raster-order one of the oracle: the hidden state of (i,j) is computed from
  (i-1,j) and (i,j-1) only, while its attended input mixes locations below and to the right."""
  a, b, gate, gvars, lstm, lvars = _attentive_setup(grid, window=window, region='grid')
  init = _init_states(a.shape[0], 3) if with_init else None
  p = lvars['params']
  h, att = jax.jit(lambda a, b: lstm.apply(lvars, gate.apply(gvars, a, b), init))(a, b)
  want_h, want_l = oracle(p, ('bilinear', a, b, gvars['params']['kernel']), 'paper', init,
                          window=window, region='grid',
                          att_params=(p['attention_kernel'], p['attention_bias']))
  np.testing.assert_allclose(att, want_l, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(h, want_h, rtol=RTOL, atol=ATOL)
  if window is None and min(grid) > 1:
    assert np.all(np.asarray(att) > 0)  # the top-left cell sees the bottom-right location too

@pytest.mark.parametrize('query,rank', [('up', None), ('left', 2), ('concat', 3), ('mean', 4)])
def test_oracle_queries_and_low_rank(query, rank):
  a, b, gate, gvars, lstm, lvars = _attentive_setup((3, 3), rank=rank, query=query, window=None)
  p = lvars['params']
  init = _init_states(a.shape[0], 4)
  h, att = jax.jit(lambda a, b: lstm.apply(lvars, gate.apply(gvars, a, b), init))(a, b)
  want_h, want_l = oracle(p, ('bilinear', a, b, _full_kernel(gvars['params'])), 'paper', init,
                          query=query, att_params=(p['attention_kernel'], p['attention_bias']))
  np.testing.assert_allclose(att, want_l, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(h, want_h, rtol=RTOL, atol=ATOL)


def test_gate_inputs_are_projected_outer_products():
  a, b = _rand((2, 3, 2, 4), 0), _rand((2, 3, 2, 3), 1)
  for rank in (None, 2):
    gate = sl.BilinearGateInput(5, rank=rank)
    gvars = gate.init(KEY, a, b)
    w = np.asarray(_full_kernel(gvars['params']), np.float64)
    outer = np.einsum('nhwa,nhwb->nhwab', np.asarray(a, np.float64), np.asarray(b, np.float64))
    want = outer.reshape(2, 3, 2, -1) @ w.reshape(-1, 25)
    np.testing.assert_allclose(gate.apply(gvars, a, b), want, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- causality
def _dependence(fn, x):
  """dep[u, v, i, j] = sum |d h[0,u,v,:] / d x[0,i,j,:]|, for one example."""
  jac = jax.jit(jax.jacrev(fn))(x)  # (1, H, W, hid, 1, H, W, D)
  return np.abs(np.asarray(jac)).sum(axis=(0, 3, 4, 7))


def _assert_causal(dep):
  height, width = dep.shape[:2]
  u, v, i, j = np.ix_(*(np.arange(s) for s in (height, width, height, width)))
  causal = np.broadcast_to((u >= i) & (v >= j), dep.shape)
  assert np.all(dep[~causal] == 0.0), 'h depends on an input outside its causal rectangle'
  assert dep[causal].min() > 1e-7, f'missing dependency: min {dep[causal].min()}'


@pytest.mark.parametrize('grid', [(3, 4), (4, 2)])
def test_causality_plain(grid):
  x = _rand((1, *grid, 3), 5)
  model = sl.SpatialLSTM(HID)
  v = _randomize(jax.eval_shape(model.init, KEY, x), 6)
  _assert_causal(_dependence(lambda x: model.apply(v, x), x))


@pytest.mark.parametrize('window', [None, 1])
def test_causality_attentive(window):
  """Through the attended gate inputs at (i,j) (only cells u >= i, v >= j attend there) and the
  recurrence, with the stream-a features as the input."""
  a, b, gate, gvars, lstm, lvars = _attentive_setup((3, 4), n=1, window=window)
  fn = lambda a: lstm.apply(lvars, gate.apply(gvars, a, b))[0]
  _assert_causal(_dependence(fn, a))


# ----------------------------------------------------------------------------- scans and structure
@pytest.mark.parametrize('grid,groups', [((4, 5), None), ((5, 3), None), ((1, 4), None),
                                         ((4, 1), None), ((4, 6), 3), ((6, 4), 4)])
def test_wavefront_equals_per_cell_scan_with_gradients(grid, groups):
  """Values and gradients (all parameters and the input) of both scans, plain and attentive
  (window 2, so the key span of later groups starts past key 0), with several scan groups."""
  x = _rand((2, *grid, 3), 7)
  init = _init_states(2, 8)
  g = _rand((2, *grid, 5 * HID), 9)
  cases = [(sl.SpatialLSTM, {}, x), (sl.AttentiveSpatialLSTM, {'window': 2}, g)]
  for cls, kw, inp in cases:
    v = _randomize(jax.eval_shape(cls(HID, **kw).init, KEY, inp), 10)

    def loss(v, inp, scan):
      out = cls(HID, scan=scan, scan_groups=groups, **kw).apply(v, inp, init)
      h = out[0] if isinstance(out, tuple) else out
      return jnp.sum(jnp.sin(3.0 * h)) + (jnp.sum(out[1] ** 2) if isinstance(out, tuple) else 0.0)

    vals = {s: jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(v, inp, s)
            for s in ('wavefront', 'per_cell')}
    assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(vals['wavefront']))
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-5),
                 vals['wavefront'], vals['per_cell'])



@pytest.mark.parametrize('grid,groups,window', [((4, 5), None, None), ((5, 3), 2, 1),
                                                ((3, 4), 3, None)])
def test_wavefront_equals_per_cell_scan_whole_grid(grid, groups, window):
  """region='grid': values and gradients of both scans agree, any number of scan groups."""
  init = _init_states(2, 8)
  g = _rand((2, *grid, 5 * HID), 9)
  kw = dict(window=window, region='grid')
  v = _randomize(jax.eval_shape(sl.AttentiveSpatialLSTM(HID, **kw).init, KEY, g), 10)

  def loss(v, inp, scan):
    h, att = sl.AttentiveSpatialLSTM(HID, scan=scan, scan_groups=groups, **kw).apply(v, inp, init)
    return jnp.sum(jnp.sin(3.0 * h)) + jnp.sum(att ** 2)

  vals = {s: jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(v, g, s)
          for s in ('wavefront', 'per_cell')}
  jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-5),
               vals['wavefront'], vals['per_cell'])

def test_attention_structure_and_window_zero_is_plain():
  x = _rand((2, 3, 4, 4), 11)
  plain = sl.SpatialLSTM(HID)
  pv = _randomize(jax.eval_shape(plain.init, KEY, x), 12)
  gx = x @ pv['params']['input']['kernel']
  for window in (None, 0, 1):
    att_model = sl.AttentiveSpatialLSTM(HID, window=window)
    av = _randomize(jax.eval_shape(att_model.init, KEY, gx), 13)
    av = {'params': {**av['params'], **{k: pv['params'][k] for k in ('w_up', 'w_left', 'bias')}}}
    h, att = att_model.apply(av, gx)
    assert h.shape == (2, 3, 4, HID) and att.shape == (2, 3, 4, 3, 4)
    np.testing.assert_allclose(att.sum(axis=(-2, -1)), 1.0, rtol=1e-6)
    mask = sl.attention_mask(3, 4, window).reshape(3, 4, 3, 4)
    assert np.all(np.asarray(att)[:, ~mask] == 0.0)
    assert np.all(np.asarray(att)[:, 0, 0, 0, 0] == 1.0)  # cell (0,0) attends only to itself
    if window == 0:
      np.testing.assert_allclose(h, plain.apply(pv, x), rtol=1e-6, atol=1e-6)


def test_wavefront_schedule_covers_grid_once():
  """Every cell in exactly one valid slot, on its anti-diagonal, rows (working rows: columns
  when H > W) consecutive within a step; `out` inverts the slot layout; groups <= asked."""
  for height, width in GRIDS + [(14, 14), (7, 3), (1, 1)]:
    for groups, attention in ((1, False), (2, True), (4, True), (3, False)):
      t = sl.wavefront_schedule(height, width, groups, attention)
      assert 1 <= len(t.groups) <= max(groups, 1)
      assert sum(g.cells.shape[0] for g in t.groups) == height + width - 1
      slots = np.concatenate([g.cells.reshape(-1) for g in t.groups])
      valid = np.concatenate([g.valid.reshape(-1) for g in t.groups])
      assert sorted(slots[valid].tolist()) == list(range(height * width))
      np.testing.assert_array_equal(slots[t.out], np.arange(height * width))
      assert valid[t.out].all()
      for g in t.groups:
        for s in range(g.cells.shape[0]):
          i, j = np.divmod(g.cells[s][g.valid[s]], width)
          assert np.all(i + j == g.first + s)
          rows = j if t.transposed else i
          np.testing.assert_array_equal(np.flatnonzero(g.valid[s]) + g.row0, rows)
      i, j = np.divmod(t.order, width)
      assert np.all(np.diff(i + j) >= 0) and sorted(t.order.tolist()) == list(range(height * width))


def test_take_gradient_is_a_gather_of_the_valid_entries():
  """`take` (custom transpose) against jnp.take's autodiff, with a repeated padded index whose
  entries are declared invalid (their cotangent dropped, as the scans guarantee it is zero)."""
  x = _rand((3, 5, 2), 19)
  idx = np.array([[4, 0, 0], [2, 1, 3]])
  valid = np.array([[True, True, False], [True, True, True]])
  w = _rand((3, 2, 3, 2), 20) * jnp.asarray(valid, jnp.float32)[None, :, :, None]
  got = jax.grad(lambda x: jnp.sum(w * sl.take(x, idx, 1, valid)))(x)
  want = jax.grad(lambda x: jnp.sum(w * jnp.take(x, idx, axis=1)))(x)
  np.testing.assert_allclose(sl.take(x, idx, 1, valid), jnp.take(x, idx, axis=1))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_bf16_compute_float32_params_and_outputs():
  x, gx = _rand((2, 4, 4, 6), 14), _rand((2, 4, 4, 40), 15)
  for cls, inp in ((sl.SpatialLSTM, x), (sl.AttentiveSpatialLSTM, gx)):
    abstract = jax.eval_shape(cls(8, dtype=jnp.bfloat16).init, KEY, inp)
    assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(abstract))
    v = _randomize(abstract, 16, 0.3)
    out = jax.jit(lambda v, inp: (cls(8, dtype=jnp.bfloat16).apply(v, inp),
                                  cls(8).apply(v, inp)))(v, inp)
    for bf, ref in zip(*(jax.tree.leaves(o) for o in out)):
      assert bf.dtype == jnp.float32 and bf.shape == ref.shape
      np.testing.assert_allclose(bf, ref, atol=3e-2)


def test_initial_state_and_errors():
  feats = _rand((2, 3, 4, 7), 16)
  init_mod = sl.InitialState(HID, layers=(5,))
  iv = init_mod.init(KEY, feats)
  h0, c0 = init_mod.apply(iv, feats)
  assert h0.shape == c0.shape == (2, HID) and h0.dtype == jnp.float32
  h0b, _ = init_mod.apply(iv, feats.mean(axis=(1, 2)))  # pooled input == map input
  np.testing.assert_allclose(h0, h0b, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='output'):
    jax.eval_shape(sl.SpatialLSTM(HID, output='nope').init, KEY, feats)
  with pytest.raises(ValueError, match='query'):
    jax.eval_shape(sl.AttentiveSpatialLSTM(HID, query='nope').init, KEY,
                   _rand((1, 2, 2, 5 * HID), 0))
  with pytest.raises(ValueError, match='scan_groups'):
    jax.eval_shape(sl.SpatialLSTM(HID, scan_groups=0).init, KEY, feats)
  with pytest.raises(ValueError, match='window'):
    jax.eval_shape(sl.AttentiveSpatialLSTM(HID, window=-1).init, KEY, _rand((1, 2, 2, 5 * HID), 0))
  with pytest.raises(ValueError, match='region'):
    jax.eval_shape(sl.AttentiveSpatialLSTM(HID, region='raster').init, KEY,
                   _rand((1, 2, 2, 5 * HID), 0))
  with pytest.raises(ValueError, match='gate_init'):
    jax.eval_shape(sl.BilinearGateInput(HID, gate_init='xavier').init, KEY, feats, feats)
  with pytest.raises(ValueError, match='5\\*hidden'):
    jax.eval_shape(sl.AttentiveSpatialLSTM(HID).init, KEY, _rand((1, 2, 2, 4), 0))
