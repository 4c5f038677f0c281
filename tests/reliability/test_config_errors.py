"""Bad names and impossible shapes fail before any compilation, naming the field and valid choices.

Every case runs `train_and_evaluate` with `jax.jit` replaced by a function that fails the test, so
an error raised after compilation started would show up as that failure instead.
"""

import jax
import pytest

from fgjax import sharding, trainer


@pytest.fixture
def no_jit(monkeypatch):
  def forbidden(*args, **kwargs):
    raise AssertionError('jax.jit was called before the config error was raised')
  monkeypatch.setattr(jax, 'jit', forbidden)


def _fails(config, tmp_path, mesh, *fragments):
  with pytest.raises(ValueError) as info:
    trainer.train_and_evaluate(config, str(tmp_path / 'w'), mesh=mesh, log=lambda m: None)
  for fragment in fragments:
    assert fragment in str(info.value), str(info.value)


def _set(config, path, value):
  with config.unlocked():
    node = config
    *parents, leaf = path.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


CASES = [
    ('method', 'nope', ['unknown method', "'nope'", 'bcnn, bcnn_spp', 'config.method']),
    ('model.backbone_a', 'resnet9000', ['unknown backbone', 'small_cnn',
                                        'config.model.backbone_a']),
    ('model.layer_a', 'conv9', ['no feature map', "'conv9'", 'conv1, conv2, conv3, conv4']),
    ('model.sqrt_variant', 'cube', ['sqrt_variant', 'sign, cvl_umass, haomood']),
    ('dataset.name', 'cub9000', ['unknown dataset', 'synthetic_parts', 'config.dataset.name']),
    ('dataset.config', 'huge', ["unknown config 'huge'", 'default', 'tiny']),
    ('dataset.eval_split', 'validation', ["split 'validation'", 'gallery', 'test', 'train']),
    ('compute_dtype', 'float8', ['compute_dtype', 'float32, bfloat16, float16']),
    ('optim.schedule', 'linear', ['optim.schedule', "'constant', 'cosine' or 'step'"]),
    ('optim.optimizer', 'lion', ['optim.optimizer', "'sgd', 'adam' or 'adamw'"]),
    ('train.global_batch_size', 12, ['global_batch_size=12', 'multiple of the number of devices']),
]


@pytest.mark.parametrize('field,value,fragments', CASES, ids=[c[0] for c in CASES])
def test_bad_names_fail_before_compile(make_config, tmp_path, no_jit, field, value, fragments):
  mesh = sharding.make_mesh(jax.devices())  # 8 devices: a global batch of 12 cannot be split
  _fails(_set(make_config('bcnn'), field, value), tmp_path, mesh, *fragments)


def test_grid_too_small_for_spp(make_config, tmp_path, no_jit, one_device_mesh):
  config = make_config('bcnn_spp')
  _set(config, 'dataset.image_size', 8)
  _set(config, 'dataset.resize_size', 8)
  _fails(config, tmp_path, one_device_mesh, '1x1 grid', 'needs at least 2x2',
         'config.dataset.image_size / image_width to >= 16')


def test_unknown_stage_field(make_config, tmp_path, no_jit, one_device_mesh):
  import ml_collections
  config = _set(make_config('bcnn'), 'stages',
                (ml_collections.ConfigDict({'num_epochs': 1.0, 'learnig_rate': 0.1}),))
  _fails(config, tmp_path, one_device_mesh, 'config.stages[0].learnig_rate', 'learning_rate')


def test_misspelt_config_field_is_refused(make_config):
  config = make_config('bcnn')
  with pytest.raises(AttributeError, match='learning_rate'):
    config.optim.learnig_rate = 0.1


def test_non_square_input_grid_checked_on_both_axes(make_config, tmp_path, no_jit,
                                                    one_device_mesh):
  config = make_config('bcnn_spp')
  _set(config, 'dataset.image_width', 8)  # 32 x 8 -> a 4x1 grid at stride 8
  _fails(config, tmp_path, one_device_mesh, 'input 32x8 gives a 4x1 grid', 'needs at least 2x2')


def test_padding_free_shift_needs_room(make_config, tmp_path, no_jit, one_device_mesh):
  config = make_config('bcnn')
  _set(config, 'dataset.shift_padding', False)  # resize 36, input 32, shift 2 on each side: fits
  _set(config, 'dataset.shift_x', 5)  # needs a width of 32 + 10
  _fails(config, tmp_path, one_device_mesh, 'resized width 36 is smaller than the input width '
         'plus padding-free shifts (42)')


def test_imagenet_backbone_without_weights_is_refused(make_config):
  from fgjax import methods  # pylint: disable=g-import-not-at-top
  config = make_config('bcnn', backbone_a='vgg16', layer_a='relu5_3')
  with pytest.raises(ValueError, match=r"backbone_a='vgg16' has no ImageNet weights: convert them "
                                       r'once \(python -m fgjax.pretrained convert --arch vgg16'):
    methods.get('bcnn').check_config(config)
  _set(config, 'model.allow_random_init', True)
  methods.get('bcnn').check_config(config)  # on purpose: no error
