"""bcnn / bcnn_spp methods: config.model derived from the BCNN module's fields (the one list of
settings), the generic build, the config checks, the weight directories and the loss against a
NumPy oracle."""

import types

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fgjax import experiment, methods
from fgjax.models.bilinear import BCNN

# config.model of bcnn as fgjax wrote it by hand before the fields moved onto the module
# (fgjax/methods/bcnn.py + add_two_stream_fields, 2026-11): the derived config must equal it, so
# config.json files and --config.model.* overrides of earlier runs keep their meaning.
HAND_WRITTEN_BCNN_MODEL = {
    'backbone_a': 'small_cnn', 'layer_a': 'conv4', 'backbone_a_kwargs': {}, 'backbone_b': '',
    'layer_b': '', 'backbone_b_kwargs': {}, 'backbone_a_pretrained': '',
    'backbone_b_pretrained': '', 'allow_random_init': False, 'proj_dim_a': 0, 'proj_dim_b': 0,
    'sqrt_variant': 'sign', 'sqrt_eps': 1e-5, 'l2_eps': 1e-12, 'dropout_rate': 0.0,
    'label_smoothing': 0.0}


@pytest.mark.parametrize('name', ['bcnn', 'bcnn_spp'])
def test_default_model_config_is_the_module_fields(name):
  config = methods.get(name).default_model_config().to_dict()
  assert config == HAND_WRITTEN_BCNN_MODEL
  assert 'spp' not in config  # fixed by the method, not a setting
  assert 'precision' not in config and 'num_classes' not in config and 'dtype' not in config


@pytest.mark.parametrize('name, spp', [('bcnn', False), ('bcnn_spp', True)])
def test_build_passes_every_field(make_config, name, spp):
  config = make_config(name, dropout_rate=0.25, sqrt_variant='haomood', proj_dim_a=8)
  model = methods.get(name).build_model(config, types.SimpleNamespace(num_classes=5))
  assert isinstance(model, BCNN)
  assert (model.spp, model.dropout_rate, model.sqrt_variant, model.proj_dim_a) == (
      spp, 0.25, 'haomood', 8)
  assert model.num_classes == 5 and model.dtype == jnp.float32
  assert isinstance(model.backbone_a_kwargs, flax.core.FrozenDict)  # not a ConfigDict
  hash(model)  # every field hashable (Flax transforms hash modules)


def test_param_tree_names_are_the_configs_targets(make_config):
  """Scope names that weight loading ('backbone_a/') and lr multipliers ('^classifier') target."""
  config = make_config('bcnn', backbone_b='small_cnn', layer_b='conv3', proj_dim_a=4,
                       proj_dim_b=3)
  model = methods.get('bcnn').build_model(config, types.SimpleNamespace(num_classes=3))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                             train=False))['params']
  assert sorted(params) == ['backbone_a', 'backbone_b', 'classifier', 'proj_a', 'proj_b']
  assert params['classifier']['kernel'].shape == (4 * 3, 3)


def test_value_check_names_the_field(make_config):
  config = make_config('bcnn', sqrt_variant='nope')
  with pytest.raises(ValueError, match=r'config\.model\.sqrt_variant must be one of'):
    methods.get('bcnn').build_model(config, types.SimpleNamespace(num_classes=2))


def test_unknown_model_field_is_named(make_config):
  config = ml_collections.ConfigDict(make_config('bcnn').to_dict())
  config.model.hidden = 3
  with pytest.raises(ValueError, match=r"\['hidden'\].*valid: allow_random_init, backbone_a,"):
    methods.get('bcnn').build_model(config, types.SimpleNamespace(num_classes=2))


def test_check_config(make_config, one_device_mesh):
  with pytest.raises(ValueError, match='backbone_b_pretrained is set but'):
    experiment.setup(make_config('bcnn', backbone_b_pretrained='/w'), mesh=one_device_mesh,
                     log=lambda m: None)
  with pytest.raises(ValueError, match=r"unknown backbone 'nope' \(config.model.backbone_a\)"):
    experiment.setup(make_config('bcnn', backbone_a='nope'), mesh=one_device_mesh,
                     log=lambda m: None)
  # bcnn_spp needs a 2x2 grid: small_cnn conv4 has stride 8, so 8x8 inputs are too small.
  config = ml_collections.ConfigDict(make_config('bcnn_spp').to_dict())
  config.dataset.image_size = 8
  with pytest.raises(ValueError, match='needs at least 2x2'):
    methods.get('bcnn_spp').check_config(config)
  methods.get('bcnn').check_config(config)  # 1x1 is enough without the pyramid


def test_pretrained_lists_each_stream(make_config):
  assert methods.get('bcnn').pretrained(make_config('bcnn')) == []
  config = make_config('bcnn', backbone_b='small_cnn', backbone_a_pretrained='/a',
                       backbone_b_pretrained='/b')
  assert methods.get('bcnn').pretrained(config) == [('/a', 'backbone_a/'), ('/b', 'backbone_b/')]


def test_loss_is_cross_entropy_with_label_smoothing(make_config):
  config = make_config('bcnn', label_smoothing=0.1)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 3))
  labels = np.array([0, 2, 1, 1])
  loss, metrics = methods.get('bcnn').loss_fn(
      {'logits': jnp.asarray(logits, jnp.float32)}, {'label': jnp.asarray(labels)}, config)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  target = np.full((4, 3), 0.1 / 3) + 0.9 * np.eye(3)[labels]
  assert abs(float(loss) - float(-(target * logp).sum(-1).mean())) < 1e-5
  assert float(metrics['accuracy']) == float(np.mean(logits.argmax(-1) == labels))
