"""Dataset registry: config.dataset.name -> a tfds builder, read through `as_data_source()`.

Builders are imported lazily (a name maps to 'module:Class'), so naming one dataset does not import
every builder. All datasets, the embedded synthetic one included, go through the same path:
tfds `GeneratorBasedBuilder` -> array_record files -> random-access data source (no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import importlib
import os

import tensorflow_datasets as tfds

DATASETS: dict[str, str] = {
    'synthetic_parts': 'fgjax.data.synthetic:SyntheticParts',
    'cub2011': 'fgjax.data.builders.cub2011:Cub2011',
    'cars196': 'fgjax.data.builders.cars196:Cars196',
    'fgvc_aircraft': 'fgjax.data.builders.fgvc_aircraft:FgvcAircraft',
    'compcars': 'fgjax.data.builders.compcars:CompCars',
    'market1501': 'fgjax.data.builders.market1501:Market1501',
    'cuhk03': 'fgjax.data.builders.cuhk03:Cuhk03',
    'viper': 'fgjax.data.builders.viper:Viper',
    'image_folder': 'fgjax.data.builders.image_folder:ImageFolder',  # config.dataset.path
}


def list_datasets() -> list[str]:
  return sorted(DATASETS)


def builder_class(name: str):
  if name not in DATASETS:
    raise ValueError(f'unknown dataset {name!r} (config.dataset.name); valid: '
                     f'{", ".join(list_datasets())}')
  module, cls = DATASETS[name].split(':')
  return getattr(importlib.import_module(module), cls)


def builder_config_names(name: str) -> list[str]:
  return [c.name for c in (builder_class(name).BUILDER_CONFIGS or [])]


def make_builder(cfg):
  """The tfds builder for config.dataset (not prepared yet). Validates the builder-config name.

  A builder with a `builder_config_from(cfg)` classmethod (image_folder) makes its own builder
  config from config.dataset (its `path`, its options in `config`); config.dataset.path set for
  any other dataset is an error (it would be ignored)."""
  cls = builder_class(cfg.name)
  kwargs = {}
  configure = getattr(cls, 'builder_config_from', None)
  if configure is not None:
    kwargs['config'] = configure(cfg)
  elif cfg.get('path'):
    raise ValueError(f'config.dataset.path={cfg.path} is set, but dataset {cfg.name!r} does not '
                     'read it: only image_folder does (add --config.dataset.name=image_folder)')
  elif cfg.config is not None:
    valid = builder_config_names(cfg.name)
    if cfg.config not in valid:
      raise ValueError(f'unknown config {cfg.config!r} for dataset {cfg.name!r} '
                       f'(config.dataset.config); valid: {", ".join(valid)}')
    kwargs['config'] = cfg.config
  if cfg.data_dir is not None:
    kwargs['data_dir'] = os.path.expanduser(cfg.data_dir)
  return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What the trainer and methods need to know about a dataset, without reading it."""
  name: str
  num_classes: int
  split_sizes: dict[str, int]
  features: tuple[str, ...]
  data_dir: str

  def check_split(self, split: str, field: str) -> None:
    if split not in self.split_sizes:
      raise ValueError(f'split {split!r} ({field}) does not exist in dataset {self.name!r}; '
                       f'valid: {", ".join(sorted(self.split_sizes))}')


def prepare(cfg, log=print):
  """Build the dataset files if needed and return (builder, DatasetMeta)."""
  builder = make_builder(cfg)
  if not builder.is_prepared():
    log(f'preparing dataset {cfg.name!r} in {builder.data_dir} (first use; done once)')
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.path.expanduser(cfg.manual_dir) if cfg.manual_dir else None)
    builder.download_and_prepare(download_config=download_config)
  info = builder.info
  meta = DatasetMeta(
      name=cfg.name,
      num_classes=int(info.features['label'].num_classes),
      split_sizes={k: int(v.num_examples) for k, v in info.splits.items()},
      features=tuple(info.features.keys()),
      data_dir=str(builder.data_dir))
  return builder, meta


def data_source(builder, split: str):
  return builder.as_data_source()[split]

