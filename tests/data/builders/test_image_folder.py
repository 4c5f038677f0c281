"""image_folder builder: a user's folder of class subfolders (+ annotations.csv), built, split,
read back, and trained on through `python -m fgjax.train`.

Every expected value below is written by hand from the files this test writes (label order,
box fractions, per-class test counts), or read back from those files with PIL.
"""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from fgjax.data import datasets
from fgjax.data.builders import image_folder
from fgjax.default_config import ConfigError
from fgjax.evaluation import protocols
from fgjax import methods
from fgjax.methods import a3m
import builder_testing  # tests/data/builders/builder_testing.py (same directory)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
# Written in this order; labels are the sorted names (Python order: upper case first).
GOOD = {'zebra': ['z0.png', 'z1.jpg', 'z2.png', 'z3.jpg'],
        'Apple': ['a0.jpg', 'a1.png', 'a2.jpg', 'a3.png', 'a4.jpg'],
        'mango': ['m0.png', 'm1.jpg', 'm2.png', 'm3.jpg', 'm4.png', 'sub/m5.jpg']}
LABEL_NAMES = ['Apple', 'mango', 'zebra']
BAD = {'Apple/broken.jpg': 'truncated JPEG', 'mango/fake.png': 'text named .png'}
SIZES = {'mango/m4.png': (48, 40)}  # (H, W); every other image is 40 x 48
# annotations.csv boxes (y_min, x_min, y_max, x_max px) -> expected bbox fractions, by hand.
BOXES = {'Apple/a0.jpg': ('4', '6', '36', '42', [0.1, 0.125, 0.9, 0.875]),
         'mango/m4.png': ('12', '10', '36', '30', [0.25, 0.25, 0.75, 0.75]),  # 48 x 40 image
         'zebra/z1.jpg': ('-4', '24', '20', '60', [0.0, 0.5, 0.5, 1.0]),  # clipped
         'zebra/z2.png': ('', '', '', '', [0.0, 0.0, 1.0, 1.0])}  # empty: the whole image
DEFAULT_BOX = ('0', '0', '20', '24', [0.0, 0.0, 0.5, 0.5])


def _files(good=GOOD):
  return sorted([f'{c}/{f}' for c, fs in good.items() for f in fs] + list(BAD))


def _annotation(k: int, file: str) -> dict:
  """The CSV values of the k-th file (sorted order): identity 100 + k, camera k % 3, attr_color
  k % 3, attr_size k % 2 (empty for Apple/a1.png: unknown)."""
  return {'identity': 100 + k, 'camera': k % 3, 'color': k % 3,
          'size': -1 if file == 'Apple/a1.png' else k % 2}


def write_images(root, good=GOOD, bad=True, seed=0):
  rng = np.random.default_rng(seed)
  for c, files in good.items():
    for f in files:
      path = os.path.join(root, c, f)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      h, w = SIZES.get(f'{c}/{f}', (40, 48))
      image = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
      image.save(path) if f.endswith('.png') else open(path, 'wb').write(
          builder_testing.jpeg(image))
  if bad:
    path = os.path.join(root, 'Apple', 'broken.jpg')
    with open(path, 'wb') as f:
      f.write(builder_testing.jpeg(Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8))))
    builder_testing.truncate(path)
    with open(os.path.join(root, 'mango', 'fake.png'), 'w') as f:
      f.write('not an image\n')
    with open(os.path.join(root, 'mango', 'notes.txt'), 'w') as f:  # not an image extension
      f.write('ignored\n')
    os.makedirs(os.path.join(root, '.thumbs'))  # hidden: not a class
    Image.new('RGB', (8, 8)).save(os.path.join(root, '.thumbs', 't.png'))
    with open(os.path.join(root, 'zebra', '._z0.png'), 'wb') as f:  # macOS metadata: not read
      f.write(b'\x00\x05\x16\x07')


def write_annotations(root):
  lines = ['path,y_min,x_min,y_max,x_max,identity,camera,attr_color,attr_size']
  for k, file in enumerate(_files()):
    a = _annotation(k, file)
    box = BOXES.get(file, DEFAULT_BOX)[:4]
    size = '' if a['size'] < 0 else a['size']
    lines.append(f'{file},{",".join(box)},{a["identity"]},{a["camera"]},{a["color"]},{size}')
  with open(os.path.join(root, 'annotations.csv'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def _cfg(path, data_dir, options=None):
  return ml_collections.ConfigDict({'name': 'image_folder', 'config': options, 'path': str(path),
                                    'data_dir': str(data_dir), 'manual_dir': None})


def _read(builder):
  sources = builder.as_data_source()
  return {s: [sources[s][i] for i in range(len(sources[s]))] for s in sources}


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  root = tmp_path_factory.mktemp('user') / 'photos'
  write_images(str(root))
  write_annotations(str(root))
  return root


@pytest.fixture(scope='module')
def built(photos, tmp_path_factory):
  builder, meta = datasets.prepare(_cfg(photos, tmp_path_factory.mktemp('tfds')),
                                   log=lambda m: None)
  return builder, meta, _read(builder)


def test_labels_images_splits_and_bad_files(photos, built):
  builder, meta, splits = built
  assert builder.info.features['label'].names == LABEL_NAMES and meta.num_classes == 3
  files = builder.info.metadata['image_files']
  assert files == _files()  # every image file found, bad ones too (not notes.txt, ._z0.png)
  seen = {}
  for split, examples in splits.items():
    for e in examples:
      file = files[int(e['image_id'])]
      assert file not in seen, file
      seen[file] = split
      assert e['label'] == LABEL_NAMES.index(file.split('/')[0])
      with Image.open(os.path.join(photos, file)) as im:  # PNG and JPEG: PIL's own pixels
        np.testing.assert_array_equal(e['image'], np.asarray(im.convert('RGB')))
  good = sorted(f for f in _files() if f not in BAD)
  assert sorted(seen) == good
  assert meta.split_sizes == {s: sum(v == s for v in seen.values()) for s in ('train', 'test')}
  # Stratified: round-half-up(0.2 n) of each class's n listed files is in test (Apple 6 -> 1,
  # mango 7 -> 1, zebra 4 -> 1), less a bad file drawn into test.
  for c, n_bad in (('Apple', 1), ('mango', 1), ('zebra', 0)):
    test = sum(v == 'test' for f, v in seen.items() if f.startswith(c + '/'))
    assert 1 - n_bad <= test <= 1, c
  report = builder.info.metadata['bad_files']
  assert report['num_skipped'] == 2 and report['num_converted'] == 0
  skipped = {os.path.relpath(e['file'], photos).replace(os.sep, '/'): e['reason']
             for e in report['skipped']}
  assert sorted(skipped) == sorted(BAD)
  assert all(r.startswith('unreadable') for r in skipped.values())


def test_annotations_round_trip(built):
  builder, meta, splits = built
  assert {'bbox', 'identity', 'camera', 'attributes'} <= set(meta.features)
  md = builder.info.metadata
  assert md['attribute_names'] == ['color', 'size'] and md['attribute_num_values'] == [3, 2]
  files = md['image_files']
  for e in splits['train'] + splits['test']:
    k = int(e['image_id'])
    file, want = files[k], _annotation(k, files[k])
    np.testing.assert_allclose(e['bbox'], BOXES.get(file, DEFAULT_BOX)[4], atol=1e-6)
    assert e['bbox'].dtype == np.float32
    assert (e['identity'], e['camera']) == (want['identity'], want['camera'])
    np.testing.assert_array_equal(e['attributes'], [want['color'], want['size']])
    assert e['attributes'].dtype == np.int64


def test_methods_see_the_annotations(photos, built, tmp_path):
  """a3m's attribute check reads the columns' value counts (from the folder, before any build);
  the re-id protocol finds its fields."""
  _, meta, _ = built
  c = ml_collections.ConfigDict({'model': methods.get('a3m').default_model_config().to_dict(),
                                 'dataset': _cfg(photos, tmp_path)})
  c.model.attribute_classes = (3, 2)
  a3m.check_attribute_groups(c)
  c.model.attribute_classes = (2, 2)
  with pytest.raises(ValueError, match=r'attribute_classes\[0\] = 2.*takes 3 values'):
    a3m.check_attribute_groups(c)
  assert set(protocols.PROTOCOL_KEYS['reid']) <= set(meta.features)


def _split_plan(path, options=None):
  """{file: split} as the builder will write it."""
  return {f.file: f.split for f in image_folder.folder_config(str(path), options).files}


def test_seeded_split_is_deterministic_and_stratified(tmp_path):
  clean = {'b': [f'{i}.png' for i in range(4)], 'c': [f'{i}.jpg' for i in range(5)],
           'a': [f'{i}.png' for i in range(7)]}
  write_images(str(tmp_path / 'f'), clean, bad=False)
  options = 'test_fraction=0.4,split_seed=0'
  # round-half-up(0.4 n): 4 -> 2, 5 -> 2, 7 -> 3 (at most n - 1)
  want = {'a': 3, 'b': 2, 'c': 2}
  builder, meta = datasets.prepare(_cfg(tmp_path / 'f', tmp_path / 'd1', options),
                                   log=lambda m: None)
  stored = {}
  for split, examples in _read(builder).items():
    for e in examples:
      stored[builder.info.metadata['image_files'][int(e['image_id'])]] = split
  for c, n_test in want.items():
    assert sum(v == 'test' for f, v in stored.items() if f.startswith(c + '/')) == n_test
  assert meta.split_sizes == {'train': 9, 'test': 7}
  again, _ = datasets.prepare(_cfg(tmp_path / 'f', tmp_path / 'd2', options), log=lambda m: None)
  assert {builder.info.metadata['image_files'][int(e['image_id'])]
          for e in _read(again)['test']} == {f for f, v in stored.items() if v == 'test'}
  other = _split_plan(tmp_path / 'f', 'test_fraction=0.4,split_seed=1')
  assert other != stored and sorted(other) == sorted(stored)
  for c, n_test in want.items():
    assert sum(v == 'test' for f, v in other.items() if f.startswith(c + '/')) == n_test
  # A class added leaves the other classes' split as it was.
  write_images(str(tmp_path / 'f'), {'d': ['0.png', '1.png']}, bad=False, seed=1)
  grown = _split_plan(tmp_path / 'f', options)
  assert {f: v for f, v in grown.items() if not f.startswith('d/')} == stored


def test_split_folders_layout(tmp_path):
  root = tmp_path / 'f'
  write_images(str(root / 'train'), {'x': ['0.png', '1.png', '2.jpg'], 'y': ['0.png', '1.jpg']},
               bad=False)
  write_images(str(root / 'test'), {'y': ['9.png']}, bad=False, seed=1)
  builder, meta = datasets.prepare(_cfg(root, tmp_path / 'd'), log=lambda m: None)
  assert meta.split_sizes == {'train': 5, 'test': 1}
  assert builder.info.features['label'].names == ['x', 'y']
  (test,) = _read(builder)['test']
  assert test['label'] == 1
  with pytest.raises(ConfigError, match='flat folder only'):
    image_folder.folder_config(str(root), 'test_fraction=0.3')


def test_folders_do_not_collide_and_changes_rebuild(tmp_path):
  for parent in ('a', 'b'):
    write_images(str(tmp_path / parent / 'photos'), bad=False)
  name = lambda p: image_folder.folder_config(str(p)).name  # noqa: E731
  a, b = name(tmp_path / 'a' / 'photos'), name(tmp_path / 'b' / 'photos')
  assert a != b and a.startswith('photos_') and b.startswith('photos_')
  assert name(tmp_path / 'a' / 'photos') == a  # nothing changed: the same build
  assert name(tmp_path / 'a' / 'photos' / '..' / 'photos') == a  # the same folder
  os.remove(tmp_path / 'a' / 'photos' / 'zebra' / 'z0.png')
  assert name(tmp_path / 'a' / 'photos') != a


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)


@pytest.mark.parametrize('case, match', [
    ('unset', r'config\.dataset\.path is not set'),
    ('missing', r'config\.dataset\.path=.*does not exist'),
    ('empty', r'config\.dataset\.path=.*no class folder'),
    ('loose', r'no class folder.*4 image files directly'),
    ('empty_class', r'class folders with no image .* zebra'),
    ('one_class', r'found 1 class folder \(Apple\)'),
    ('no_row', r'annotations\.csv: 1 image files without a row.*zebra/z3\.jpg'),
    ('orphan_row', r'annotations\.csv: 1 rows naming no image file found.*zebra/nope\.png'),
    ('bad_column', r'annotations\.csv: header .*unknown columns: ymin'),
    ('bad_value', r'annotations\.csv line 2 identity: expected an integer'),
    ('options', r'config\.dataset\.config=.*test_fraction must be in \(0, 1\)'),
])
def test_folder_errors_name_the_field(tmp_path, case, match):
  root = tmp_path / 'f'
  write_images(str(root), {'Apple': ['a.png', 'b.png', 'c.png'], 'zebra': ['z3.jpg']}, bad=False)
  path, options = str(root), None
  if case == 'unset':
    path = None
  elif case == 'missing':
    path = str(tmp_path / 'nope')
  elif case == 'empty':
    path = str(tmp_path / 'empty')
    os.makedirs(path)
  elif case == 'loose':
    path = str(root / 'Apple')
    Image.new('RGB', (8, 8)).save(os.path.join(path, 'd.png'))
  elif case == 'empty_class':
    os.remove(root / 'zebra' / 'z3.jpg')
  elif case == 'one_class':
    path = str(tmp_path / 'one')
    write_images(path, {'Apple': ['a.png', 'b.png']}, bad=False)
  elif case == 'options':
    options = 'test_fraction=1.5'
  else:
    rows = {'no_row': 'path\nApple/a.png\nApple/b.png\n./Apple/c.png\n',
            'orphan_row': 'path\nApple/a.png\nApple/b.png\nApple/c.png\nzebra/z3.jpg\n'
                          'zebra/nope.png\n',
            'bad_column': 'path,ymin\nApple/a.png,1\n',
            'bad_value': 'path,identity\nApple/a.png,x\n'}[case]
    _write(str(root / 'annotations.csv'), rows)
  with pytest.raises(ConfigError, match=match):
    image_folder.folder_config(path, options)


def test_path_on_another_dataset_is_an_error(tmp_path):
  cfg = ml_collections.ConfigDict({'name': 'synthetic_parts', 'config': 'tiny', 'path': '/x',
                                   'data_dir': str(tmp_path), 'manual_dir': None})
  with pytest.raises(ValueError, match=r'config\.dataset\.path=/x .*only image_folder'):
    datasets.make_builder(cfg)


def _cli(module, *args):
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'FGJAX_TRACEBACK')}
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_missing_folder_exits_2_with_one_error_line(tmp_path):
  proc = _cli('fgjax.train', '--config=configs/image_folder_bcnn.py:runlocal',
              f'--workdir={tmp_path / "w"}', f'--config.dataset.path={tmp_path / "nope"}',
              f'--config.dataset.data_dir={tmp_path / "tfds"}')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith('ERROR:')]
  assert len(errors) == 1 and f'config.dataset.path={tmp_path / "nope"} does not exist' in (
      errors[0]), proc.stderr[-3000:]
  assert not (tmp_path / 'w').exists()


def test_prepare_then_train_runlocal_end_to_end(photos, tmp_path):
  """`fgjax.data.prepare image_folder --path` builds the folder once; `fgjax.train` of the
  example config's :runlocal form on the same folder reuses it, trains and writes metrics."""
  data = str(tmp_path / 'tfds')
  proc = _cli('fgjax.data.prepare', 'image_folder', f'--path={photos}', f'--data_dir={data}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout[proc.stdout.index('{'):])
  assert summary['num_classes'] == 3 and sum(summary['splits'].values()) == 15
  assert summary['bad_files']['num_skipped'] == 2
  workdir = tmp_path / 'w'
  proc = _cli('fgjax.train', '--config=configs/image_folder_bcnn.py:runlocal',
              f'--workdir={workdir}', f'--config.dataset.path={photos}',
              f'--config.dataset.data_dir={data}', '--config.dataset.num_threads=1')
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  assert 'preparing dataset' not in proc.stdout  # the prepared build is found, not redone
  with open(workdir / 'metrics.json') as f:
    metrics = json.load(f)
  assert metrics['num_examples'] == summary['splits']['test'] and 0 <= metrics['top1'] <= 1
  with open(workdir / 'config.json') as f:
    assert json.load(f)['dataset']['path'] == str(photos)
