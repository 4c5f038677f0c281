"""Weight files are read without ever executing code: formats, hostile files, clear errors."""

import os
import pickle

import numpy as np
import pytest

from fgjax import pretrained


def test_npz_roundtrip(tmp_path):
  path = tmp_path / 'w.npz'
  np.savez(path, **{'conv1.weight': np.ones((2, 3, 1, 1), np.float32), 'fc.bias': np.zeros(2)})
  tensors = pretrained.read_tensors(str(path))
  assert set(tensors) == {'conv1.weight', 'fc.bias'}
  assert tensors['conv1.weight'].shape == (2, 3, 1, 1)


def test_npz_with_pickled_objects_is_refused(tmp_path):
  path = tmp_path / 'evil.npz'
  np.savez(path, payload=np.asarray([{'a': 1}], dtype=object))
  with pytest.raises(ValueError, match='refusing a .npz that needs pickle'):
    pretrained.read_tensors(str(path))


class _Exploit:
  def __reduce__(self):
    return (os.system, ('touch EXPLOITED',))


def test_pth_with_code_is_never_executed(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / 'evil.pth'
  with open(path, 'wb') as f:
    pickle.dump({'conv1.weight': _Exploit()}, f)
  try:
    import torch  # noqa: F401  pylint: disable=unused-import,g-import-not-at-top
  except ImportError:
    with pytest.raises(ImportError, match='needs PyTorch'):
      pretrained.read_tensors(str(path))
  else:
    with pytest.raises(ValueError, match='weights_only'):
      pretrained.read_tensors(str(path))
  assert not (tmp_path / 'EXPLOITED').exists()


def test_unknown_format_and_missing_file(tmp_path):
  (tmp_path / 'w.h5').write_bytes(b'x')
  with pytest.raises(ValueError, match=r'expected .pth, .pt, .safetensors or .npz'):
    pretrained.read_tensors(str(tmp_path / 'w.h5'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    pretrained.read_tensors(str(tmp_path / 'nope.pth'))
  with pytest.raises(ValueError, match='unknown arch'):
    pretrained.load_source('alexnet', str(tmp_path / 'w.h5'))
  with pytest.raises(ValueError, match='MatConvNet .mat'):
    pretrained.load_source('vggm', str(tmp_path / 'w.h5'))


def test_wrong_shapes_are_refused_and_nothing_is_written(tmp_path):
  """A torchvision-named file whose tensor has the wrong shape: one error naming it, no output."""
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'parity'))
  import seeded_weights  # pylint: disable=g-import-not-at-top
  fixture = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures',
                         'torchvision_vgg16.npz')
  with np.load(fixture, allow_pickle=False) as f:
    state = seeded_weights.seeded_state_dict(f['names'], seeded_weights.unpad_shapes(f['shapes']),
                                             int(f['seed']))
  state['features.0.weight'] = state['features.0.weight'][:, :2]  # 2 input channels, not 3
  np.savez(tmp_path / 'vgg16.npz', **state)
  from fgjax.models.backbones.convert import ConversionError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConversionError, match=r'features\.0\.weight'):
    pretrained.convert('vgg16', str(tmp_path / 'vgg16.npz'), str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out' / 'weights')
