"""a3m: Attribute-Aware Attention Model (Han et al. 2018, seed 002); model in fgjax/models/a3m.py.

Loss (eq. 11): L = w_add L_add + alpha L_cat + beta (1/K) sum_k L_k, with
- 'paper': w_add = 1, alpha = beta = 0.5;
- 'official_code': w_add = 1, alpha = 0.2 and 0.5/K per attribute (= beta 0.5 on the mean).
`alpha` / `beta` / `dropout_rate` / `bn_epsilon` / `bn_momentum` < 0 mean "the variant's default"
(`resolved_model_config`). Ablations: 'baseline1' trains only L_cat (the category branch is the
whole model); 'no_attr_label' drops the L_k terms (beta = 0); `attribute_field=''` (no attribute
labels: retrieval, Market-1501 without the Lin et al. annotations) also drops them.

Attribute labels: `batch[attribute_field]` holds one class index per group (K,); entries < 0
(unknown, e.g. CompCars models without a row) are left out of that group's mean.

Evaluation (classification protocol): `eval_metrics` reports each group's attribute accuracy
(`attribute_accuracy/k`) and their mean (`attribute_accuracy_mean`) over the split.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fgjax import losses
from fgjax.data import augment
from fgjax.methods import (Method, backbone_kwargs, check_backbone_layer, check_pretrained,
                           compute_dtype, register)
from fgjax.models import backbones as backbones_lib
from fgjax.visualisation import panels

VARIANT_DEFAULTS = {
    'paper': {'alpha': 0.5, 'beta': 0.5, 'dropout_rate': 0.0, 'bn_epsilon': 1e-3,
              'bn_momentum': 0.99},
    'official_code': {'alpha': 0.2, 'beta': 0.5, 'dropout_rate': 0.5, 'bn_epsilon': 1e-3,
                      'bn_momentum': 0.99},
}


def _model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.backbone = 'small_cnn'
  m.layer = 'conv4'
  m.backbone_kwargs = ml_collections.ConfigDict()
  m.backbone_pretrained = ''  # weight directory from `python -m fgjax.pretrained convert`
  m.allow_random_init = False
  m.embed_dim = 512  # d
  m.variant = 'paper'  # 'paper' | 'official_code'
  # 'none' | 'baseline1' | 'baseline2' | 'att1' | 'att2' | 'no_attr_label' (fgjax/models/a3m.py)
  m.ablation = 'none'
  m.region_pool = 'max'  # 'max' (paper) | 'mean' over the K attribute-guided maps
  m.uniform_weight = 1.0  # the ablations' equal attention weight
  m.branch_batchnorm = False  # 'paper': BN between 1x1 conv and ReLU (the official code has one)
  # Attribute groups: the dataset field with one class index per group ('' = no attribute labels)
  # and the number of classes of each group (K = len). synthetic_parts: 3 groups x 3 variants.
  m.attribute_field = 'attributes'
  m.attribute_classes = (3, 3, 3)
  m.alpha = -1.0  # L_cat weight (< 0: variant default)
  m.beta = -1.0  # weight of the mean attribute loss (< 0: variant default)
  m.dropout_rate = -1.0
  m.bn_epsilon = -1.0
  m.bn_momentum = -1.0
  m.label_smoothing = 0.0
  return m


def resolved_model_config(config) -> dict:
  """config.model as a dict with the variant defaults filled in for fields < 0."""
  m = dict(config.model)
  for k, v in VARIANT_DEFAULTS[m['variant']].items():
    if m[k] < 0:
      m[k] = v
  return m


def _build(config, meta):
  from fgjax.models.a3m import A3M  # pylint: disable=g-import-not-at-top
  m, dtype = resolved_model_config(config), compute_dtype(config)
  backbone = backbones_lib.get_backbone(
      m['backbone'], **backbone_kwargs(config, 'backbone', 'backbone_pretrained', dtype))
  return A3M(num_classes=meta.num_classes, backbone=backbone, layer=m['layer'],
             attribute_classes=tuple(int(c) for c in m['attribute_classes']),
             embed_dim=m['embed_dim'], variant=m['variant'], ablation=m['ablation'],
             region_pool=m['region_pool'], uniform_weight=m['uniform_weight'],
             branch_batchnorm=m['branch_batchnorm'], dropout_rate=m['dropout_rate'],
             bn_epsilon=m['bn_epsilon'], bn_momentum=m['bn_momentum'], dtype=dtype)


def _check(config):
  from fgjax.models import a3m as a3m_model  # pylint: disable=g-import-not-at-top
  m = config.model
  check_backbone_layer(config, 'backbone', 'layer', 1)
  check_pretrained(config, 'backbone', 'backbone_pretrained')
  for field, valid in (('variant', a3m_model.VARIANTS), ('ablation', a3m_model.ABLATIONS),
                       ('region_pool', a3m_model.REGION_POOLS)):
    if m[field] not in valid:
      raise ValueError(f'config.model.{field} must be one of {", ".join(valid)}, got {m[field]!r}')
  if not m.attribute_classes or any(int(c) < 1 for c in m.attribute_classes):
    raise ValueError('config.model.attribute_classes must be a non-empty tuple of class counts '
                     f'>= 1 (one per attribute group), got {m.attribute_classes!r}')
  if m.embed_dim < 1:
    raise ValueError(f'config.model.embed_dim must be >= 1, got {m.embed_dim}')
  if m.attribute_field not in ('', 'attributes', 'attribute_groups', 'attribute_classes'):
    raise ValueError("config.model.attribute_field must be '' (no attribute labels) or a dataset "
                     "field with one class index per group: 'attributes' (synthetic_parts), "
                     "'attribute_groups' (cub2011), 'attribute_classes' (compcars); got "
                     f'{m.attribute_field!r}')
  if m.variant == 'official_code' and m.region_pool != 'max':
    raise ValueError("config.model.region_pool is a 'paper' option; variant='official_code' "
                     "averages the raw scores V a_k (leave region_pool='max')")


def _uses_attribute_loss(m: dict) -> bool:
  return bool(m['attribute_field']) and m['ablation'] not in ('baseline1', 'no_attr_label')


def _masked_ce(logits, labels):
  valid = labels >= 0
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), jnp.where(valid, labels, 0))
  return jnp.sum(ce * valid) / jnp.maximum(valid.sum(), 1)


def loss_fn(outputs, batch, config):
  """Eq. 11 (see the module docstring for the weights)."""
  from fgjax.models.a3m import split_attribute_logits  # pylint: disable=g-import-not-at-top
  m = resolved_model_config(config)
  labels, ls = batch['label'], m['label_smoothing']
  l_add = losses.cross_entropy(outputs['logits'], labels, ls)
  metrics = {'accuracy': losses.accuracy(outputs['logits'], labels)}
  if m['ablation'] == 'baseline1':
    return l_add, {**metrics, 'loss_category': l_add}
  l_cat = losses.cross_entropy(outputs['category_logits'], labels, ls)
  loss = l_add + m['alpha'] * l_cat
  metrics.update(loss_add=l_add, loss_category=l_cat,
                 category_accuracy=losses.accuracy(outputs['category_logits'], labels))
  if _uses_attribute_loss(m):
    if m['attribute_field'] not in batch:
      raise ValueError(f"config.model.attribute_field={m['attribute_field']!r} is not in the batch "
                       f'(fields: {sorted(batch)})')
    attrs = batch[m['attribute_field']].astype(jnp.int32)
    groups = split_attribute_logits(outputs['attribute_logits'], m['attribute_classes'])
    l_attr = jnp.mean(jnp.stack([_masked_ce(g, attrs[:, k]) for k, g in enumerate(groups)]))
    loss = loss + m['beta'] * l_attr
    metrics['loss_attributes'] = l_attr
  return loss, metrics


def predict_fn(outputs):
  keys = ('logits', 'features', 'category_features', 'category_logits', 'attribute_logits',
          'region_attention', 'attribute_scores')
  out = {k: outputs[k] for k in keys if k in outputs}
  if 'attribute_logits' not in out:  # baseline1 has no attribute branch (eval_outputs asks for it)
    out['attribute_logits'] = jnp.zeros((outputs['logits'].shape[0], 0), jnp.float32)
  return out


def eval_metrics(gathered, config) -> dict:
  """Per-group attribute accuracy over the split (labels < 0 left out), and their mean."""
  from fgjax.models.a3m import split_attribute_logits  # pylint: disable=g-import-not-at-top
  m = resolved_model_config(config)
  if m['ablation'] == 'baseline1' or not m['attribute_field']:
    return {}
  field = m['attribute_field']
  if field not in gathered or 'attribute_logits' not in gathered:
    return {}
  labels = np.asarray(gathered[field])
  groups = split_attribute_logits(np.asarray(gathered['attribute_logits']),
                                  m['attribute_classes'])
  out = {}
  for k, g in enumerate(groups):
    valid = labels[:, k] >= 0
    if valid.any():
      out[f'attribute_accuracy/{k}'] = float(np.mean(np.argmax(g[valid], -1)
                                                     == labels[valid, k]))
  if out:
    out['attribute_accuracy_mean'] = float(np.mean(list(out.values())))
  return out


def batch_keys_for(config) -> tuple[str, ...]:
  """The dataset fields a run with this config needs (for a config-dependent Method.batch_keys)."""
  field = config.model.attribute_field
  return ('image', 'label') + ((field,) if field and config.model.ablation != 'baseline1' else ())


def _eval_batch_keys(config) -> tuple[str, ...]:
  """The attribute labels, when the dataset has a field for them (config.model.attribute_field)."""
  return (config.model.attribute_field,) if config.model.attribute_field else ()


def _pretrained(config):
  return [(config.model.backbone_pretrained, 'backbone/')] if config.model.backbone_pretrained \
      else []


def attention_panels(outputs, index, config, options):
  """The attribute-guided attention: m (eq. 5 aggregated: max or mean over k; 'official_code':
  sigmoid(BN(mean_k V a_k))) and one panel per attribute group k with m_k = sigmoid(V a_k) (eq. 5;
  'official_code': the raw score V a_k, which the model only averages), titled with the
  category-guided weight s_k (eq. 7) and the predicted value of the group. V (L x d, the category
  branch's 1x1 conv output after [BN and] ReLU) is captured by predict (`capture`). The locations
  (flattened in the model) are laid out on the grid whose aspect is the input's."""
  del options
  from fgjax.models.a3m import split_attribute_logits  # pylint: disable=g-import-not-at-top
  m = resolved_model_config(config)
  if m['ablation'] == 'baseline1':
    return [panels.Panel(title='a3m ablation baseline1', note='no attribute branches:\n'
                           'no attention maps in this model')]
  hw = augment.input_hw(config.dataset)
  region = np.asarray(outputs['region_attention'][index], np.float64)
  grid = panels.grid_shape(region.shape[0], hw)
  uniform = m['ablation'] in ('baseline2', 'att2')
  official = m['variant'] == 'official_code'
  how = ('sigmoid(BN(mean_k V a_k))' if official else f'{m["region_pool"]} over k of m_k')
  out = [panels.Panel(
      title=(f'ablation {m["ablation"]}: uniform region weights' if uniform else
             f'attribute-guided attention m\n({how}, eq. 5)'),
      heatmap=region.reshape(grid), colorbar_label='m')]
  calls = outputs['intermediates']
  name = 'category_conv_bn' if (official or m['branch_batchnorm']) else 'category_conv'
  big_v = np.maximum(np.asarray(calls[name]['__call__'][0][index], np.float64), 0.0)  # (L, d)
  a = np.asarray(outputs['attribute_features'][index], np.float64)  # (K, d)
  scores = big_v @ a.T  # (L, K): V a_k
  s = np.asarray(outputs['attribute_scores'][index], np.float64)
  groups = split_attribute_logits(np.asarray(outputs['attribute_logits'][index]),
                                  m['attribute_classes'])
  for k in range(a.shape[0]):
    mk = scores[:, k] if official else 1 / (1 + np.exp(-scores[:, k]))
    unused = ' (unused: uniform ablation)' if uniform else ''
    out.append(panels.Panel(
        title=f'attribute {k}: {"V a_k" if official else "m_k = sigmoid(V a_k)"}{unused}\n'
              f's_k = {s[k]:.2f}, predicted value {int(np.argmax(groups[k]))}',
        heatmap=mk.reshape(grid), colorbar_label='V a_k' if official else 'm_k'))
  return out


register(Method(
    name='a3m', build_model=_build, loss_fn=loss_fn, predict_fn=predict_fn,
    default_model_config=_model_config, check_config=_check,
    batch_keys=batch_keys_for, pretrained=_pretrained,
    description='attribute-aware attention: category + K attribute branches, attribute-guided '
                'and category-guided attention (Han et al. 2018)',
    eval_outputs=('attribute_logits',), eval_batch_keys=_eval_batch_keys,
    eval_metrics=eval_metrics, attention_panels=attention_panels,
    panel_captures=('category_conv', 'category_conv_bn')))


# The official code's CUB attribute groups (class 0 = none + the group's values; sum 340), which
# are also the cub2011 builder's `attribute_groups` sizes (tests/fixtures/README.md).
CUB_ATTRIBUTE_GROUPS = (10, 16, 16, 16, 5, 16, 7, 16, 12, 16, 16, 15, 4, 16, 16, 16, 16, 6, 6, 15,
                        5, 5, 5, 16, 16, 16, 16, 5)


def a3m_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seed 002 section 4.1.4 on real data: ResNet-50 layer4 (ImageNet weights), d = 512, SGD
  momentum 0.9, weight decay 5e-4, lr 0.001 for 50 epochs then 0.0001 for the last 10, batch 32,
  random crop + flip. Datasets and input sizes are set by the config files."""
  c.method = 'a3m'
  c.model = _model_config()
  c.model.backbone, c.model.layer = 'resnet50', 'layer4'
  c.dataset.resize = 'fixed'
  c.dataset.random_crop = True
  c.dataset.hflip = True
  c.optim.optimizer = 'sgd'
  c.optim.learning_rate = 0.001
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'step'
  c.optim.decay_epochs = (50.0,)
  c.optim.decay_factor = 0.1
  c.train.num_epochs = 60.0
  c.train.global_batch_size = 32
  c.train.log_every_steps = 50
  c.eval.batch_size = 32
  return c
