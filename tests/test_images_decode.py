"""One decoding rule everywhere (fgjax.images.to_rgb): EXIF orientation applied, alpha composited
over white as the dataset builders do, first frame, RGB uint8; the builders decode through the same
function; predict warns once per tiny image and still predicts it."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from fgjax import images as images_lib, predict
from fgjax.data.builders import common

ORIENTATION = 0x0112


def _encode(im, fmt='PNG', **kw):
  out = io.BytesIO()
  im.save(out, format=fmt, **kw)
  return out.getvalue()


def _with_orientation(array, orientation, fmt='PNG'):
  exif = Image.Exif()
  exif[ORIENTATION] = orientation
  return _encode(Image.fromarray(array), fmt, exif=exif)


def _pixels(h=5, w=7):
  return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _rgba():
  """Opaque blue left half, transparent red right half, random partial alpha in the middle."""
  rgba = np.zeros((6, 16, 4), np.uint8)
  rgba[:, :8] = (0, 0, 255, 255)
  rgba[:, 8:] = (255, 0, 0, 0)
  rgba[2:4, :, :3] = np.random.default_rng(1).integers(0, 256, (2, 16, 3))
  rgba[2:4, :, 3] = np.random.default_rng(2).integers(0, 256, (2, 16))
  return rgba


def _builder_compositing_before(rgba):
  """How the dataset builders composited alpha before decoding moved to one function (kept here
  as the reference the new function must reproduce exactly)."""
  im = Image.fromarray(rgba, 'RGBA')
  background = Image.new('RGB', im.size, (255, 255, 255))
  background.paste(im, mask=im.getchannel('A'))
  return np.asarray(background)


@pytest.mark.parametrize('orientation,upright', [
    (1, lambda a: a), (3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)),
    (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_is_applied(tmp_path, orientation, upright):
  stored = _pixels()
  path = tmp_path / f'o{orientation}.png'
  path.write_bytes(_with_orientation(stored, orientation))
  out = images_lib.read_image(str(path))
  np.testing.assert_array_equal(out, upright(stored))
  if orientation in (6, 8):
    assert out.shape == (7, 5, 3)  # stored 5 high, 7 wide; shown 7 high, 5 wide


def test_alpha_is_composited_over_white_as_the_builders_did(tmp_path):
  rgba = _rgba()
  path = tmp_path / 'a.png'
  Image.fromarray(rgba, 'RGBA').save(path)
  out = images_lib.read_image(str(path))
  np.testing.assert_array_equal(out, _builder_compositing_before(rgba))
  a = rgba[..., 3:].astype(np.float64) / 255.0
  over_white = rgba[..., :3] * a + 255.0 * (1.0 - a)
  assert np.abs(out - over_white).max() <= 1.0
  np.testing.assert_array_equal(out[0, 12], [255, 255, 255])  # transparent red -> white
  np.testing.assert_array_equal(out[0, 3], [0, 0, 255])


def test_first_frame_grey_and_16_bit(tmp_path):
  frames = [Image.fromarray(np.full((4, 6), v, np.uint8)).convert('P') for v in (10, 200)]
  frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:])
  out = images_lib.read_image(str(tmp_path / 'anim.gif'))
  assert out.shape == (4, 6, 3) and out.dtype == np.uint8
  assert np.all(out == out[0, 0]) and abs(int(out[0, 0, 0]) - 10) <= 2
  wide = np.array([[0, 257, 65535]], np.uint16)
  Image.fromarray(wide).save(tmp_path / 'w.png')
  np.testing.assert_array_equal(images_lib.read_image(str(tmp_path / 'w.png'))[..., 0],
                                [[0, 1, 255]])


def test_builders_decode_with_the_same_function(monkeypatch):
  """The builders' JPEG is the q95 encoding of what predict decodes from the same bytes."""
  rgba = _encode(Image.fromarray(_rgba(), 'RGBA'))
  rotated = _with_orientation(_pixels(20, 30), 6, 'JPEG')
  for data in (rgba, rotated):
    reader = common.ImageReader()
    stored, size = reader.read_sized('x', data)
    expected = images_lib.decode(data)
    assert size == expected.shape[:2]
    assert stored == _encode(Image.fromarray(expected), 'JPEG', quality=95)
  assert size == (30, 20)  # the rotated JPEG is stored upright
  assert 'EXIF orientation 6' in reader.report()['converted'][0]['reason']
  calls = []
  real = images_lib.to_rgb
  monkeypatch.setattr(images_lib, 'to_rgb', lambda im: calls.append(im.mode) or real(im))
  common.ImageReader().read('a.png', rgba)
  assert calls == ['RGBA']


def test_plain_rgb_still_passes_through_unchanged():
  data = _encode(Image.fromarray(_pixels(20, 30)), 'JPEG')
  assert common.ImageReader().read('ok.jpg', data) is data


def test_tiny_image_warning_threshold():
  assert images_lib.tiny_image_warning((1, 1, 3), (32, 32)).startswith(
      '1x1 image is smaller than 32 px')
  assert images_lib.tiny_image_warning((32, 40, 3), (32, 32)) is None
  assert images_lib.tiny_image_warning((31, 400, 3), (32, 32)) is not None
  assert images_lib.tiny_image_warning((50, 60, 3), (448, 448)) is not None  # below 448 / 8 = 56
  assert images_lib.tiny_image_warning((56, 60, 3), (448, 448)) is None


@pytest.fixture(scope='module')
def predictor(trained_workdir, one_device_mesh):
  return predict.load(trained_workdir('bcnn'), mesh=one_device_mesh, log=lambda m: None)


def test_predict_warns_once_per_tiny_image_and_predicts_it(predictor, tmp_path):
  tiny, normal = tmp_path / 'tiny.png', tmp_path / 'normal.png'
  Image.new('RGB', (1, 1), (200, 30, 30)).save(tiny)
  Image.fromarray(_pixels(40, 48)).save(normal)
  out, err = io.StringIO(), io.StringIO()
  summary = predict.run(predictor, [str(tiny), str(normal)], out=out, err=err)
  assert summary['predicted'] == 2 and summary['skipped'] == 0
  assert [json.loads(l)['path'] for l in out.getvalue().splitlines()] == [str(tiny), str(normal)]
  warnings = [l for l in err.getvalue().splitlines() if l.startswith('WARNING')]
  assert warnings == [l for l in warnings if l.startswith(f'WARNING {tiny}: 1x1 image is smaller')]
  assert len(warnings) == 1
