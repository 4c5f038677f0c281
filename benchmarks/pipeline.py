"""Input-pipeline throughput at 448 with augmentation (no model), as training reads data.

    python -m benchmarks.pipeline [--batches 30] [--batch 32] [--threads 2]

Datasets: `synthetic_parts/default` (64x64 PNGs upscaled) and a Cars196-layout fixture of 256
photo-like 500x375 JPEGs (the size of typical CUB / Cars images), built here in a temp dir through
the real `cars196` builder. Geometry as Wu & Wang 2017's B-CNN recipe: resize 454x458, crop 448,
flip, +-3/+-5 px shifts without padding. Prints one JSON line per dataset: img/s over `--batches`
global batches after 3 warm-up batches, with `--threads` grain read threads.
"""

import argparse
import json
import os
import tempfile
import time

import jax
import numpy as np
import scipy.io
from PIL import Image

from fgjax import sharding
from fgjax.data import datasets, pipeline
from fgjax.default_config import get_base_config


def write_cars_fixture(root: str, n: int = 256, classes: int = 8) -> None:
  rng = np.random.default_rng(0)
  fields = ('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'fname')
  yy, xx = np.mgrid[0:375, 0:500]
  for folder, count in (('cars_train', n), ('cars_test', 16)):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    ann = np.zeros((1, count), dtype=[(f, 'O') for f in fields])
    for j in range(count):
      # smooth colour fields + noise: JPEG sizes like photos, not like pure noise
      base = np.stack([np.sin(xx / (20 + 7 * c) + j) * np.cos(yy / (30 + 5 * c)) for c in range(3)])
      img = (127 + 100 * base.transpose(1, 2, 0) + rng.normal(0, 8, (375, 500, 3))).clip(0, 255)
      fname = f'{j + 1:05d}.jpg'
      Image.fromarray(img.astype(np.uint8)).save(os.path.join(root, folder, fname), quality=90)
      ann[0, j] = (np.uint16(50), np.uint16(40), np.uint16(450), np.uint16(330),
                   np.uint8(1 + j % classes), fname)
    name = ('devkit/cars_train_annos.mat' if folder == 'cars_train'
            else 'cars_test_annos_withlabels.mat')
    os.makedirs(os.path.join(root, 'devkit'), exist_ok=True)
    scipy.io.savemat(os.path.join(root, name), {'annotations': ann})
    if folder == 'cars_test':  # the devkit's own test annotations have no `class` field
      unlabelled = np.zeros((1, count), dtype=[(f, 'O') for f in fields if f != 'class'])
      for j in range(count):
        unlabelled[0, j] = tuple(ann[0, j][f] for f in fields if f != 'class')
      scipy.io.savemat(os.path.join(root, 'devkit', 'cars_test_annos.mat'),
                       {'annotations': unlabelled})
  scipy.io.savemat(os.path.join(root, 'devkit', 'cars_meta.mat'),
                   {'class_names': np.array([[f'class {c}' for c in range(classes)]], object)})


def measure(name, builder_config, manual_dir, data_dir, args) -> dict:
  c = get_base_config()
  d = c.dataset
  d.name, d.config, d.data_dir, d.manual_dir = name, builder_config, data_dir, manual_dir
  d.resize, d.resize_size, d.resize_width, d.image_size = 'fixed', 454, 458, 448
  d.random_crop, d.hflip, d.shift_y, d.shift_x, d.shift_padding = False, True, 3, 5, False
  d.num_threads = args.threads
  builder, meta = datasets.prepare(d, log=lambda m: None)
  mesh = sharding.make_mesh(jax.devices()[:1])
  it = pipeline.train_batches(datasets.data_source(builder, 'train'), d, keys=('image', 'label'),
                              global_batch=args.batch, mesh=mesh, seed=0)
  for _ in range(3):
    jax.block_until_ready(next(it))
  t = time.perf_counter()
  for _ in range(args.batches):
    jax.block_until_ready(next(it))
  seconds = time.perf_counter() - t
  return {'name': f'pipeline/{name}/448', 'img_s': round(args.batch * args.batches / seconds, 1),
          'batch': args.batch, 'batches': args.batches, 'threads': args.threads,
          'train_examples': meta.split_sizes['train'], 'cpu_count': os.cpu_count(),
          'augment': 'resize 454x458, crop 448, flip, shift +-3/+-5 without padding'}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batches', type=int, default=30)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--threads', type=int, default=2)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    print(json.dumps(measure('synthetic_parts', 'default', None, f'{tmp}/data', args)), flush=True)
    write_cars_fixture(f'{tmp}/cars')
    print(json.dumps(measure('cars196', None, f'{tmp}/cars', f'{tmp}/data', args)), flush=True)


if __name__ == '__main__':
  main()
