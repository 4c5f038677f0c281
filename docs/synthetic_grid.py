"""Regenerate the pictures of the embedded dataset in docs/.

python docs/synthetic_grid.py [--data_dir=DIR]           # docs/synthetic_parts.png
python docs/synthetic_grid.py --config=fgvc [--out=PNG]  # docs/synthetic_fgvc.png

default: 6 training images of each of the first 5 classes of `synthetic_parts/default`.
fgvc: 6 training images of each of 5 classes of `synthetic_parts/fgvc`: a base class, a layout
pair (the same markings, fore and aft swapped) and a detail pair (only the eye dots differ), one
class per row, rendered by the builder config's scene (the same pixels the builder stores).
"""

import argparse
import os

import numpy as np
from PIL import Image

from fgjax.data.synthetic import SyntheticParts

DOCS = os.path.dirname(os.path.abspath(__file__))


def default_grid(data_dir):
  builder = SyntheticParts(config='default', data_dir=data_dir)
  builder.download_and_prepare()
  source = builder.as_data_source()['train']
  by_class = {}
  for i in range(len(source)):
    example = source[i]
    if example['label'] < 5 and len(by_class.setdefault(example['label'], [])) < 6:
      by_class[example['label']].append(example['image'])
    if len(by_class) == 5 and all(len(v) == 6 for v in by_class.values()):
      break
  grid = np.concatenate([np.concatenate(by_class[c], 1) for c in range(5)], 0)
  names = [builder.info.features['label'].names[c] for c in range(5)]
  return grid, names


def fgvc_grid(config_name):
  config = next(c for c in SyntheticParts.BUILDER_CONFIGS if c.name == config_name)
  scene = config.scene()
  kinds = list(scene.pair_kind)
  layout, detail = kinds.index('layout'), kinds.index('detail')
  classes = [0, layout, layout + 1, detail, detail + 1]
  rows = []
  for c in classes:
    views = [(c * config.identities_per_class + j, cam)
             for j in range(config.train_identities_per_class)
             for cam in range(config.num_cameras)][:6]
    rows.append(np.concatenate([scene.render(i, cam)['image'] for i, cam in views], 1))
  names = [f'{c} ({kinds[c]}): {scene.attributes[c].tolist()}' for c in classes]
  return np.concatenate(rows, 0), names


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--config', default='default', help="'default' or an fgvc builder config")
  parser.add_argument('--out', default=None)
  args = parser.parse_args()
  if args.config == 'default':
    grid, names = default_grid(args.data_dir)
    out = args.out or os.path.join(DOCS, 'synthetic_parts.png')
  else:
    grid, names = fgvc_grid(args.config)
    out = args.out or os.path.join(DOCS, 'synthetic_fgvc.png')
  Image.fromarray(grid).save(out)
  print(out, names)


if __name__ == '__main__':
  main()
