"""A3M model: official-code parity (tests/fixtures/a3m_official_head.npz), the paper's equations
5-9 against a float64 NumPy oracle (max and mean over attributes), shapes with a real backbone, and
that every ablation switch changes the computation."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.models import backbones as backbones_lib
from fgjax.models.a3m import A3M, split_attribute_logits

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures',
                       'a3m_official_head.npz')


class _Given(nn.Module):
  """Stand-in backbone: the input *is* the backbone map (NHWC)."""

  @nn.compact
  def __call__(self, images, train=False):
    return {'features': {'map': images}}


def _fixture_variables(d, num_attrs):
  """Keras 3 layout -> this model's Flax names (p0 -> category, attr{k} -> attribute{k})."""
  params, stats = {}, {}
  rename = {'p0': 'category', 'final_dense': 'classifier'}
  rename.update({f'attr{k}': f'attribute{k}' for k in range(num_attrs)})
  layers = sorted({k.split('/')[1] for k in d.files if k.startswith('param/')})
  for layer in layers:
    p = lambda var: np.asarray(d[f'param/{layer}/{var}'], np.float32)  # noqa: E731
    base, _, suffix = layer.partition('_')
    name = (rename[base] + ('_' + suffix if suffix else '')) if base in rename else layer
    if layer == 'final_dense':
      name = 'classifier'
    if name.endswith('_dense'):
      name = name[:-len('_dense')] + '_classifier'
    if layer.endswith('_conv'):
      params[name] = {'kernel': p('kernel')[0], 'bias': p('bias')}
    elif layer.endswith('_bn'):
      params[name] = {'scale': p('gamma'), 'bias': p('beta')}
      stats[name] = {'mean': p('moving_mean'), 'var': p('moving_variance')}
    else:
      params[name] = {'kernel': p('kernel'), 'bias': p('bias')}
  return {'params': params, 'batch_stats': stats}


def test_official_code_variant_matches_fixture():
  d = np.load(FIXTURE)
  offsets = d['config/attr_prob_offsets']
  attr_classes = tuple(int(b - a) for a, b in zip(offsets[:-1], offsets[1:]))
  x = d['x']  # (B, 196, C): x[b, l, c] = F_nhwc[b, l // 14, l % 14, c]
  b, l, c = x.shape
  model = A3M(num_classes=int(d['config/nb_classes']), backbone=_Given(), layer='map',
              attribute_classes=attr_classes, embed_dim=int(d['config/emb_dim']),
              variant='official_code', dropout_rate=float(d['config/dropout']),
              bn_epsilon=float(d['config/bn_epsilon']), bn_momentum=float(d['config/bn_momentum']))
  images = jnp.asarray(x.reshape(b, 14, 14, c))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  variables = _fixture_variables(d, len(attr_classes))
  # Every fixture tensor has a place in the model and vice versa, with the same shapes.
  assert jax.tree.map(np.shape, abstract) == jax.tree.map(np.shape, variables)
  with jax.default_matmul_precision('highest'):
    out = jax.jit(lambda v, im: model.apply(v, im, train=False))(variables, images)
  out = jax.tree.map(np.asarray, out)
  tol = dict(rtol=1e-4, atol=1e-4)  # README: every output but probabilities
  np.testing.assert_allclose(out['category_features'], d['out/v'], **tol)
  np.testing.assert_allclose(out['attribute_features'], d['out/a'], **tol)
  np.testing.assert_allclose(out['region_attention'], d['out/region_attention'], **tol)
  np.testing.assert_allclose(out['region_features'], d['out/region_fea'], **tol)
  np.testing.assert_allclose(out['attribute_scores'], d['out/attr_scores'], **tol)
  np.testing.assert_allclose(out['attribute_fused'], d['out/attr_fea'], **tol)
  np.testing.assert_allclose(out['features'], d['out/final_fea'], **tol)
  np.testing.assert_allclose(out['logits'], d['out/final_logits'], **tol)
  np.testing.assert_allclose(out['category_logits'], d['out/p0_logits'], **tol)
  groups = split_attribute_logits(out['attribute_logits'], attr_classes)
  for k, g in enumerate(groups):
    np.testing.assert_allclose(g, d[f'out/attr{k}_logits'], **tol)
  prob_tol = dict(rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(jax.nn.softmax(out['logits']), d['out/final_prob'], **prob_tol)
  np.testing.assert_allclose(jax.nn.softmax(out['category_logits']), d['out/p0_prob'], **prob_tol)
  np.testing.assert_allclose(np.concatenate([jax.nn.softmax(g) for g in groups], -1),
                             d['out/attr_prob_concat'], **prob_tol)
  # The fixture tells the readings apart: the paper's equations on the same weights differ.
  # (attention_norm='none': the literal equations, which this check was written for.)
  paper = model.clone(variant='paper', branch_batchnorm=True, attention_norm='none')
  paper_vars = {'params': {k: v for k, v in variables['params'].items()
                           if k.startswith(('category', 'attribute'))},
                'batch_stats': {k: v for k, v in variables['batch_stats'].items()
                                if k.startswith(('category', 'attribute'))}}
  paper_vars['params']['classifier'] = {'kernel': variables['params']['classifier']['kernel'][:512],
                                        'bias': variables['params']['classifier']['bias']}
  other = jax.jit(paper.apply)(paper_vars, images)
  assert np.abs(np.asarray(other['region_attention']) - out['region_attention']).max() > 0.1


def _sigmoid(z):
  return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize('region_pool', ['max', 'mean'])
def test_paper_variant_matches_numpy_equations(region_pool):
  """The literal equations (attention_norm='none', set explicitly since the default became
  'batchnorm'); tests/methods/test_a3m_readings.py checks the default's normalisation."""
  rng = np.random.default_rng(0)
  n, h, w, c, d, attrs = 2, 3, 4, 6, 5, (2, 3, 4)
  fmap = rng.normal(size=(n, h, w, c)).astype(np.float32)
  model = A3M(num_classes=7, backbone=_Given(), layer='map', attribute_classes=attrs,
              embed_dim=d, region_pool=region_pool, attention_norm='none')
  variables = jax.jit(model.init)(jax.random.key(1), jnp.asarray(fmap))
  # Biases are zero at init: randomise them so that they are exercised.
  variables = jax.tree_util.tree_map_with_path(
      lambda p, v: v + 0.3 * jax.random.normal(jax.random.key(len(str(p))), v.shape)
      if 'bias' in str(p[-1]) else v, variables)
  with jax.default_matmul_precision('highest'):
    out = jax.tree.map(np.asarray, jax.jit(model.apply)(variables, jnp.asarray(fmap)))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
  x = fmap.reshape(n, h * w, c).astype(np.float64)
  conv = lambda name: np.maximum(x @ p[name]['kernel'] + p[name]['bias'], 0)  # noqa: E731
  dense = lambda name, z: z @ p[name]['kernel'] + p[name]['bias']  # noqa: E731
  big_v = conv('category_conv')
  v = big_v.mean(1)
  a = np.stack([conv(f'attribute{k}_conv').mean(1) for k in range(3)], 1)  # (n, K, d)
  m_k = np.stack([_sigmoid(np.einsum('nld,nd->nl', big_v, a[:, k])) for k in range(3)], 1)
  m = m_k.max(1) if region_pool == 'max' else m_k.mean(1)
  f_region = np.stack([big_v[i].T @ m[i] for i in range(n)]) / (h * w)  # eq. 6
  s = _sigmoid(np.stack([a[i] @ v[i] for i in range(n)]))  # eq. 7
  f_attr = np.stack([a[i].T @ s[i] for i in range(n)]) / 3  # eq. 8
  tol = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out['region_attention'], m, **tol)
  np.testing.assert_allclose(out['attribute_scores'], s, **tol)
  np.testing.assert_allclose(out['features'], f_region + f_attr, **tol)
  np.testing.assert_allclose(out['logits'], dense('classifier', f_region + f_attr), **tol)
  np.testing.assert_allclose(out['category_logits'], dense('category_classifier', v), **tol)
  want_attr = np.concatenate([dense(f'attribute{k}_classifier', a[:, k]) for k in range(3)], -1)
  np.testing.assert_allclose(out['attribute_logits'], want_attr, **tol)


def test_shapes_with_small_cnn():
  model = A3M(num_classes=10, backbone=backbones_lib.get_backbone('small_cnn'), layer='conv4',
              attribute_classes=(3, 3, 3), embed_dim=32)
  images = jnp.zeros((2, 64, 64, 3), jnp.uint8)

  def shapes(m):
    return jax.eval_shape(lambda: m.init_with_output(jax.random.key(0), images)[0])

  out = shapes(model)
  assert out['logits'].shape == (2, 10) and out['category_logits'].shape == (2, 10)
  assert out['attribute_logits'].shape == (2, 9) and out['attribute_features'].shape == (2, 3, 32)
  assert out['region_attention'].shape == (2, 64) and out['attribute_scores'].shape == (2, 3)
  assert out['features'].shape == (2, 32)
  out = shapes(model.clone(variant='official_code'))
  assert out['features'].shape == (2, 64)  # concat[f_attr, f_region]


@pytest.mark.parametrize('variant', ['paper', 'official_code'])
def test_ablations_change_the_graph(variant):
  rng = np.random.default_rng(2)
  fmap = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
  base = A3M(num_classes=5, backbone=_Given(), layer='map', attribute_classes=(2, 3),
             embed_dim=6, variant=variant)
  variables = jax.jit(base.init)(jax.random.key(0), fmap)
  outs, graphs = {}, {}
  for ablation in ('none', 'baseline2', 'att1', 'att2', 'no_attr_label'):
    model = base.clone(ablation=ablation)
    graphs[ablation] = str(jax.make_jaxpr(lambda v, m=model: m.apply(v, fmap))(variables))
    outs[ablation] = jax.tree.map(np.asarray, jax.jit(model.apply)(variables, fmap))
  # Distinct computations for the attention ablations; 'no_attr_label' only changes the loss.
  assert len({graphs[a] for a in ('none', 'baseline2', 'att1', 'att2')}) == 4
  assert graphs['no_attr_label'] == graphs['none']
  ones_l, ones_k = np.ones((2, 9)), np.ones((2, 2))
  np.testing.assert_array_equal(outs['baseline2']['region_attention'], ones_l)
  np.testing.assert_array_equal(outs['baseline2']['attribute_scores'], ones_k)
  np.testing.assert_array_equal(outs['att1']['attribute_scores'], ones_k)
  np.testing.assert_array_equal(outs['att1']['region_attention'],
                                outs['none']['region_attention'])
  np.testing.assert_array_equal(outs['att2']['region_attention'], ones_l)
  np.testing.assert_array_equal(outs['att2']['attribute_scores'], outs['none']['attribute_scores'])
  for a in ('baseline2', 'att1', 'att2'):
    assert not np.allclose(outs[a]['logits'], outs['none']['logits'])
  if variant == 'paper':  # uniform weights 1: f_region = GAP(V) = v and f_attr = mean_k a_k
    want = outs['none']['category_features'] + outs['none']['attribute_features'].mean(1)
    np.testing.assert_allclose(outs['baseline2']['features'], want, rtol=1e-5, atol=1e-6)
  # Baseline-1: no attribute branch or attention at all; logits are the category branch's.
  b1 = base.clone(ablation='baseline1')
  b1_vars = jax.jit(b1.init)(jax.random.key(0), fmap)
  assert not any(k.startswith(('attribute', 'attn', 'attr_', 'region')) for k in b1_vars['params'])
  b1_out = b1.apply(b1_vars, fmap)
  np.testing.assert_array_equal(b1_out['logits'], b1_out['category_logits'])
  assert 'attribute_logits' not in b1_out
