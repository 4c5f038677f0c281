"""a3m: Attribute-Aware Attention Model (Han, Guo, Zhang & Zhu, ACM MM 2018); the model and its
settings (`config.model` = the fields of `A3M`) are in fgjax/models/a3m.py.

Loss (eq. 11): L = L_add + alpha L_cat + beta (1/K) sum_k L_k, with (`VARIANT_DEFAULTS`)
- 'paper': alpha = beta = 0.5 (the module's defaults);
- 'official_code': alpha = 0.2 and 0.5/K per attribute (= beta 0.5 on the mean).
A variant's values are written into config.model when the config is made (`a3m_recipe`,
`variant_model_config`; the a3m config files' argument `:variant=official_code`), so config.json
records what ran. Ablations: 'baseline1' trains only L_cat (the category branch is the whole
model); 'no_attr_label' drops the L_k terms (beta = 0); `attribute_field=''` (no attribute labels:
retrieval) also drops them.

Attribute labels: `batch[attribute_field]` holds one class index per group (K,), or columns that
`attribute_columns` maps to the groups (`fgjax.models.a3m_attributes`: Market-1501's 27 columns ->
12 groups); entries < 0 (unknown, e.g. CompCars models without a row) are left out of that
group's mean. `check_config` checks that the groups fit the dataset's field (number of columns,
each group's class count against the values its column takes) before anything is compiled.

Evaluation (classification protocol): `eval_metrics` reports each group's attribute accuracy
(`attribute_accuracy/k`) and their mean (`attribute_accuracy_mean`) over the split, and two
diagnostics of the attention (`attention_diagnostics`; `diagnose` warns when they show it inert).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fgjax import default_config, losses
from fgjax.data import augment, datasets
from fgjax.methods.common import Method, backbone_pretrained, check_backbone
from fgjax.models import a3m_attributes
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


# The paper variant's reading fgjax used before 2026-12 (`Method.readings_before`).
READINGS_BEFORE = {'attention_norm': 'none'}


def migrate_model_config(model: dict) -> list[str]:
  """`Method.migrate_model_config`: fgjax before 2026-12 wrote -1.0 for alpha / beta /
  dropout_rate / bn_epsilon / bn_momentum, meaning "the variant's default", and resolved it when
  building the model; this writes the value that was used instead. A config.json without
  `attention_norm` (older than the field) ran the paper variant's sigmoids without a
  normalisation: it gets 'none' ('official_code' had its BatchNorms and keeps the default)."""
  variant = model.get('variant', 'paper')
  if variant not in VARIANT_DEFAULTS:
    return []  # the model's own check names the valid variants
  messages = []
  if 'attention_norm' not in model and variant == 'paper':
    model.update(READINGS_BEFORE)
    messages.append("config.model.attention_norm: absent (fgjax before the field: no "
                    "normalisation before the attention sigmoids) -> 'none'")
  for field, value in VARIANT_DEFAULTS[variant].items():
    if field in model and model[field] < 0:
      messages.append(f"config.model.{field}: {model[field]!r} (the variant's default in fgjax "
                      f'before 2026-12) -> {value!r}')
      model[field] = value
  return messages


def _check(config):
  """The backbone's layer at the dataset's input size and its weights, and that the attribute
  groups fit the dataset's attribute field (the model's own fields are checked by
  `A3M.__post_init__`)."""
  check_backbone(config, min_grid=1)
  check_attribute_groups(config)


def check_attribute_groups(config, info=None) -> None:
  """config.model.attribute_classes / attribute_columns fit the dataset field
  config.model.attribute_field (`a3m_attributes.check_fit`): its number of columns from the
  dataset's features, the values of each column from its metadata (where the builder records them;
  cub2011 and compcars record theirs when prepared). `info`: the dataset's tfds DatasetInfo
  (default: its builder's, read without preparing the dataset)."""
  m = config.model
  if not _uses_attribute_loss(m):
    return
  info = info if info is not None else datasets.make_builder(config.dataset).info
  field = m['attribute_field']
  if field not in info.features:
    return  # experiment.setup names the fields the dataset lacks
  shape = tuple(info.features[field].shape)
  num_columns = shape[0] if len(shape) == 1 else 1
  counts = a3m_attributes.value_counts(info.metadata, field, num_columns)
  a3m_attributes.check_fit(tuple(m['attribute_classes']), tuple(m['attribute_columns']), field,
                           num_columns, counts, config.dataset.name)


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
    attrs = a3m_attributes.attribute_targets(batch[m['attribute_field']].astype(jnp.int32),
                                             m['attribute_columns'], m['attribute_classes'])
    groups = split_attribute_logits(outputs['attribute_logits'], m['attribute_classes'])
    l_attr = jnp.mean(jnp.stack([_masked_ce(g, attrs[:, k]) for k, g in enumerate(groups)]))
    loss = loss + m['beta'] * l_attr
    metrics['loss_attributes'] = l_attr
  return loss, metrics


def predict_fn(outputs):
  keys = ('logits', 'features', 'category_features', 'category_logits', 'attribute_logits',
          'region_attention', 'attribute_scores')
  out = {k: outputs[k] for k in keys if k in outputs}
  for k in ('attribute_logits', 'region_attention', 'attribute_scores'):
    if k not in out:  # baseline1 has no attribute branch (eval_outputs asks for them)
      out[k] = jnp.zeros((outputs['logits'].shape[0], 0), jnp.float32)
  return out


# Thresholds of `diagnose`. A literal paper-variant run (sigmoids of non-negative scores) ends with
# m in [0.9974, 1.0] on every image (spread ~1e-3) and gates at 0.9999: the attentions are the
# equal weights of Baseline-2. Below 0.01 the weights move by about 1% of their [0, 1] range:
# f_region is average pooling of V (Att-2) and f_attr the mean of the a_k (Att-1) to within that.
ATTENTION_SPREAD_MIN = 0.01
GATE_RANGE_MIN = 0.01
GATE_PERCENTILES = (1.0, 99.0)  # the robust range of `a3m_gate_range`


def attention_diagnostics(gathered, ablation: str) -> dict:
  """`a3m_attention_spread`: std over the L locations of the attribute-guided region attention m
  (eq. 5, the weights of the category branch's locations), averaged over the images;
  `a3m_gate_range`: for each attribute k, the 99th minus the 1st percentile over the images of its
  category-guided gate s_k (eq. 7), averaged over the K attributes. Each only where the ablation
  computes that attention."""
  out = {}
  m = gathered.get('region_attention')
  if ablation not in ('baseline1', 'baseline2', 'att2') and m is not None and np.size(m):
    out['a3m_attention_spread'] = float(np.asarray(m, np.float64).std(axis=1).mean())
  s = gathered.get('attribute_scores')
  if ablation not in ('baseline1', 'baseline2', 'att1') and s is not None and np.size(s):
    lo, hi = np.percentile(np.asarray(s, np.float64), GATE_PERCENTILES, axis=0)
    out['a3m_gate_range'] = float((hi - lo).mean())
  return out


def diagnose(metrics: dict) -> list[str]:
  """`Method.diagnose`: a flat region attention or stuck gates (`attention_diagnostics`)."""
  out = []
  spread = metrics.get('a3m_attention_spread')
  if spread is not None and spread < ATTENTION_SPREAD_MIN:
    out.append(f'a3m_attention_spread = {spread:.4g} < {ATTENTION_SPREAD_MIN}: the '
               'attribute-guided attention m is flat over the locations of every image, so '
               'f_region is average pooling and this A3M computes what Baseline-2 / Att-2 compute '
               "(the literal paper variant saturates; config.model.attention_norm='batchnorm' "
               'avoids it)')
  gates = metrics.get('a3m_gate_range')
  if gates is not None and gates < GATE_RANGE_MIN:
    out.append(f'a3m_gate_range = {gates:.4g} < {GATE_RANGE_MIN}: the category-guided gates s_k '
               'are stuck (the same on every image), so f_attr is a fixed mix of the attribute '
               'features and this A3M computes what Baseline-2 / Att-1 compute')
  return out


def eval_metrics(gathered, config) -> dict:
  """Per-group attribute accuracy over the split (labels < 0 left out), their mean, and the
  attention diagnostics (`attention_diagnostics`)."""
  m = config.model
  out = attention_diagnostics(gathered, m['ablation'])
  if m['ablation'] == 'baseline1' or not m['attribute_field']:
    return out
  field = m['attribute_field']
  if field not in gathered or 'attribute_logits' not in gathered:
    return out
  labels = a3m_attributes.attribute_targets(np.asarray(gathered[field]),
                                            m.get('attribute_columns', ()),
                                            m['attribute_classes'])
  groups = split_attribute_logits(np.asarray(gathered['attribute_logits']),
                                  m['attribute_classes'])
  acc = {}
  for k, g in enumerate(groups):
    valid = labels[:, k] >= 0
    if valid.any():
      acc[f'attribute_accuracy/{k}'] = float(np.mean(np.argmax(g[valid], -1)
                                                     == labels[valid, k]))
  if acc:
    acc['attribute_accuracy_mean'] = float(np.mean(list(acc.values())))
  return {**acc, **out}


def batch_keys_for(config) -> tuple[str, ...]:
  """The dataset fields a run with this config needs (for a config-dependent Method.batch_keys)."""
  field = config.model.attribute_field
  return ('image', 'label') + ((field,) if field and config.model.ablation != 'baseline1' else ())


def _eval_batch_keys(config) -> tuple[str, ...]:
  """The attribute labels, when the dataset has a field for them (config.model.attribute_field)."""
  return (config.model.attribute_field,) if config.model.attribute_field else ()


def attention_panels(outputs, index, config, options):
  """The attribute-guided attention: m (eq. 5 aggregated: max or mean over k; 'official_code':
  sigmoid(BN(mean_k V a_k))) and one panel per attribute group k with its map m_k (eq. 5, the
  model's `attribute_maps`; 'official_code': the raw score V a_k, which the model only averages),
  titled with the category-guided weight s_k (eq. 7) and the predicted value of the group, named
  after the dataset's attribute groups and values where `options['metadata']` (the dataset's tfds
  metadata, passed by predict) has them (`attribute_labels`). In the uniform ablations (no maps
  computed) m_k = sigmoid(V a_k) is drawn from V (L x d, the category branch's 1x1 conv output
  after [BN and] ReLU, captured by predict: `panel_captures`). The locations (flattened in the
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
  maps, label = _attribute_maps(outputs, index, m)
  s = np.asarray(outputs['attribute_scores'][index], np.float64)
  groups = split_attribute_logits(np.asarray(outputs['attribute_logits'][index]),
                                  m['attribute_classes'])
  names = (attribute_labels((options or {}).get('metadata'), m['attribute_classes'],
                            m.get('attribute_columns', ()))
           if m['attribute_field'] else None)  # without labels the branches name nothing
  for k in range(maps.shape[0]):
    unused = ' (unused: uniform ablation)' if uniform else ''
    value = int(np.argmax(groups[k]))
    group_name, value_names = names[k] if names else (None, None)
    predicted = (f'predicted: {value_names[value]}' if value_names else
                 f'predicted value {value}')
    out.append(panels.Panel(
        title=f'{group_name or f"attribute {k}"}\n{predicted}\n{label}{unused}\ns_k = {s[k]:.2f}',
        heatmap=maps[k].reshape(grid), colorbar_label='V a_k' if official else 'm_k'))
  return out


def _attribute_maps(outputs, index, m) -> tuple[np.ndarray, str]:
  """(K, L) per-attribute maps of image `index` and their formula: the model's `attribute_maps`,
  else (uniform ablations) sigmoid(V a_k) from the captured V."""
  if m['variant'] == 'official_code':
    label = 'V a_k'
  elif 'attribute_maps' in outputs and m.get('attention_norm', 'none') == 'batchnorm':
    label = 'm_k = sigmoid(BN(V a_k))'
  else:
    label = 'm_k = sigmoid(V a_k)'
  if 'attribute_maps' in outputs:
    return np.asarray(outputs['attribute_maps'][index], np.float64), label
  calls = outputs['intermediates']
  official = m['variant'] == 'official_code'
  name = 'category_conv_bn' if (official or m['branch_batchnorm']) else 'category_conv'
  big_v = np.maximum(np.asarray(calls[name]['__call__'][0][index], np.float64), 0.0)  # (L, d)
  a = np.asarray(outputs['attribute_features'][index], np.float64)  # (K, d)
  scores = a @ big_v.T  # (K, L): V a_k
  return (scores if official else 1 / (1 + np.exp(-scores))), label


def attribute_labels(metadata, classes,
                     columns=()) -> list[tuple[str | None, list[str] | None]] | None:
  """(group name, value names: class j -> [j]) for each of the len(`classes`) attribute groups,
  read from a dataset's tfds `metadata`; None for a name the dataset does not give (the panels
  then fall back to the numbers), None when it gives no names at all. Groups made of dataset
  columns (`columns`, config.model.attribute_columns) are named by `a3m_attributes.group_names`.
  Known layouts:
  - cub2011: `attribute_group_names` and `attribute_group_values` (class 0 = 'none', class j =
    the group's value j - 1);
  - compcars: `attribute_names` and `attribute_class_names`;
  - Market-1501: `attribute_names` and `attribute_values`;
  - synthetic: `part_groups` and `variants` (`eye_variants` for the 'eye' group of the fgvc
    scenes)."""
  md = dict(metadata or {})
  if columns:
    named = a3m_attributes.group_names(md, columns)
    groups, values = zip(*named) if named else ((), ())
  elif md.get('attribute_group_names'):
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
  if not groups or len(groups) != len(classes):
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
    eval_outputs=('attribute_logits', 'region_attention', 'attribute_scores'),
    eval_batch_keys=_eval_batch_keys, eval_metrics=eval_metrics,
    attention_panels=attention_panels, panel_captures=('category_conv', 'category_conv_bn'),
    migrate_model_config=migrate_model_config, diagnose=diagnose,
    readings_before=READINGS_BEFORE)


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
