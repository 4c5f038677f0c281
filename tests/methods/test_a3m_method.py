"""a3m method: the eq. 11 loss (paper and official-code weights, ablations, unknown attribute
labels) against a NumPy cross-entropy oracle, attribute accuracies through the classification
protocol, config checks, the variant argument of the config files and the migration of
config.json files that hold the old "variant's default" placeholders."""

import dataclasses
import importlib.util
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax import experiment, methods, trainer
from fgjax.evaluation import protocols
from fgjax.methods import a3m as a3m_method
from fgjax.models.a3m import A3M

METHOD = methods.get('a3m')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  return -logp[np.arange(len(labels)), labels]


def _outputs_and_batch(seed=0, n=6, classes=5, attrs=(2, 3, 4)):
  rng = np.random.default_rng(seed)
  outputs = {'logits': rng.normal(size=(n, classes)),
             'category_logits': rng.normal(size=(n, classes)),
             'attribute_logits': rng.normal(size=(n, sum(attrs)))}
  batch = {'label': rng.integers(0, classes, n),
           'attributes': np.stack([rng.integers(0, c, n) for c in attrs], 1)}
  return outputs, batch


def _config(make_config, **model):
  config = make_config('a3m', attribute_classes=(2, 3, 4), **model)
  return config


@pytest.mark.parametrize('variant,alpha,beta', [('paper', 0.5, 0.5), ('official_code', 0.2, 0.5)])
def test_loss_is_eq11_with_variant_weights(make_config, variant, alpha, beta):
  outputs, batch = _outputs_and_batch()
  batch['attributes'][1, 2] = -1  # unknown: left out of group 2's mean
  config = _config(make_config, variant=variant, **a3m_method.VARIANT_DEFAULTS[variant])
  loss, m = METHOD.loss_fn(jax.tree.map(jnp.asarray, outputs), batch, config)
  o = [0, 2, 5, 9]
  attr_losses = []
  for k in range(3):
    valid = batch['attributes'][:, k] >= 0
    attr_losses.append(_ce(outputs['attribute_logits'][valid, o[k]:o[k + 1]],
                           batch['attributes'][valid, k]).mean())
  want = (_ce(outputs['logits'], batch['label']).mean()
          + alpha * _ce(outputs['category_logits'], batch['label']).mean()
          + beta * np.mean(attr_losses))
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(m['loss_attributes']) == pytest.approx(np.mean(attr_losses), rel=1e-5)


def test_ablation_losses(make_config):
  outputs, batch = _outputs_and_batch(1)
  o = jax.tree.map(jnp.asarray, outputs)
  l_add = _ce(outputs['logits'], batch['label']).mean()
  l_cat = _ce(outputs['category_logits'], batch['label']).mean()
  no_label, _ = METHOD.loss_fn(o, batch, _config(make_config, ablation='no_attr_label'))
  assert float(no_label) == pytest.approx(l_add + 0.5 * l_cat, rel=1e-5)
  unlabelled, _ = METHOD.loss_fn(o, {'label': batch['label']},
                                 _config(make_config, attribute_field=''))
  assert float(unlabelled) == pytest.approx(l_add + 0.5 * l_cat, rel=1e-5)
  custom, _ = METHOD.loss_fn(o, batch, _config(make_config, alpha=0.0, beta=0.0))
  assert float(custom) == pytest.approx(l_add, rel=1e-5)
  b1_out = {'logits': o['category_logits'], 'category_logits': o['category_logits']}
  b1, _ = METHOD.loss_fn(b1_out, batch, _config(make_config, ablation='baseline1'))
  assert float(b1) == pytest.approx(l_cat, rel=1e-5)


@pytest.mark.slow  # two compilations of a forward+backward (~20 s idle, 60 s on a loaded CPU)
def test_no_attr_label_gives_attribute_classifiers_no_gradient(make_config, one_device_mesh):
  grads = {}
  for ablation in ('none', 'no_attr_label'):
    config = make_config('a3m', ablation=ablation, embed_dim=16)
    exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
    variables = jax.jit(lambda: exp.model.init(jax.random.key(0), exp.dummy_images()))()
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 255, (4, 32, 32, 3)), jnp.uint8)
    batch = {'label': jnp.asarray([0, 1, 2, 3]),
             'attributes': jnp.asarray(rng.integers(0, 3, (4, 3)))}

    def loss(params, exp=exp, variables=variables, images=images, batch=batch, config=config):
      out = exp.model.apply({**variables, 'params': params}, images, train=False)
      return exp.method.loss_fn(out, batch, config)[0]

    grads[ablation] = jax.jit(jax.grad(loss))(variables['params'])
  g = grads['no_attr_label']['attribute0_classifier']['kernel']
  assert np.all(np.asarray(g) == 0)
  assert np.abs(np.asarray(grads['none']['attribute0_classifier']['kernel'])).max() > 0
  # The attribute branch itself still learns (through the attention), without labels.
  assert np.abs(np.asarray(grads['no_attr_label']['attribute0_conv']['kernel'])).max() > 0


def test_eval_metrics_attribute_accuracy():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(10, 9))
  labels = np.stack([rng.integers(0, c, 10) for c in (2, 3, 4)], 1)
  labels[0, 1] = -1
  config = type('C', (), {})()
  config.model = METHOD.default_model_config()
  config.model.attribute_classes = (2, 3, 4)
  got = a3m_method.eval_metrics({'attribute_logits': logits, 'attributes': labels}, config)
  o = [0, 2, 5, 9]
  for k in range(3):
    valid = labels[:, k] >= 0
    acc = np.mean([np.argmax(logits[i, o[k]:o[k + 1]]) == labels[i, k]
                   for i in range(10) if valid[i]])
    assert got[f'attribute_accuracy/{k}'] == pytest.approx(acc)
  assert got['attribute_accuracy_mean'] == pytest.approx(np.mean([got[f'attribute_accuracy/{k}']
                                                                  for k in range(3)]))


def test_classification_protocol_reports_attribute_accuracy(make_config, one_device_mesh):
  config = make_config('a3m', embed_dim=16)
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  result = protocols.evaluate(exp, state)
  for k in range(3):
    assert 0 <= result[f'attribute_accuracy/{k}'] <= 1
  assert 'attribute_accuracy_mean' in result and result['num_examples'] > 0


@pytest.mark.parametrize('field,value,match', [
    ('variant', 'keras', 'config.model.variant must be one of paper, official_code'),
    ('ablation', 'baseline3', 'config.model.ablation'),
    ('region_pool', 'sum', 'config.model.region_pool'),
    ('attribute_classes', (), 'config.model.attribute_classes'),
    ('attribute_field', 'attr', 'config.model.attribute_field'),
    ('embed_dim', 0, 'config.model.embed_dim'),
    ('alpha', -1.0, 'config.model.alpha must be >= 0'),
    ('beta', -1.0, 'config.model.beta must be >= 0'),
    ('dropout_rate', -1.0, 'config.model.dropout_rate must be >= 0'),
    ('dropout_rate', 1.0, 'config.model.dropout_rate must be < 1'),
    ('bn_epsilon', -1.0, 'config.model.bn_epsilon must be >= 0'),
    ('bn_momentum', -1.0, 'config.model.bn_momentum must be >= 0'),
])
def test_model_field_errors(make_config, field, value, match):
  """Checks of the model's own fields (A3M.__post_init__): raised when the model is built."""
  config = make_config('a3m')
  with config.unlocked():
    config.model[field] = value
  with pytest.raises(ValueError, match=match):
    METHOD.build_model(config, types.SimpleNamespace(num_classes=5))


def test_official_code_needs_max_region_pool(make_config):
  config = make_config('a3m', variant='official_code', region_pool='mean')
  with pytest.raises(ValueError, match='config.model.region_pool is a .paper. option'):
    METHOD.build_model(config, types.SimpleNamespace(num_classes=5))


def test_check_config_errors(make_config):
  config = make_config('a3m', layer='conv9')
  with pytest.raises(ValueError, match='config.model.layer'):
    METHOD.check_config(config)


def test_resnet50_without_weights_is_refused(make_config):
  config = make_config('a3m', backbone='resnet50', layer='layer4')
  with pytest.raises(ValueError, match='backbone_pretrained'):
    METHOD.check_config(config)


def test_paper_values_are_the_model_defaults():
  fields = {f.name: f.default for f in dataclasses.fields(A3M)}
  for field, value in a3m_method.VARIANT_DEFAULTS['paper'].items():
    assert fields[field] == value, field
  assert dict(a3m_method.variant_model_config('paper')) == dict(METHOD.default_model_config())


def _load_config(name, arg=None):
  path = os.path.join(ROOT, 'configs', name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize('name', ['cub_a3m.py', 'synthetic_a3m.py'])
def test_variant_argument_writes_the_variants_values(name):
  paper, official = _load_config(name), _load_config(name, 'variant=official_code')
  assert paper.model.variant == 'paper' and official.model.variant == 'official_code'
  for variant, config in (('paper', paper), ('official_code', official)):
    for field, value in a3m_method.VARIANT_DEFAULTS[variant].items():
      assert config.model[field] == value, (variant, field)
  assert official.model.alpha == 0.2 and official.model.dropout_rate == 0.5
  # Nothing else changes.
  rest = lambda c: {k: v for k, v in c.model.items()  # noqa: E731
                    if k not in a3m_method.VARIANT_DEFAULTS['paper'] and k != 'variant'}
  assert rest(paper) == rest(official)
  with pytest.raises(ValueError, match='paper, official_code'):
    _load_config(name, 'variant=keras')


def test_migrate_model_config_resolves_the_old_placeholders():
  old = {'variant': 'official_code', 'alpha': -1.0, 'beta': -1.0, 'dropout_rate': -1.0,
         'bn_epsilon': 1e-5, 'bn_momentum': -1.0, 'embed_dim': 512}
  messages = a3m_method.migrate_model_config(old)
  assert old == {'variant': 'official_code', 'alpha': 0.2, 'beta': 0.5, 'dropout_rate': 0.5,
                 'bn_epsilon': 1e-5, 'bn_momentum': 0.99, 'embed_dim': 512}
  assert messages == [
      "config.model.alpha: -1.0 (the variant's default in fgjax before 2026-12) -> 0.2",
      "config.model.beta: -1.0 (the variant's default in fgjax before 2026-12) -> 0.5",
      "config.model.dropout_rate: -1.0 (the variant's default in fgjax before 2026-12) -> 0.5",
      "config.model.bn_momentum: -1.0 (the variant's default in fgjax before 2026-12) -> 0.99"]
  # (attention_norm given: its own migration is tested in tests/methods/test_a3m_readings.py.)
  paper = {'variant': 'paper', 'alpha': -1.0, 'beta': 0.3, 'dropout_rate': -1.0,
           'bn_epsilon': -1.0, 'bn_momentum': -1.0, 'attention_norm': 'none'}
  assert len(a3m_method.migrate_model_config(paper)) == 4
  assert paper == {'variant': 'paper', 'alpha': 0.5, 'beta': 0.3, 'dropout_rate': 0.0,
                   'bn_epsilon': 1e-3, 'bn_momentum': 0.99, 'attention_norm': 'none'}
  assert a3m_method.migrate_model_config(paper) == []  # already migrated: nothing to do
  assert METHOD.migrate_model_config is a3m_method.migrate_model_config


def test_build_model_from_a_backbone_name_keeps_the_parameter_names(make_config):
  """`backbone` names a registered backbone: built by the model under the scope `backbone` (as
  the modules before 2026-12 received it), so old checkpoints and '^backbone/' regexes match."""
  # attention_norm='none': the reading those modules had (the default's attn_bn / attr_scores_bn
  # are checked in tests/methods/test_a3m_readings.py).
  config = make_config('a3m', embed_dim=8, attribute_classes=(2, 3), branch_batchnorm=True,
                       attention_norm='none')
  model = METHOD.build_model(config, types.SimpleNamespace(num_classes=4))
  images = jnp.zeros((2, 32, 32, 3), jnp.uint8)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images))
  assert sorted(shapes['params']) == [
      'attribute0_classifier', 'attribute0_conv', 'attribute0_conv_bn', 'attribute1_classifier',
      'attribute1_conv', 'attribute1_conv_bn', 'backbone', 'category_classifier', 'category_conv',
      'category_conv_bn', 'classifier']
  assert shapes['params']['category_conv']['kernel'].shape[1] == 8
