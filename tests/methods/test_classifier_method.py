"""classifier method (backbone, global average pooling, linear): the forward pass against a float64
oracle, and a trained run's backbone exported as a weight directory (`python -m fgjax.pretrained
export`) that another method loads through its `*_pretrained` field."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax import checkpoint, experiment, methods, pretrained, trainer
from fgjax.models import backbones
from fgjax.models.backbones import small
from fgjax.models.classifier import ImageClassifier

METHOD = methods.get('classifier')


def test_default_config_is_the_module_fields():
  assert METHOD.default_model_config().to_dict() == {
      'backbone': 'small_cnn', 'layer': 'conv4', 'backbone_kwargs': {}, 'backbone_pretrained': '',
      'allow_random_init': False, 'dropout_rate': 0.0, 'label_smoothing': 0.0}
  with pytest.raises(ValueError, match=r'config\.model\.dropout_rate must be in \[0, 1\)'):
    ImageClassifier(num_classes=3, dropout_rate=1.0)


def test_forward_is_pooled_features_times_the_classifier():
  model = ImageClassifier(num_classes=4, backbone_kwargs={'widths': (8, 8, 8, 8)})
  images = jax.random.randint(jax.random.key(0), (2, 32, 32, 3), 0, 256).astype(jnp.uint8)
  variables = model.init(jax.random.key(1), images)
  out = model.apply(variables, images)
  bb = backbones.of(model)
  v = {k: c['backbone'] for k, c in variables.items()}
  fmap = np.asarray(bb.apply(v, images)['features']['conv4'], np.float64)
  pooled = fmap.mean(axis=(1, 2))
  kernel = np.asarray(variables['params']['classifier']['kernel'], np.float64)
  bias = np.asarray(variables['params']['classifier']['bias'], np.float64)
  np.testing.assert_allclose(np.asarray(out['features']), pooled, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out['logits']), pooled @ kernel + bias, rtol=1e-5,
                             atol=1e-5)


@pytest.mark.slow
def test_exported_backbone_loads_into_another_method(make_config, tmp_path, one_device_mesh):
  config = make_config('classifier', backbone_kwargs={'widths': (8, 16, 16, 16)})
  run = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, run, mesh=one_device_mesh, log=lambda m: None)
  out = str(tmp_path / 'weights')
  assert pretrained.main(['export', '--workdir', run, '--out', out]) == 0
  with open(os.path.join(out, 'source.json')) as f:
    info = json.load(f)
  assert info['arch'] == 'small_cnn' and info['kwargs'] == {'widths': [8, 16, 16, 16]}
  assert pretrained.prep_lib.Preprocessing.load(out) == small.OWN_PREPROCESSING
  assert pretrained.main(['export', '--workdir', run, '--out', out]) == 2  # never overwritten

  # Stream A of a B-CNN starts from the exported backbone: its params equal the run's.
  bcnn = make_config('bcnn', backbone_a_kwargs={'widths': (8, 16, 16, 16)},
                     backbone_a_pretrained=out)
  exp = experiment.setup(bcnn, mesh=one_device_mesh, log=lambda m: None)
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  [(directory, prefix)] = exp.method.pretrained(exp.config)
  assert (directory, prefix) == (out, 'backbone_a/')
  state, _ = trainer._load_into(  # pylint: disable=protected-access
      exp, state, directory, ('^(?!backbone_a/)',), prefix)
  trained = checkpoint.read_variables(run)
  for a, b in zip(jax.tree.leaves(trained['params']['backbone']),
                  jax.tree.leaves(state.params['backbone_a'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The same backbone with other constructor arguments is refused, naming both.
  wrong = make_config('bcnn', backbone_a_pretrained=out)
  with pytest.raises(ValueError, match=r"built with \{'widths': \[8, 16, 16, 16\]\}"):
    methods.get('bcnn').check_config(wrong)


def test_export_errors_are_user_errors(tmp_path, capsys):
  assert pretrained.main(['export', '--workdir', str(tmp_path), '--out', str(tmp_path / 'w')]) == 2
  assert 'config.json does not exist' in capsys.readouterr().err
  (tmp_path / 'config.json').write_text(json.dumps({'model': {'backbone_a': 'small_cnn'}}))
  assert pretrained.main(['export', '--workdir', str(tmp_path), '--out', str(tmp_path / 'w')]) == 2
  assert "no backbone field 'backbone'" in capsys.readouterr().err


def test_cam_averages_to_the_logit():
  """The class activation map of the predicted class: its mean over the grid + bias = the logit."""
  model = ImageClassifier(num_classes=5, backbone_kwargs={'widths': (8, 8, 8, 8)})
  images = jax.random.randint(jax.random.key(2), (3, 32, 32, 3), 0, 256).astype(jnp.uint8)
  variables = model.init(jax.random.key(3), images)
  out = model.apply(variables, images)
  pred = np.argmax(np.asarray(out['logits']), -1)
  bias = np.asarray(variables['params']['classifier']['bias'])
  np.testing.assert_allclose(np.asarray(out['cam']).mean(axis=(1, 2)) + bias[pred],
                             np.asarray(out['logits'])[np.arange(3), pred], rtol=1e-4, atol=1e-5)
