"""NTS-Net default anchors: exact parity with tests/fixtures/nts_anchors_nms.npz (outputs of
NTS-Net's own code)."""

import pathlib

import numpy as np
import pytest

from fgjax.ops.anchors import nts_default_anchors, padded_integer_boxes

FIXTURE = pathlib.Path(__file__).parents[1] / 'fixtures' / 'nts_anchors_nms.npz'


@pytest.fixture(scope='module')
def ref():
  return np.load(FIXTURE)


def test_anchors_equal_nts_reference(ref):
  center, edge = nts_default_anchors(448)
  assert center.shape == edge.shape == (1614, 4)
  # The reference values are NTS-Net's float32 numbers widened to float64: equal, not just close.
  np.testing.assert_array_equal(center.astype(np.float64), ref['center_anchors'])
  np.testing.assert_array_equal(edge.astype(np.float64), ref['edge_anchors'])
  np.testing.assert_array_equal(padded_integer_boxes(edge, 224), ref['padded_edge_anchors'])


def test_proportional_geometry_is_the_448_set_scaled():
  """geometry_scale = input/448: same count, every coordinate scaled (to float32 rounding)."""
  c448, e448 = nts_default_anchors(448)
  c64, e64 = nts_default_anchors(64, geometry_scale=64 / 448)
  assert c64.shape == (1614, 4)
  np.testing.assert_allclose(e64, e448 * (64 / 448), rtol=0, atol=1e-4)
  np.testing.assert_allclose(c64, c448 * (64 / 448), rtol=0, atol=1e-4)
  assert padded_integer_boxes(e64, 32).min() >= 0


def test_native_nts_scaling_keeps_pixels_and_grows_grid():
  """geometry_scale=1 at another size: NTS-Net's INPUT_SIZE behaviour (ceil(input/stride) grid)."""
  c, _ = nts_default_anchors((224, 320))
  n = 0
  for stride, per in ((32, 6), (64, 6), (128, 9)):
    n += per * -(-224 // stride) * -(-320 // stride)
  assert c.shape == (n, 4)
  np.testing.assert_array_equal(c[0], np.float32([16, 16, 48 * 2 ** (1 / 3) / 0.667 ** 0.5,
                                                  48 * 2 ** (1 / 3) * 0.667 ** 0.5]))


def test_pad_too_small_is_an_error():
  _, e = nts_default_anchors(448)
  with pytest.raises(ValueError, match='pad'):
    padded_integer_boxes(e, 100)
