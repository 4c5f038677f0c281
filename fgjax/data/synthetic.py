"""``synthetic_parts``: the embedded, procedurally generated fine-grained dataset (tfds builder).

Served through the same tfds path as the real datasets (array_record, read with
``builder.as_data_source()`` / ``tfds.data_source``; no TensorFlow needed)::

    from fgjax.data.synthetic import SyntheticParts
    builder = SyntheticParts(config='default', data_dir=D)   # or config=SyntheticPartsConfig(...)
    builder.download_and_prepare()
    train = builder.as_data_source()['train']                # train[i] -> dict of numpy values

Images come from :mod:`fgjax.data.synthetic_render` (see its docstring for the scene): all classes
share one silhouette and one colour distribution; a class is a tuple of shape variants of three
small equal-area markings (``head`` / ``wing`` / ``tail``), so global colour statistics carry no
class information and only local parts discriminate.

Example fields (every split): ``image`` uint8 (S, S, 3) PNG; ``label`` (class); ``attributes``
int64 (3,) = the class's variant index per part group (names in ``info.metadata``); ``identity``
int64 (instance id, unique over the dataset); ``camera`` int64 in [0, num_cameras); ``bbox``
float32 (4,) = (ymin, xmin, ymax, xmax) of the object silhouette in [0, 1], clipped to the image.

Splits (identities of each class are split into ``train_identities_per_class`` train identities
and ``test_identities_per_class`` test identities; each identity is seen by ``num_cameras``
cameras with different pose, background and illumination):

* ``train`` / ``test``: all cameras of the train / test identities (identity-disjoint).
* ``query`` / ``gallery``: camera 0 / the other cameras of the test identities (re-id protocol,
  identities disjoint from ``train``, like Market-1501).
* ``retrieval_train`` / ``retrieval_test``: all images of the first ``ceil(C / 2)`` classes / of
  the remaining classes (class-disjoint retrieval, like CUB-200 / Cars-196 metric learning).

The same (identity, camera) pair is the same image in every split it appears in. Everything is a
pure function of the config (``seed`` included); decoded pixels are bit-identical across machines
(PNG bytes may depend on the zlib version, pixels do not). Examples are stored in tfds's
deterministic key-hash order; shuffle in the input pipeline.

``pretrain`` / ``pretrain_tiny`` (``PretrainConfig``, :mod:`fgjax.data.pretrain_render`): generic
shape x texture classes, disjoint from the benchmark's markings, to pretrain on instead of ImageNet;
fields ``image``, ``label``, ``identity`` (instance), ``camera`` (0), ``bbox``; splits train / test.

Versions: the fgvc configs carry their own (``FGVC_VERSION``, 2.0.0: the design the benchmark was
measured on); the others the builder's 1.0.0. A custom config needs a name of its own.
``SyntheticPartsConfig`` refuses attribute assignment after ``__post_init__`` (tfds's
``BuilderConfig`` is not a frozen dataclass, and Python forbids mixing).
"""

from __future__ import annotations

import dataclasses
import io

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from fgjax.data import fgvc_render
from fgjax.data import pretrain_render
from fgjax.data import synthetic_render as render_lib

_SPLITS = ('train', 'test', 'query', 'gallery', 'retrieval_train', 'retrieval_test')


@dataclasses.dataclass(eq=False)
class SyntheticPartsConfig(tfds.core.BuilderConfig):
  """Size, classes and difficulty of ``synthetic_parts``.

  Attributes:
    image_size: images are (image_size, image_size, 3).
    num_classes: number of classes (distinct variant tuples), <= num_variants ** 3.
    num_variants: shape variants per part group (1..5: disc, ring, bar, triangle, square).
    train_identities_per_class: identities per class in ``train``.
    test_identities_per_class: identities per class in ``test`` (and ``query``/``gallery``).
    num_cameras: views per identity (>= 2 so every query has a gallery match).
    clutter: difficulty in [0, 1]: background texture contrast and distractor count/opacity.
    part_scale: marking size multiplier (<= 1.05); smaller is harder.
    seed: global seed; every pixel is a function of the config.
  """

  image_size: int = 64
  num_classes: int = 10
  num_variants: int = 3
  train_identities_per_class: int = 80
  test_identities_per_class: int = 20
  num_cameras: int = 3
  clutter: float = 0.5
  part_scale: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if self.num_cameras < 2 or self.train_identities_per_class < 1 or (
        self.test_identities_per_class < 1):
      raise ValueError('need num_cameras >= 2 and >= 1 train and test identity per class')
    if self.num_classes < 2:
      raise ValueError(f'num_classes must be >= 2, got {self.num_classes}')
    self.scene()  # validates the remaining fields
    object.__setattr__(self, '_frozen', True)

  def __setattr__(self, name, value):
    if getattr(self, '_frozen', False):
      raise dataclasses.FrozenInstanceError(f'cannot assign to field {name!r}')
    object.__setattr__(self, name, value)

  @property
  def identities_per_class(self) -> int:
    return self.train_identities_per_class + self.test_identities_per_class

  def scene(self) -> render_lib.Scene:
    return render_lib.Scene(
        image_size=self.image_size, num_classes=self.num_classes,
        num_variants=self.num_variants, identities_per_class=self.identities_per_class,
        clutter=self.clutter, part_scale=self.part_scale, seed=self.seed)

  def split_keys(self) -> dict[str, list[tuple[int, int]]]:
    return _split_keys(self.num_classes, self.train_identities_per_class,
                       self.identities_per_class, self.num_cameras)


def _split_keys(num_classes, train_ipc, ipc, cams) -> dict[str, list[tuple[int, int]]]:
  """(identity, camera) pairs of every split, in generation order (module docstring)."""
  half = (num_classes + 1) // 2
  out = {name: [] for name in _SPLITS}
  for label in range(num_classes):
    for j in range(ipc):
      identity = label * ipc + j
      for camera in range(cams):
        key = (identity, camera)
        out['train' if j < train_ipc else 'test'].append(key)
        if j >= train_ipc:
          out['query' if camera == 0 else 'gallery'].append(key)
        out['retrieval_train' if label < half else 'retrieval_test'].append(key)
  return out


@dataclasses.dataclass(eq=False)
class FgvcConfig(tfds.core.BuilderConfig):
  """``synthetic_parts/fgvc``: the embedded benchmark (fgjax/data/fgvc_render.py says what each
  property is for). Every property is a knob:

  Attributes:
    image_size: images are (image_size, image_size, 3); large enough that zooming matters.
    num_base: classes that differ in several markings.
    layout_pairs: pairs of classes with the same markings in swapped places (fore / aft).
    detail_pairs: pairs of classes that differ only in the fine `eye` detail.
    num_variants: marking shapes per group (2..5).
    train_identities_per_class, test_identities_per_class, num_cameras: identities (re-id) and
      views; train images per class = train_identities_per_class * num_cameras.
    object_scale: (low, high) object length as a fraction of the image side (log-uniform).
    rotation_deg: rotations within +- this; objects also face left or right.
    deformation: per-identity body aspect and length jitter (relative).
    clutter: decoys per image (body fragments carrying other classes' markings); 0 = none.
    part_scale: marking size multiplier.
    seed: global seed; every pixel is a function of the config.
  """

  image_size: int = 128
  num_base: int = 20
  layout_pairs: int = 8
  detail_pairs: int = 7
  num_variants: int = 5
  train_identities_per_class: int = 10
  test_identities_per_class: int = 4
  num_cameras: int = 3
  object_scale: tuple[float, float] = (0.25, 0.6)
  rotation_deg: float = 30.0
  deformation: float = 0.1
  clutter: int = 2
  part_scale: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if self.num_cameras < 2 or self.train_identities_per_class < 1 or (
        self.test_identities_per_class < 1):
      raise ValueError('need num_cameras >= 2 and >= 1 train and test identity per class')
    self.scene()  # validates the remaining fields
    object.__setattr__(self, '_frozen', True)

  __setattr__ = SyntheticPartsConfig.__setattr__

  @property
  def identities_per_class(self) -> int:
    return self.train_identities_per_class + self.test_identities_per_class

  @property
  def num_classes(self) -> int:
    return self.num_base + 2 * (self.layout_pairs + self.detail_pairs)

  def scene(self) -> fgvc_render.FgvcScene:
    return fgvc_render.FgvcScene(
        image_size=self.image_size, num_base=self.num_base, layout_pairs=self.layout_pairs,
        detail_pairs=self.detail_pairs, num_variants=self.num_variants,
        identities_per_class=self.identities_per_class, object_scale=self.object_scale,
        rotation_deg=self.rotation_deg, deformation=self.deformation, clutter=self.clutter,
        part_scale=self.part_scale, seed=self.seed)

  def split_keys(self) -> dict[str, list[tuple[int, int]]]:
    return _split_keys(self.num_classes, self.train_identities_per_class,
                       self.identities_per_class, self.num_cameras)


@dataclasses.dataclass(eq=False)
class PretrainConfig(tfds.core.BuilderConfig):
  """``synthetic_parts/pretrain``: generic shape x texture classes (fgjax/data/pretrain_render.py);
  class c = (shape c // num_textures, texture c % num_textures). Instances c * per_class + j, j <
  train_per_class, are in ``train``, the rest in ``test``; one view (camera 0) each."""

  image_size: int = 128
  num_shapes: int = 8
  num_textures: int = 6
  train_per_class: int = 40
  test_per_class: int = 10
  distractors: int = 2
  seed: int = 0

  def __post_init__(self):
    if self.train_per_class < 1 or self.test_per_class < 1:
      raise ValueError('need >= 1 train and >= 1 test instance per class')
    self.scene()  # validates the remaining fields
    object.__setattr__(self, '_frozen', True)

  __setattr__ = SyntheticPartsConfig.__setattr__

  @property
  def num_classes(self) -> int:
    return self.num_shapes * self.num_textures

  def scene(self) -> pretrain_render.PretrainScene:
    return pretrain_render.PretrainScene(
        image_size=self.image_size, num_shapes=self.num_shapes, num_textures=self.num_textures,
        instances_per_class=self.train_per_class + self.test_per_class,
        distractors=self.distractors, seed=self.seed)

  def split_keys(self) -> dict[str, list[tuple[int, int]]]:
    per_class = self.train_per_class + self.test_per_class
    return {name: [(c * per_class + j, 0) for c in range(self.num_classes) for j in js]
            for name, js in (('train', range(self.train_per_class)),
                             ('test', range(self.train_per_class, per_class)))}


def _config_fields(cfg) -> dict:
  skip = ('release_notes', 'supported_versions', 'tags', 'version', 'description')
  return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in skip}


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='png', compress_level=6)
  return buf.getvalue()


# Frozen after the oracles (docs/benchmark.md); the default and pretrain configs keep 1.0.0.
FGVC_VERSION = tfds.core.Version('2.0.0')
FGVC_RELEASE_NOTES = {
    '1.0.0': 'First design: objects 15-60% of the image side, 3 decoys per image.',
    '2.0.0': 'Objects 25-60% of the image side, 2 decoys per image: at 1.0.0 the whole-image '
             'B-CNN oracle was at 4% (chance 2%), too close to chance to read any property.',
}


def _fgvc(name: str, description: str, **fields) -> FgvcConfig:
  return FgvcConfig(name=name, description=description, version=FGVC_VERSION,
                    release_notes=FGVC_RELEASE_NOTES, **fields)


class SyntheticParts(tfds.core.GeneratorBasedBuilder):
  """Procedural fine-grained dataset: classes differ only by small local parts."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SyntheticPartsConfig(
          name='default',
          description='Demo config: 64x64, 10 classes, 2400 train / 600 test images.'),
      SyntheticPartsConfig(
          name='tiny', description='Fast tests: 32x32, 4 classes, 96 train / 48 test images.',
          image_size=32, num_classes=4, train_identities_per_class=8,
          test_identities_per_class=4, num_cameras=3),
      _fgvc('fgvc', 'The embedded benchmark: 128x128, 50 classes (20 base, 8 layout pairs, 7 '
            'detail pairs), 1500 train / 600 test images, objects 25-60% of the image side, 2 '
            'decoys per image.'),
      _fgvc('fgvc_noclutter', 'fgvc without decoys (oracle).', clutter=0),
      _fgvc('fgvc_nolayout', 'fgvc with the 8 layout pairs replaced by 16 base classes (oracle).',
            num_base=36, layout_pairs=0),
      _fgvc('fgvc_tiny', 'Fast tests: 64x64, 8 classes.', image_size=64, num_base=2,
            layout_pairs=1, detail_pairs=2, train_identities_per_class=2,
            test_identities_per_class=1, num_cameras=2),
      PretrainConfig(name='pretrain', description='Generic pretraining set (ImageNet stand-in): '
                     '128x128, 48 shape x texture classes disjoint from fgvc, 1920 train / 480 '
                     'test images.'),
      PretrainConfig(name='pretrain_tiny', description='Fast tests: 64x64, 6 classes.',
                     image_size=64, num_shapes=3, num_textures=2, train_per_class=4,
                     test_per_class=2),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def __init__(self, *, file_format='array_record', **kwargs):
    # Array_record is the only format readable through `as_data_source` without TensorFlow.
    super().__init__(file_format=file_format, **kwargs)
    self._render_cache: dict[tuple[int, int], dict] = {}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10's default needs `importlib_resources` (tensorflow/datasets#11212): not needed.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    scene = cfg.scene()
    if isinstance(cfg, PretrainConfig):
      return self._pretrain_info(cfg, scene)
    fgvc = isinstance(cfg, FgvcConfig)
    lib = fgvc_render if fgvc else render_lib
    groups, variants = lib.GROUPS, lib.VARIANTS[:cfg.num_variants]

    def value(group, a):
      return fgvc_render.EYE_VARIANTS[a] if group == 'eye' else variants[a]
    names = ['-'.join(f'{g}_{value(g, a)}' for g, a in zip(groups, t)) for t in scene.attributes]
    s = cfg.image_size
    features = {
        'image': tfds.features.Image(shape=(s, s, 3), encoding_format='png'),
        'label': tfds.features.ClassLabel(names=names),
        'attributes': tfds.features.Tensor(shape=(len(groups),), dtype=np.int64),
        'identity': tfds.features.Scalar(dtype=np.int64),
        'camera': tfds.features.Scalar(dtype=np.int64),
        'bbox': tfds.features.Tensor(shape=(4,), dtype=np.float32),
    }
    metadata = dict(
        part_groups=list(groups), variants=list(variants),
        class_attributes=scene.attributes.tolist(), num_cameras=cfg.num_cameras,
        retrieval_train_classes=list(range((cfg.num_classes + 1) // 2)),
        config=_config_fields(cfg))
    description = (
        'Procedurally generated fine-grained dataset: objects share one silhouette and colour '
        'distribution; classes differ only in the shape of small equal-area markings on the '
        f'part groups {list(groups)} (variants {list(variants)}). `attributes[g]` is the '
        'variant index of group g (see metadata). Identities are seen by several cameras '
        '(pose, background, illumination) for re-id; `bbox` = (ymin, xmin, ymax, xmax) in '
        '[0, 1]. Splits: train/test (identity-disjoint), query/gallery (test identities), '
        'retrieval_train/retrieval_test (class-disjoint).')
    if fgvc:
      features['part_boxes'] = tfds.features.Tensor(shape=(len(groups), 4), dtype=np.float32)
      metadata.update(pair_kind=list(scene.pair_kind), partner=scene.partner.tolist(),
                      eye_variants=list(fgvc_render.EYE_VARIANTS))
      description += (' fgvc: objects at varied scale, pose and position among decoys; layout '
                      'and fine-detail class pairs (metadata pair_kind / partner); `part_boxes` '
                      'per group.')
    return tfds.core.DatasetInfo(
        builder=self, description=description, features=tfds.features.FeaturesDict(features),
        supervised_keys=('image', 'label'), metadata=tfds.core.MetadataDict(**metadata))

  def _pretrain_info(self, cfg, scene) -> tfds.core.DatasetInfo:
    s = cfg.image_size
    features = {
        'image': tfds.features.Image(shape=(s, s, 3), encoding_format='png'),
        'label': tfds.features.ClassLabel(names=scene.class_names),
        'identity': tfds.features.Scalar(dtype=np.int64),
        'camera': tfds.features.Scalar(dtype=np.int64),
        'bbox': tfds.features.Tensor(shape=(4,), dtype=np.float32),
    }
    metadata = dict(shapes=list(pretrain_render.SHAPES[:cfg.num_shapes]),
                    textures=list(pretrain_render.TEXTURES[:cfg.num_textures]),
                    config=_config_fields(cfg))
    description = (
        'Procedurally generated generic pretraining set (an ImageNet stand-in): class = (shape, '
        'fill texture), disjoint from the fgvc markings. One main shape (35-80% of the side, '
        'any rotation; `bbox`) over smaller distractors of other classes and a textured '
        'background; `identity` = instance, `camera` = 0. Splits: train/test.')
    return tfds.core.DatasetInfo(
        builder=self, description=description, features=tfds.features.FeaturesDict(features),
        supervised_keys=('image', 'label'), metadata=tfds.core.MetadataDict(**metadata))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    keys = self.builder_config.split_keys()  # only the splits the config has
    return {name: self._generate_examples(split) for name, split in keys.items()}

  def _example(self, scene, identity, camera):
    key = (identity, camera)
    if key not in self._render_cache:  # each view is rendered and encoded once per build
      r = scene.render(identity, camera)
      example = {
          'image': _png(r['image']), 'label': r['label'], 'identity': np.int64(identity),
          'camera': np.int64(camera), 'bbox': r['bbox']}
      for optional in ('attributes', 'part_boxes'):  # pretrain configs have neither
        if optional in r:
          example[optional] = r[optional]
      self._render_cache[key] = example
    return self._render_cache[key]

  def _download_and_prepare(self, *args, **kwargs):
    try:
      return super()._download_and_prepare(*args, **kwargs)
    finally:
      self._render_cache.clear()

  def _generate_examples(self, keys):
    scene = self.builder_config.scene()
    for identity, camera in keys:
      yield f'{identity}_{camera}', self._example(scene, identity, camera)
