"""A3M: Attribute-Aware Attention Model (Han, Guo, Zhang & Zhu, ACM MM 2018, "Attribute-Aware
Attention Model for Fine-grained Representation Learning"), as a Flax Linen module.

Two readings of the model live here, chosen by `variant`:

`variant='paper'` (eq. 1-11 of the paper; `attention_norm='none'` is the literal reading, the
default `attention_norm='batchnorm'` adds a BatchNorm before each attention sigmoid, see below):
- shared CNN map (backbone `layer`, L = h*w locations, channels C);
- category branch: 1x1 conv C -> d (+ ReLU; optional BatchNorm) gives V (L x d); global average
  pooling gives v (`category_features`); classifier W^(c) (eq. 1) -> `category_logits`;
- K attribute branches, each its own 1x1 conv C -> d (+ ReLU) and global average pooling -> a_k
  ("a convolution layer ... and a pooling layer": the pooling type is not stated; average, as in
  the category branch and the authors' code); classifier W^(k) (eq. 3) -> `attribute_logits`
  (the K logit vectors concatenated, group k at offsets sum(C_<k));
- attribute-guided attention (eq. 5-6): m_k = sigmoid(N_m(V^T a_k)), m = max_k m_k
  (`region_pool='max'`; 'mean' averages instead; the K maps are `attribute_maps`),
  f_region = V m / L;
- category-guided attention (eq. 7-8): s = sigmoid(N_s(A^T v)), f_attr = A s / K;
- f_final = f_region + f_attr (`features`), classifier W (eq. 9) -> `logits`.
  The losses (eq. 2, 4, 10, 11) are in fgjax/methods/a3m.py.
  N_m, N_s (`attention_norm`): V and a_k follow a ReLU, so V^T a_k >= 0 and A^T v >= 0 and the
  literal sigmoids lie in [0.5, 1]; as the features grow in training they saturate at 1 (a
  15-epoch synthetic run: m in [0.9974, 1.0] on every image, median s 0.9999) and both attentions
  become the equal weights of Baseline-2. 'batchnorm' (default): N_m is a per-location BatchNorm
  of the scores (feature axis L, statistics over the batch and the K maps; `attn_bn`) and N_s a
  per-attribute BatchNorm (feature axis K; `attr_scores_bn`), as the authors' code normalises
  before its sigmoids; 'none': the identity (the paper's text).

`variant='official_code'`: iamhankai/attribute-aware-attention `cub_demo.py` (commit 4b4cf87), as
described in tests/fixtures/README.md (`a3m_official_head.npz`): every branch is conv -> BN ->
ReLU, its pooled vector -> BN -> ReLU -> Dropout; e = mean_k V a_k, m = sigmoid(BN_L(e)) with a
per-location BN; f_region = BN(V^T m / L); s = sigmoid(BN(A^T v)); f_attr = BN(R s / K) where R is
the row-major reshape of the (K, d) stack to (d, K) (NOT the matrix whose columns are the a_k);
h = ReLU(concat[f_attr, f_region]) (`features`, 2d) -> Dropout -> classifier. BN eps 1e-3,
momentum 0.99 (Keras), dropout 0.5: the fields `bn_epsilon`, `bn_momentum`, `dropout_rate`, whose
defaults are the paper's; the a3m configs' argument `:variant=official_code` writes the code's.

Ablations (`ablation`, paper section 4.2 / Figure 5):
- 'none': the full model;
- 'baseline1': no attributes: backbone -> category branch -> classifier; `logits` are the category
  logits and `features` is v (no attribute branch, no attention parameters);
- 'baseline2': both attentions replaced by equal weights (`uniform_weight`, default 1, so that
  f_region = mean_l V = v and f_attr = mean_k a_k: "average pooling" / "fused via averaging");
- 'att1': category-guided weights s equal (attribute features averaged), region attention kept;
- 'att2': attribute-guided weights m equal (regional features average pooled), s kept;
- 'no_attr_label' ("w/o attr-label"): the full graph; only the loss drops the L_k terms.

Parameter names: `backbone`, `category_conv`, `category_conv_bn`, `category_pool_bn`,
`category_classifier`, `attribute{k}_conv`, `attribute{k}_conv_bn`, `attribute{k}_pool_bn`,
`attribute{k}_classifier`, `attn_bn`, `region_fea_bn`, `attr_scores_bn`, `attr_fea_bn`, `classifier`
(the `*_bn` ones only where a BatchNorm is used; the paper variant's `attention_norm='batchnorm'`
has `attn_bn` and `attr_scores_bn`, with the shapes of the official code's). The official code's
`p0` is `category`, its `attr{k}` is `attribute{k}` and its `final_dense` is `classifier`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgjax.models import a3m_attributes, backbones as backbones_lib, fields

VARIANTS = ('paper', 'official_code')
ABLATIONS = ('none', 'baseline1', 'baseline2', 'att1', 'att2', 'no_attr_label')
REGION_POOLS = ('max', 'mean')
ATTRIBUTE_FIELDS = ('', 'attributes', 'attribute_groups', 'attribute_classes')
ATTENTION_NORMS = ('batchnorm', 'none')


class A3M(backbones_lib.BackboneFields, kw_only=True):
  """The A3M model; its fields are the method's settings (`config.model`, fgjax/methods/a3m.py).

  Attributes:
    num_classes: category classes (C^(category)); the dataset's.
    backbone: the shared CNN: a registered backbone name (`fgjax.models.backbones`), or a module
      instance (tests, benchmarks), bound under the name `backbone`; `apply` returns
      {'features': {layer: NHWC map}}.
    layer: key of the backbone's feature dict used as the shared CNN output.
    backbone_kwargs: constructor arguments of the backbone (e.g. widths).
    backbone_pretrained: weight directory from `python -m fgjax.pretrained convert` (its input
      preprocessing comes with it; the trainer loads the weights, `Method.pretrained`).
    allow_random_init: ImageNet backbones without weights are a config error unless True (read by
      the config check, not by `__call__`).
    embed_dim: d, the width of every branch (512; 384 in the paper's retrieval setting).
    variant: 'paper' | 'official_code' (module docstring). The variant's loss weights, dropout and
      BatchNorm settings are separate fields (alpha, beta, dropout_rate, bn_epsilon, bn_momentum),
      written by the a3m configs' argument `:variant=official_code` (`a3m_recipe`); setting only
      `variant` keeps the other fields' values.
    attention_norm: 'paper' variant: the normalisation of the attention scores before their
      sigmoids (module docstring): 'batchnorm' (default; the authors' code normalises there too)
      or 'none' (the paper's eq. 5 and 7 as written, whose sigmoids of non-negative scores lie in
      [0.5, 1] and saturate). 'official_code' always has its BatchNorms (leave 'batchnorm').
    ablation: one of ABLATIONS (module docstring).
    region_pool: 'max' (paper eq. 5 text) | 'mean' over the K attribute-guided maps ('paper'
      only: 'official_code' averages the raw scores V a_k and needs 'max' left as is).
    uniform_weight: the ablations' equal attention weight (1: f_region = mean_l V = v and
      f_attr = mean_k a_k).
    branch_batchnorm: 'paper' variant: BatchNorm between each 1x1 conv and its ReLU (the paper
      says nothing; the official code has one). 'official_code' always has it.
    attribute_field: the dataset field of the attribute labels: one class index per group, or
      the columns that `attribute_columns` groups (entries < 0: unknown, left out of the loss);
      one of ATTRIBUTE_FIELDS: 'attributes' (synthetic_parts; market1501: Lin et al.'s 27
      columns), 'attribute_groups' (cub2011), 'attribute_classes' (compcars), or '' for no labels
      (retrieval, the "w/o attr-label" ablation; the L_k terms are dropped).
      Read by the loss and the evaluation, not by `__call__`.
    attribute_classes: C^(k) for each of the K attribute groups (K = len); with no attribute
      labels (retrieval, "w/o attr-label") the classifiers of the groups still exist but are not
      trained.
    attribute_columns: which columns of the attribute field make each group
      (`fgjax.models.a3m_attributes`): () = column k is group k's class index; else one tuple of
      column indices per group (one column: its value; several: one-hot binary columns, e.g.
      Market-1501's colours). Read by the loss and the evaluation, not by `__call__`.
    alpha: weight of the category loss L_cat in eq. 11 (paper 0.5; the official code 0.2). Read
      by the loss.
    beta: weight of the mean attribute loss (1/K) sum_k L_k in eq. 11 (0.5 in both readings: the
      official code weights each L_k by 0.5/K). Read by the loss.
    dropout_rate: dropout on the pooled vectors (v, a_k) and, in 'official_code', on the final
      feature (paper 0; official code 0.5); needs a 'dropout' rng in training when > 0.
    bn_epsilon, bn_momentum: the head's BatchNorms (Keras: 1e-3, 0.99; both variants).
    label_smoothing: of the category and final cross-entropies (read by the loss).
    dtype: compute dtype; params stay float32, logits are returned in float32.
  """
  num_classes: int
  embed_dim: int = 512
  variant: str = 'paper'
  attention_norm: str = 'batchnorm'
  ablation: str = 'none'
  region_pool: str = 'max'
  uniform_weight: float = 1.0
  branch_batchnorm: bool = False
  attribute_field: str = 'attributes'
  attribute_classes: Sequence[int] = (3, 3, 3)
  attribute_columns: Sequence[Sequence[int]] = ()
  alpha: float = 0.5
  beta: float = 0.5
  dropout_rate: float = 0.0
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.99
  label_smoothing: float = 0.0
  dtype: Any = jnp.float32

  def __post_init__(self):
    fields.check_choices(self, {'variant': VARIANTS, 'ablation': ABLATIONS,
                                'region_pool': REGION_POOLS, 'attention_norm': ATTENTION_NORMS})
    if self.variant == 'official_code' and self.region_pool != 'max':
      raise ValueError("config.model.region_pool is a 'paper' option; variant='official_code' "
                       "averages the raw scores V a_k (leave region_pool='max')")
    if self.variant == 'official_code' and self.attention_norm != 'batchnorm':
      raise ValueError("config.model.attention_norm is a 'paper' option; variant='official_code' "
                       "always normalises its attention scores (leave attention_norm='batchnorm')")
    if not self.attribute_classes or any(int(c) < 1 for c in self.attribute_classes):
      raise ValueError('config.model.attribute_classes must be a non-empty tuple of class counts '
                       f'>= 1 (one per attribute group), got {self.attribute_classes!r}')
    a3m_attributes.check_columns(self.attribute_columns, self.attribute_classes)
    if self.embed_dim < 1:
      raise ValueError(f'config.model.embed_dim must be >= 1, got {self.embed_dim}')
    if self.attribute_field not in ATTRIBUTE_FIELDS:
      raise ValueError("config.model.attribute_field must be '' (no attribute labels) or a "
                       "dataset field of attribute labels: 'attributes' (synthetic_parts, "
                       "market1501), 'attribute_groups' (cub2011), 'attribute_classes' "
                       f'(compcars); got {self.attribute_field!r}')
    for field in ('alpha', 'beta', 'dropout_rate', 'bn_epsilon', 'bn_momentum'):
      if getattr(self, field) < 0:
        raise ValueError(
            f'config.model.{field} must be >= 0, got {getattr(self, field)!r} (fgjax before '
            '2026-12 read -1 as "the variant\'s default"; a config file\'s `:variant=...` '
            'argument now writes the values)')
    if self.dropout_rate >= 1:
      raise ValueError(f'config.model.dropout_rate must be < 1, got {self.dropout_rate!r}')
    if self.bn_momentum > 1:
      raise ValueError(f'config.model.bn_momentum must be <= 1, got {self.bn_momentum!r}')
    super().__post_init__()

  def _bn(self, name, train):
    return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                        epsilon=self.bn_epsilon, dtype=self.dtype, name=name)

  def _attention_norm(self, name, train):
    """N_m / N_s of the paper variant (`attention_norm`): a BatchNorm of the last axis, or none."""
    return self._bn(name, train) if self.attention_norm == 'batchnorm' else (lambda z: z)

  def _branch(self, name, x, train):
    """1x1 conv -> [BN] -> ReLU -> (U: N x L x d, pooled g: N x d after [BN, ReLU,] dropout)."""
    official = self.variant == 'official_code'
    u = nn.Dense(self.embed_dim, dtype=self.dtype, name=f'{name}_conv')(x)  # 1x1 conv
    if official or self.branch_batchnorm:
      u = self._bn(f'{name}_conv_bn', train)(u)
    u = nn.relu(u)
    g = u.mean(axis=1)
    if official:
      g = nn.relu(self._bn(f'{name}_pool_bn', train)(g))
    g = nn.Dropout(self.dropout_rate, deterministic=not train)(g)
    return u, g

  @nn.compact
  def __call__(self, images, train: bool = False):
    fmap = backbones_lib.of(self)(images, train=train)['features'][self.layer]
    n, h, w, c = fmap.shape
    x = fmap.reshape(n, h * w, c).astype(self.dtype)  # x[b, l] = F[b, l // w, l % w]
    big_v, v = self._branch('category', x, train)  # V (N, L, d), v (N, d)
    category_logits = nn.Dense(self.num_classes, dtype=self.dtype,
                               name='category_classifier')(v).astype(jnp.float32)
    out = {'category_logits': category_logits, 'category_features': v}
    if self.ablation == 'baseline1':
      return {**out, 'logits': category_logits, 'features': v}

    k_count = len(self.attribute_classes)
    pooled, attr_logits = [], []
    for k, n_cls in enumerate(self.attribute_classes):
      _, a_k = self._branch(f'attribute{k}', x, train)
      pooled.append(a_k)
      attr_logits.append(nn.Dense(n_cls, dtype=self.dtype, name=f'attribute{k}_classifier')(a_k))
    a = jnp.stack(pooled, axis=1)  # A^T: (N, K, d)
    num_loc = big_v.shape[1]
    region_uniform = self.ablation in ('baseline2', 'att2')
    attr_uniform = self.ablation in ('baseline2', 'att1')
    ones = lambda shape: jnp.full(shape, self.uniform_weight, self.dtype)

    maps = {}
    if self.variant == 'paper':
      norm = self._attention_norm
      if region_uniform:
        m = ones((n, num_loc))
      else:  # eq. 5, (N, K, L); the BN's features are the L locations
        m_k = nn.sigmoid(norm('attn_bn', train)(jnp.einsum('nld,nkd->nkl', big_v, a)))
        m = m_k.max(axis=1) if self.region_pool == 'max' else m_k.mean(axis=1)
        maps['attribute_maps'] = m_k
      f_region = jnp.einsum('nld,nl->nd', big_v, m) / num_loc  # eq. 6
      s = (ones((n, k_count)) if attr_uniform else
           nn.sigmoid(norm('attr_scores_bn', train)(jnp.einsum('nkd,nd->nk', a, v))))  # eq. 7
      f_attr = jnp.einsum('nkd,nk->nd', a, s) / k_count  # eq. 8
      feat = f_region + f_attr
      head_in = feat
    else:
      if region_uniform:
        m = ones((n, num_loc))
      else:
        scores = jnp.einsum('nld,nkd->nkl', big_v, a)
        maps['attribute_maps'] = scores  # raw V a_k: the code only averages them
        e = scores.mean(axis=1)  # merge(mode='ave') of V a_k
        m = nn.sigmoid(self._bn('attn_bn', train)(e))  # per-location BN over the L axis
      f_region = self._bn('region_fea_bn', train)(jnp.einsum('nld,nl->nd', big_v, m) / num_loc)
      if attr_uniform:
        s = ones((n, k_count))
      else:
        s = nn.sigmoid(self._bn('attr_scores_bn', train)(jnp.einsum('nkd,nd->nk', a, v)))
      reshaped = a.reshape(n, k_count * self.embed_dim).reshape(n, self.embed_dim, k_count)
      f_attr = self._bn('attr_fea_bn', train)(jnp.einsum('nij,nj->ni', reshaped, s) / k_count)
      feat = nn.relu(jnp.concatenate([f_attr, f_region], axis=-1))
      head_in = nn.Dropout(self.dropout_rate, deterministic=not train)(feat)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(head_in)
    return {**out, 'logits': logits.astype(jnp.float32), 'features': feat,
            'attribute_logits': jnp.concatenate(attr_logits, -1).astype(jnp.float32),
            'attribute_features': a, 'region_attention': m, 'attribute_scores': s,
            'region_features': f_region, 'attribute_fused': f_attr, **maps}


def attribute_offsets(attribute_classes: Sequence[int]) -> list[int]:
  """Start of each group's logits in `attribute_logits` (plus the total at the end)."""
  offsets = [0]
  for c in attribute_classes:
    offsets.append(offsets[-1] + int(c))
  return offsets


def split_attribute_logits(logits: jax.Array, attribute_classes: Sequence[int]) -> list:
  o = attribute_offsets(attribute_classes)
  return [logits[..., o[k]:o[k + 1]] for k in range(len(attribute_classes))]
