"""Bad image files are converted to RGB or skipped, and every case is listed; missing files are named."""

import io

import numpy as np
import pytest
from PIL import Image

from fgjax.data.builders import common


def _encode(im, fmt, **kw):
  out = io.BytesIO()
  im.save(out, format=fmt, **kw)
  return out.getvalue()


def _decode(data):
  return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture
def rgb():
  return Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))


def test_good_rgb_jpeg_passes_through_unchanged(rgb):
  reader = common.ImageReader()
  data = _encode(rgb, 'JPEG')
  assert reader.read('ok.jpg', data) is data
  assert reader.report()['num_converted'] == reader.report()['num_skipped'] == 0


def test_conversions(rgb):
  reader = common.ImageReader()
  gray = reader.read('gray.jpg', _encode(rgb.convert('L'), 'JPEG'))
  cmyk = reader.read('cmyk.jpg', _encode(rgb.convert('CMYK'), 'JPEG'))
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[:, :8] = (0, 0, 255, 255)  # left half opaque blue, right half transparent red
  rgba[:, 8:] = (255, 0, 0, 0)
  rgba = Image.fromarray(rgba, 'RGBA')
  alpha = reader.read('alpha.png', _encode(rgba, 'PNG'))
  for data in (gray, cmyk, alpha):
    arr = _decode(data)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
  assert _decode(gray).shape[:2] == (20, 30)
  a = _decode(alpha).astype(int)
  assert np.all(np.abs(a[8, 2] - [0, 0, 255]) < 30)  # opaque pixels kept
  assert np.all(a[8, 13] > 225)  # transparent pixels composited over white (not red)
  report = reader.report()
  assert report['num_converted'] == 3 and report['num_skipped'] == 0
  assert [c['file'] for c in report['converted']] == ['gray.jpg', 'cmyk.jpg', 'alpha.png']
  assert 'CMYK -> RGB' in report['converted'][1]['reason']


def test_skips(rgb, tmp_path):
  reader = common.ImageReader()
  jpeg = _encode(rgb, 'JPEG')
  (tmp_path / 'empty.jpg').write_bytes(b'')
  assert reader.read(str(tmp_path / 'empty.jpg')) is None
  assert reader.read('truncated.jpg', jpeg[:len(jpeg) // 2]) is None
  assert reader.read('corrupt.jpg', b'\xff\xd8 not a jpeg at all') is None
  assert reader.read('tiny.png', _encode(Image.new('RGB', (1, 1)), 'PNG')) is None
  report = reader.report()
  assert report['num_skipped'] == 4 and report['num_converted'] == 0
  reasons = {s['file'].split('/')[-1]: s['reason'] for s in report['skipped']}
  assert reasons['empty.jpg'] == 'zero-byte file'
  assert reasons['truncated.jpg'].startswith('unreadable')
  assert reasons['corrupt.jpg'].startswith('unreadable')
  assert reasons['tiny.png'] == '1x1 pixels'


def test_missing_files_are_named_with_where_to_get_them(tmp_path):
  (tmp_path / 'present.txt').write_text('x')
  files = [common.Required('present.txt', 'here'),
           common.Required('CUB_200_2011/images.txt', 'from CUB_200_2011.tgz (Caltech)')]
  with pytest.raises(common.MissingFiles) as info:
    common.require(str(tmp_path), files, 'cub2011')
  msg = str(info.value)
  assert 'CUB_200_2011/images.txt  <- from CUB_200_2011.tgz (Caltech)' in msg
  assert 'present.txt' not in msg and msg.startswith('cub2011: missing files')
