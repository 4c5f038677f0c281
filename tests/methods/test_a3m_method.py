"""a3m method: the eq. 11 loss (paper and official-code weights, ablations, unknown attribute
labels) against a NumPy cross-entropy oracle, attribute accuracies through the classification
protocol, and config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax import experiment, methods, trainer
from fgjax.evaluation import protocols
from fgjax.methods import a3m as a3m_method

METHOD = methods.get('a3m')


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
  config = _config(make_config, variant=variant)
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
  config.model = dict(a3m_method._model_config())
  config.model['attribute_classes'] = (2, 3, 4)
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
    ('variant', 'keras', 'config.model.variant'),
    ('ablation', 'baseline3', 'config.model.ablation'),
    ('region_pool', 'sum', 'config.model.region_pool'),
    ('attribute_classes', (), 'config.model.attribute_classes'),
    ('attribute_field', 'attr', 'config.model.attribute_field'),
    ('layer', 'conv9', 'config.model.layer'),
])
def test_check_config_errors(make_config, field, value, match):
  config = make_config('a3m')
  with config.unlocked():
    config.model[field] = value
  with pytest.raises(ValueError, match=match):
    METHOD.check_config(config)


def test_resnet50_without_weights_is_refused(make_config):
  config = make_config('a3m', backbone='resnet50', layer='layer4')
  with pytest.raises(ValueError, match='backbone_pretrained'):
    METHOD.check_config(config)
