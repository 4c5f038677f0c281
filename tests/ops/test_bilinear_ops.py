"""Parity of fgjax.ops.bilinear with a float64 NumPy loop oracle and with two public B-CNN heads.

Tolerances:
- Against the float64 loop oracle, on float32 inputs: `rtol=1e-5, atol=1e-6`. The float32 result
  of a sum of L <= 42 products of N(0,1) values has a rounding error of about sqrt(L) * 6e-8 of the
  summed magnitudes (bounded by L * 6e-8 = 2.5e-6 relative), far below the tolerance; atol covers
  entries that nearly cancel. Observed: below 1e-6 relative.
- Against tests/fixtures/bcnn_heads.npz (cvl-umass and HaoMood heads, see the README of
  ../shared/reference): its stated tolerances, `bilinear`/`normalized` rtol 1e-5 atol 1e-6, `sqrt`
  rtol 1e-5 atol 1e-5 (slope ~158 of sqrt(z + 1e-5) near 0). Observed: 3.6e-7 max abs.
"""
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.ops import bilinear as bops

FIXTURE = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'bcnn_heads.npz')
RTOL, ATOL = 1e-5, 1e-6


# ----------------------------------------------------------------------------- float64 loop oracle
def oracle_pool(a, b, r0=0, r1=None, c0=0, c1=None):
  """sum over locations of the outer product, divided by the number of locations (explicit loops)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  n_, h_, w_, ca = a.shape
  cb = b.shape[3]
  r1 = h_ if r1 is None else r1
  c1 = w_ if c1 is None else c1
  z = np.zeros((n_, ca, cb))
  for n in range(n_):
    for h in range(r0, r1):
      for w in range(c0, c1):
        for i in range(ca):
          for j in range(cb):
            z[n, i, j] += a[n, h, w, i] * b[n, h, w, j]
  return z / ((r1 - r0) * (c1 - c0))


def oracle_spp(a, b, levels=(1, 2)):
  h_, w_ = a.shape[1:3]
  out = []
  for lvl in levels:
    for r in range(lvl):
      for c in range(lvl):
        out.append(oracle_pool(a, b, r * h_ // lvl, (r + 1) * h_ // lvl,
                               c * w_ // lvl, (c + 1) * w_ // lvl))
  return np.stack(out, axis=1)


def oracle_sqrt(x, variant, eps):
  x = np.asarray(x, np.float64)
  out = np.empty_like(x)
  for idx, v in np.ndenumerate(x):
    v = float(v)
    if variant == 'sign':
      out[idx] = ((v > 0) - (v < 0)) * math.sqrt(abs(v) + eps)
    elif variant == 'cvl_umass':
      out[idx] = math.sqrt(max(v, 0.0) + eps) - math.sqrt(max(-v, 0.0) + eps)
    else:
      out[idx] = math.sqrt(v + eps) if v + eps >= 0 else math.nan
  return out


def oracle_l2(x, eps=1e-12):
  x = np.asarray(x, np.float64)
  out = np.empty_like(x)
  for n in range(x.shape[0]):
    s = 0.0
    for v in x[n]:
      s += v * v
    out[n] = x[n] / max(math.sqrt(s), eps)
  return out


def _rand(seed, *shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- crop
def test_crop_to_common_28_vs_27():
  a, b = _rand(0, 2, 28, 28, 3), _rand(1, 2, 27, 27, 2)
  ac, bc = bops.crop_to_common(a, b)
  assert ac.shape == (2, 27, 27, 3) and bc.shape == (2, 27, 27, 2)
  np.testing.assert_array_equal(ac, a[:, :27, :27])  # last row and column dropped
  np.testing.assert_array_equal(bc, b)
  # Each axis independently: 28x26 vs 27x30 -> 27x26.
  ac, bc = bops.crop_to_common(_rand(2, 1, 28, 26, 1), _rand(3, 1, 27, 30, 1))
  assert ac.shape[1:3] == bc.shape[1:3] == (27, 26)


# ----------------------------------------------------------------------------- pooling
@pytest.mark.parametrize('hw', [(4, 4), (5, 5), (7, 6)])
@pytest.mark.parametrize('sym', [True, False])
def test_bilinear_pool_matches_loop_oracle(hw, sym):
  a = _rand(10, 2, *hw, 5)
  b = None if sym else _rand(11, 2, *hw, 4)
  z = jax.jit(bops.bilinear_pool)(a, b)
  assert z.dtype == jnp.float32 and z.shape == (2, 5, 5 if sym else 4)
  np.testing.assert_allclose(z, oracle_pool(a, a if sym else b), rtol=RTOL, atol=ATOL)


def test_spp_cells_split_odd_grids():
  assert bops.spp_cells(5, 5, (1, 2)) == [
      (0, 5, 0, 5), (0, 2, 0, 2), (0, 2, 2, 5), (2, 5, 0, 2), (2, 5, 2, 5)]
  assert bops.spp_cells(27, 27, (2,))[0] == (0, 13, 0, 13)
  with pytest.raises(ValueError):
    bops.spp_cells(1, 4, (2,))


@pytest.mark.parametrize('hw', [(6, 6), (5, 5), (7, 6)])
@pytest.mark.parametrize('sym', [True, False])
def test_spp_matches_loop_oracle(hw, sym):
  a = _rand(20, 2, *hw, 5)
  b = None if sym else _rand(21, 2, *hw, 3)
  z = jax.jit(bops.spp_bilinear_pool)(a, b)
  bb = a if sym else b
  assert z.dtype == jnp.float32 and z.shape == (2, 5, 5, bb.shape[-1])
  np.testing.assert_allclose(z, oracle_spp(a, bb), rtol=RTOL, atol=ATOL)
  # Level 1 is the plain pool; the level-2 cells partition the grid (count-weighted mean = level 1).
  np.testing.assert_allclose(z[:, 0], bops.bilinear_pool(a, b), rtol=RTOL, atol=ATOL)
  counts = np.array([(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in bops.spp_cells(*hw, (2,))])
  np.testing.assert_allclose(np.einsum('p,npij->nij', counts, np.asarray(z[:, 1:])) / counts.sum(),
                             z[:, 0], rtol=1e-5, atol=1e-6)


def _max_hlo_elements(fn, *args):
  """Largest array (in elements) in the optimised HLO of jit(fn)."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  sizes = [math.prod(int(d) for d in dims.split(',') if d) for dims in
           re.findall(r'(?:f32|bf16|f64)\[([\d,]*)\]', text)]
  return max(sizes)


@pytest.mark.parametrize('fn', [bops.bilinear_pool, bops.spp_bilinear_pool])
def test_no_per_location_outer_products(fn):
  a, b = _rand(30, 2, 7, 6, 5), _rand(31, 2, 7, 6, 4)
  # An (N, H, W, Ca, Cb) tensor would have 2*42*20 = 1680 elements; inputs have 420, SPP output 200.
  assert _max_hlo_elements(fn, a, b) < 2 * 7 * 6 * 5 * 4


def test_bf16_inputs_pool_in_float32():
  a, b = _rand(40, 2, 7, 6, 8), _rand(41, 2, 7, 6, 6)
  a16, b16 = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
  for fn in (bops.bilinear_pool, bops.spp_bilinear_pool):
    z16 = jax.jit(fn)(a16, b16)
    assert z16.dtype == jnp.float32
    # Float32 accumulation: exact up to float32 rounding on the bf16-rounded inputs ...
    ref16 = (oracle_pool if fn is bops.bilinear_pool else oracle_spp)(
        np.asarray(a16, np.float32), np.asarray(b16, np.float32))
    np.testing.assert_allclose(z16, ref16, rtol=RTOL, atol=ATOL)
    # ... and close to the float32-input result (bf16 input rounding, 2^-9 relative per factor).
    z32 = fn(a, b)
    assert np.abs(z16 - z32).max() <= 1e-2 * np.abs(z32).max()


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize('variant', bops.SQRT_VARIANTS)
@pytest.mark.parametrize('eps', [1e-5, 0.0])
def test_signed_sqrt_matches_oracle(variant, eps):
  x = np.concatenate([_rand(50, 64) * 3, [0.0, 1e-7, -1e-7, 1e-3, -1e-3, 40.0, -40.0]]).astype(np.float32)
  got = jax.jit(bops.signed_sqrt, static_argnums=(1, 2))(x, variant, eps)
  want = oracle_sqrt(x, variant, eps)
  if variant == 'haomood':  # no sign handling: NaN below -eps, as in HaoMood's code
    assert np.array_equal(np.isnan(got), x + eps < 0)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)


def test_signed_sqrt_unknown_variant_lists_valid():
  with pytest.raises(ValueError, match='bogus') as err:
    bops.signed_sqrt(jnp.ones(3), 'bogus')
  for v in bops.SQRT_VARIANTS:
    assert v in str(err.value)


def test_l2_normalize_matches_oracle():
  x = _rand(60, 3, 17)
  x[2] = 0.0
  got = bops.l2_normalize(x)
  np.testing.assert_allclose(got, oracle_l2(x), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(np.linalg.norm(got[:2], axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(got[2], 0.0)
  np.testing.assert_allclose(bops.l2_normalize(x.T, axis=0), oracle_l2(x).T, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('variant', bops.SQRT_VARIANTS)
@pytest.mark.parametrize('eps', [1e-5, 0.0])
def test_gradients_finite_at_zero(variant, eps):
  x = jnp.array([0.0, 0.0, 0.5, 2.0])
  g = jax.grad(lambda x: bops.signed_sqrt(x, variant, eps).sum())(x)
  assert np.all(np.isfinite(g)), g
  g = jax.grad(lambda x: bops.l2_normalize(bops.signed_sqrt(x, variant, eps)[None])[0, 2])(x * 0)
  assert np.all(np.isfinite(g)), g


# ----------------------------------------------------------------------------- public heads
CASES = {  # name: (stream a, stream b or None, sqrt variant, key of the sqrt output)
    'cvl_sym': ('x_a_nhwc', None, 'cvl_umass', 'signed_sqrt'),
    'cvl_asym': ('x_a_nhwc', 'x_b_nhwc', 'cvl_umass', 'signed_sqrt'),
    'cvl_asym_signed': ('x_a_signed_nhwc', 'x_b_signed_nhwc', 'cvl_umass', 'signed_sqrt'),
    'hao_sym': ('x_a_nhwc', None, 'haomood', 'sqrt'),
}


@pytest.fixture(scope='module')
def heads():
  with np.load(FIXTURE) as d:
    return {k: d[k] for k in d.files}


@pytest.mark.parametrize('case', sorted(CASES))
def test_public_head_parity(heads, case):
  ka, kb, variant, sqrt_key = CASES[case]
  a, b = heads[ka], (None if kb is None else heads[kb])
  eps, l2_eps = float(heads['config/eps_sqrt']), float(heads['config/eps_normalize'])
  z = jax.jit(bops.bilinear_pool)(a, b)
  np.testing.assert_allclose(z, heads[f'{case}/bilinear'], rtol=1e-5, atol=1e-6)
  s = bops.signed_sqrt(bops.flatten_bilinear(heads[f'{case}/bilinear']), variant, eps)
  np.testing.assert_allclose(s, heads[f'{case}/{sqrt_key}'], rtol=1e-5, atol=1e-5)
  y = bops.l2_normalize(heads[f'{case}/{sqrt_key}'], eps=l2_eps)
  np.testing.assert_allclose(y, heads[f'{case}/normalized'], rtol=1e-5, atol=1e-6)
  f = jax.jit(lambda a, b: bops.bilinear_features(a, b, sqrt_variant=variant, sqrt_eps=eps,
                                                  l2_eps=l2_eps))(a, b)
  np.testing.assert_allclose(f, heads[f'{case}/normalized'], rtol=1e-5, atol=1e-6)


def test_bilinear_features_crops_and_spp():
  a, b = _rand(70, 2, 7, 7, 3), _rand(71, 2, 6, 6, 2)
  f = bops.bilinear_features(a, b, spp_levels=(1, 2), sqrt_variant='cvl_umass')
  z = oracle_spp(a[:, :6, :6], b).reshape(2, -1)
  np.testing.assert_allclose(f, oracle_l2(oracle_sqrt(z, 'cvl_umass', 1e-5)), rtol=RTOL, atol=ATOL)
