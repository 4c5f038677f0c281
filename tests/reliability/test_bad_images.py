"""A dataset folder with every kind of bad image still trains to the end: convertible images are
converted, the others skipped, and each is listed in the dataset's metadata."""

import io
import os
import sys

import numpy as np
import scipy.io
from PIL import Image

from fgjax import trainer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data', 'builders'))
import builder_testing  # noqa: E402  tests/data/builders/builder_testing.py
from fgjax.data import datasets

KINDS = ('gray', 'cmyk', 'alpha', 'corrupt', 'truncated', 'empty', 'pixel')  # files 00017..00023


def _jpeg(image, **kw):
  out = io.BytesIO()
  image.save(out, format=kw.pop('format', 'JPEG'), **kw)
  return out.getvalue()


def _write_cars(root):
  """Cars196 layout: 16 good train images, 7 bad ones, 4 test images."""
  rng = np.random.default_rng(0)

  def good(h=40, w=48):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

  alpha = np.zeros((40, 48, 4), np.uint8)
  alpha[..., 2], alpha[:, :24, 3] = 255, 255
  bad = {'gray': _jpeg(good().convert('L')),
         'cmyk': _jpeg(good().convert('CMYK')),
         'alpha': _jpeg(Image.fromarray(alpha, 'RGBA'), format='PNG'),  # a PNG named .jpg
         'corrupt': b'\xff\xd8\xff\xe0 definitely not a jpeg',
         'truncated': _jpeg(good())[:300],
         'empty': b'',
         'pixel': _jpeg(Image.new('RGB', (1, 1)))}
  entries = {'train': {f'{i:05d}.jpg': _jpeg(good()) for i in range(1, 17)},
             'test': {f'{i:05d}.jpg': _jpeg(good()) for i in range(1, 5)}}
  # Cars file names are numbers (the builder derives image_id from them)
  entries['train'].update({f'{17 + i:05d}.jpg': bad[k] for i, k in enumerate(KINDS)})
  os.makedirs(os.path.join(root, 'devkit'))
  annotations = {}
  for split, files in entries.items():
    os.makedirs(os.path.join(root, f'cars_{split}'))
    for name, data in files.items():
      with open(os.path.join(root, f'cars_{split}', name), 'wb') as f:
        f.write(data)
    annotations[split] = {name: (1 + j % 2, (1, 1, 20, 20), None)
                          for j, name in enumerate(sorted(files))}
  mat = builder_testing.cars_annotations_mat
  mat(os.path.join(root, 'devkit', 'cars_train_annos.mat'), annotations['train'])
  mat(os.path.join(root, 'cars_test_annos_withlabels.mat'), annotations['test'])
  mat(os.path.join(root, 'devkit', 'cars_test_annos.mat'), annotations['test'],  # no `class`
      fields=tuple(f for f in builder_testing.CARS_FIELDS if f != 'class'))
  scipy.io.savemat(os.path.join(root, 'devkit', 'cars_meta.mat'),
                   {'class_names': np.array([['car a', 'car b']], dtype=object)})


def test_training_completes_and_bad_images_are_listed(make_config, tmp_path, one_device_mesh):
  _write_cars(str(tmp_path / 'cars'))
  config = make_config('bcnn')
  with config.unlocked():
    config.dataset.name, config.dataset.config = 'cars196', None
    config.dataset.manual_dir = str(tmp_path / 'cars')
    config.dataset.data_dir = str(tmp_path / 'data')
    config.train.global_batch_size, config.eval.batch_size = 8, 8
  result = trainer.train_and_evaluate(config, str(tmp_path / 'w'), mesh=one_device_mesh,
                                      log=lambda m: None)
  assert result['num_examples'] == 4 and result['step'] == 4  # 19 usable train images, 2 epochs
  builder, meta = datasets.prepare(config.dataset, log=lambda m: None)
  assert meta.split_sizes['train'] == 16 + 3
  bad = builder.info.metadata['bad_files']
  kind = lambda c: KINDS[int(os.path.basename(c['file'])[:5]) - 17]  # noqa: E731
  converted = {kind(c) for c in bad['converted']}
  skipped = {kind(c): c['reason'] for c in bad['skipped']}
  assert converted == {'gray', 'cmyk', 'alpha'}
  assert set(skipped) == {'corrupt', 'truncated', 'empty', 'pixel'}
  assert skipped['empty'] == 'zero-byte file' and skipped['pixel'] == '1x1 pixels'
