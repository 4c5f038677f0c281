"""Regenerate docs/synthetic_parts.png: 6 training images of each of the first 5 classes.

python docs/synthetic_grid.py [--data_dir=DIR]
"""

import argparse
import os

import numpy as np
from PIL import Image

from fgjax.data.synthetic import SyntheticParts


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--data_dir', default=None)
  args = parser.parse_args()
  builder = SyntheticParts(config='default', data_dir=args.data_dir)
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
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'synthetic_parts.png')
  Image.fromarray(grid).save(out)
  print(out, [builder.info.features['label'].names[c] for c in range(5)])


if __name__ == '__main__':
  main()
