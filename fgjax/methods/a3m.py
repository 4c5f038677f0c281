"""a3m: Attribute-Aware Attention Model (Han, Guo, Zhang & Zhu, ACM MM 2018); the model and its
settings (`config.model` = the fields of `A3M`) are in fgjax/models/a3m.py.

Loss (eq. 11): L = L_add + alpha L_cat + beta (1/K) sum_k L_k, with (`VARIANT_DEFAULTS`)
- 'paper': alpha = beta = 0.5 (the module's defaults);
- 'official_code': alpha = 0.2 and 0.5/K per attribute (= beta 0.5 on the mean).
A variant's values are written into config.model when the config is made (`a3m_recipe`,
`variant_model_config`; the a3m config files' argument `:variant=official_code`), so config.json
records what ran. Ablations: 'baseline1' trains only L_cat (the category branch is the whole
model); 'no_attr_label' drops the L_k terms (beta = 0); `attribute_field=''` (no attribute labels:
retrieval, Market-1501 without the Lin et al. annotations) also drops them.

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

from fgjax import default_config, losses
from fgjax.data import augment
from fgjax.methods.common import Method, backbone_pretrained, check_backbone
from fgjax.models.a3m import A3M, VARIANTS, split_attribute_logits
from fgjax.visualisation import panels

# The values each variant sets (`variant_model_config`). They are also what fgjax before 2026-12
# resolved its placeholder -1 to (`migrate_model_config`): change neither.
VARIANT_DEFAULTS = {
    'paper': {'alpha': 0.5, 'beta': 0.5, 'dropout_rate': 0.0, 'bn_epsilon': 1e-3,
              'bn_momentum': 0.99},
    'official_code': {'alpha': 0.2, 'beta': 0.5, 'dropout_rate': 0.5, 'bn_epsilon': 1e-3,
                      'bn_momentum': 0.99},
}


def migrate_model_config(model: dict) -> list[str]:
  """`Method.migrate_model_config`: fgjax before 2026-12 wrote -1.0 for alpha / beta /
  dropout_rate / bn_epsilon / bn_momentum, meaning "the variant's default", and resolved it when
  building the model; this writes the value that was used instead."""
  variant = model.get('variant', 'paper')
  if variant not in VARIANT_DEFAULTS:
    return []  # the model's own check names the valid variants
  messages = []
  for field, value in VARIANT_DEFAULTS[variant].items():
    if field in model and model[field] < 0:
      messages.append(f"config.model.{field}: {model[field]!r} (the variant's default in fgjax "
                      f'before 2026-12) -> {value!r}')
      model[field] = value
  return messages


def _check(config):
  """The backbone's layer at the dataset's input size and its weights (the model's own fields are
  checked by `A3M.__post_init__`)."""
  check_backbone(config, min_grid=1)


def _uses_attribute_loss(m: dict) -> bool:
  return bool(m['attribute_field']) and m['ablation'] not in ('baseline1', 'no_attr_label')


def _masked_ce(logits, labels):
  valid = labels >= 0
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), jnp.where(valid, labels, 0))
  return jnp.sum(ce * valid) / jnp.maximum(valid.sum(), 1)


def loss_fn(outputs, batch, config):
  """Eq. 11 (see the module docstring for the weights)."""
  m = config.model
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
  m = config.model
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


def attention_panels(outputs, index, config, options):
  """The attribute-guided attention: m (eq. 5 aggregated: max or mean over k; 'official_code':
  sigmoid(BN(mean_k V a_k))) and one panel per attribute group k with m_k = sigmoid(V a_k) (eq. 5;
  'official_code': the raw score V a_k, which the model only averages), titled with the
  category-guided weight s_k (eq. 7) and the predicted value of the group, named after the
  dataset's attribute groups and values where `options['metadata']` (the dataset's tfds metadata,
  passed by predict) has them (`attribute_labels`). V (L x d, the category branch's 1x1 conv
  output after [BN and] ReLU) is captured by predict (`capture`). The locations (flattened in the
  model) are laid out on the grid whose aspect is the input's."""
  m = config.model
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
  names = (attribute_labels((options or {}).get('metadata'), m['attribute_classes'])
           if m['attribute_field'] else None)  # without labels the branches name nothing
  for k in range(a.shape[0]):
    mk = scores[:, k] if official else 1 / (1 + np.exp(-scores[:, k]))
    unused = ' (unused: uniform ablation)' if uniform else ''
    value = int(np.argmax(groups[k]))
    group_name, value_names = names[k] if names else (None, None)
    predicted = (f'predicted: {value_names[value]}' if value_names else
                 f'predicted value {value}')
    out.append(panels.Panel(
        title=f'{group_name or f"attribute {k}"}\n{predicted}\n'
              f'{"V a_k" if official else "m_k = sigmoid(V a_k)"}{unused}\ns_k = {s[k]:.2f}',
        heatmap=mk.reshape(grid), colorbar_label='V a_k' if official else 'm_k'))
  return out


def attribute_labels(metadata, classes) -> list[tuple[str | None, list[str] | None]] | None:
  """(group name, value names: class j -> [j]) for each of the len(`classes`) attribute groups,
  read from a dataset's tfds `metadata`; None for a name the dataset does not give (the panels
  then fall back to the numbers), None when it gives no names at all. Known layouts:
  - cub2011: `attribute_group_names` and `attribute_group_values` (class 0 = 'none', class j =
    the group's value j - 1);
  - compcars: `attribute_names` and `attribute_class_names`;
  - Market-1501: `attribute_names` and `attribute_values`;
  - synthetic: `part_groups` and `variants` (`eye_variants` for the 'eye' group of the fgvc
    scenes)."""
  md = dict(metadata or {})
  if md.get('attribute_group_names'):
    groups = md['attribute_group_names']
    values = [['none', *v] for v in md.get('attribute_group_values') or []]
  elif md.get('attribute_names') and (md.get('attribute_class_names') or
                                      md.get('attribute_values')):
    groups = md['attribute_names']
    values = md.get('attribute_class_names') or md.get('attribute_values')
  elif md.get('part_groups'):
    groups = md['part_groups']
    values = [md.get('eye_variants') if g == 'eye' and md.get('eye_variants') else
              md.get('variants') for g in groups]
  else:
    return None
  if len(groups) != len(classes):
    return None  # another field's groups: numbers are safer than wrong names
  out = []
  for k, n in enumerate(classes):
    v = values[k] if k < len(values) and values[k] is not None else None
    out.append((str(groups[k]), [str(x) for x in v] if v is not None and len(v) >= n else None))
  return out


METHOD = Method(
    name='a3m', model=A3M, loss_fn=loss_fn, predict_fn=predict_fn, check_config=_check,
    batch_keys=batch_keys_for, pretrained=backbone_pretrained,
    description='attribute-aware attention: category + K attribute branches, attribute-guided '
                'and category-guided attention (Han et al. 2018)',
    eval_outputs=('attribute_logits',), eval_batch_keys=_eval_batch_keys,
    eval_metrics=eval_metrics, attention_panels=attention_panels,
    panel_captures=('category_conv', 'category_conv_bn'),
    migrate_model_config=migrate_model_config)


def variant_model_config(variant: str = 'paper') -> ml_collections.ConfigDict:
  """`config.model` with the module's defaults and `variant`'s values (`VARIANT_DEFAULTS`: loss
  weights alpha / beta, dropout_rate, bn_epsilon, bn_momentum)."""
  if variant not in VARIANTS:
    raise ValueError(f'a3m variant must be one of {", ".join(VARIANTS)} (config argument '
                     f':variant=...), got {variant!r}')
  m = METHOD.default_model_config()
  m.variant = variant
  m.update(VARIANT_DEFAULTS[variant])
  return m


# The official code's CUB attribute groups (class 0 = none + the group's values; sum 340), which
# are also the cub2011 builder's `attribute_groups` sizes (tests/fixtures/README.md).
CUB_ATTRIBUTE_GROUPS = (10, 16, 16, 16, 5, 16, 7, 16, 12, 16, 16, 15, 4, 16, 16, 16, 16, 6, 6, 15,
                        5, 5, 5, 16, 16, 16, 16, 5)


def a3m_recipe(c: ml_collections.ConfigDict, variant: str = 'paper') -> ml_collections.ConfigDict:
  """Han et al. 2018, section 4.1.4, on real data: ResNet-50 layer4 (ImageNet weights), d = 512,
  SGD momentum 0.9, weight decay 5e-4, lr 0.001 for 50 epochs then 0.0001 for the last 10, batch
  32, random crop + flip. `variant` ('paper' | 'official_code') selects the model reading and
  writes its loss weights, dropout and BatchNorm settings into config.model
  (`variant_model_config`). Datasets and input sizes are set by the config files."""
  c.method = 'a3m'
  c.model = variant_model_config(variant)
  c.model.backbone, c.model.layer = 'resnet50', 'layer4'
  c.dataset.resize = 'fixed'
  c.dataset.random_crop = True
  c.dataset.hflip = True
  default_config.sgd(c, 0.001, weight_decay=5e-4, schedule='step')
  c.optim.decay_epochs = (50.0,)
  c.optim.decay_factor = 0.1
  c.train.num_epochs = 60.0
  c.train.global_batch_size = 32
  c.train.log_every_steps = 50
  c.eval.batch_size = 32
  return c
