"""bilinear_lstm method: eq. (5) loss against a NumPy oracle, the attention-in-box metric against a
brute-force loop, and a short real training run through the trainer."""

import json
import os
import types

import numpy as np
import pytest

from fgjax import methods, trainer
from fgjax.methods import bilinear_lstm as method_lib

METHOD = methods.get('bilinear_lstm')


def _softmax_ce(logits, labels):
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -logp[np.arange(len(labels)), labels].mean()


@pytest.mark.parametrize('lam,tau', [(1.0, 1.0), (0.3, 2.5), (0.0, 1.0)])
def test_loss_is_eq5_cross_entropy_plus_doubly_stochastic_penalty(lam, tau, make_config):
  c = make_config('bilinear_lstm')
  with c.unlocked():
    c.model.attention_penalty, c.model.attention_tau = lam, tau
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 7))
  labels = np.array([0, 3, 6, 2])
  mass = rng.uniform(0, 3, size=(4, 5, 5))
  loss, metrics = METHOD.loss_fn({'logits': logits.astype(np.float32),
                                  'attention_mass': mass.astype(np.float32)},
                                 {'label': labels}, c)
  penalty = np.mean([sum((tau - mass[n, u, v]) ** 2 for u in range(5) for v in range(5))
                     for n in range(4)])
  expected = _softmax_ce(logits, labels) + lam * penalty
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['attention_penalty']), penalty, rtol=1e-5)


def test_attention_in_box_against_a_loop():
  rng = np.random.default_rng(1)
  att = rng.uniform(size=(3, 4, 6))
  boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.6, 0.5], [0.8, 0.8, 0.9, 0.85]])
  mass, area = method_lib.attention_in_box(att, boxes)
  for n in range(3):
    inside = [(u, v) for u in range(4) for v in range(6)
              if boxes[n, 0] <= (u + 0.5) / 4 <= boxes[n, 2]
              and boxes[n, 1] <= (v + 0.5) / 6 <= boxes[n, 3]]
    np.testing.assert_allclose(mass[n], sum(att[n, u, v] for u, v in inside) / att[n].sum())
    np.testing.assert_allclose(area[n], len(inside) / 24)
  assert mass[0] == pytest.approx(1.0) and area[2] == 0


@pytest.mark.parametrize('window', [None, 1])
def test_causal_chance_is_uniform_attention_over_each_causal_region(window):
  """Oracle: loops over cells and their rectangles; and uniform causal attention scores ratio 1."""
  boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.5, 0.6, 1.0, 1.0], [0.0, 0.0, 0.3, 0.4]])
  kh, kw = 4, 5
  chance = method_lib.causal_chance_in_box(boxes, (kh, kw), window)
  mass = np.zeros((3, kh, kw))
  for n in range(3):
    fractions = []
    for i in range(kh):
      for j in range(kw):
        region = [(u, v) for u in range(i + 1) for v in range(j + 1)
                  if window is None or (i - u <= window and j - v <= window)]
        hits = [(u, v) for u, v in region if boxes[n, 0] <= (u + 0.5) / kh <= boxes[n, 2]
                and boxes[n, 1] <= (v + 0.5) / kw <= boxes[n, 3]]
        fractions.append(len(hits) / len(region))
        for u, v in region:  # uniform attention of cell (i, j) over its region
          mass[n, u, v] += 1 / len(region)
    np.testing.assert_allclose(chance[n], np.mean(fractions))
  assert chance[0] == pytest.approx(1.0)
  config = types.SimpleNamespace(model=types.SimpleNamespace(window=-1 if window is None
                                                             else window))
  out = method_lib.eval_metrics({'attention_mass': mass, 'last_cell_attention': mass,
                                 'bbox': boxes}, config)
  assert out['attention_mass_causal_ratio'] == pytest.approx(1.0)
  assert out['attention_mass_causal_chance'] == pytest.approx(chance.mean())
  # The box-area ratio is not 1 for the same uniform attention: the box at the bottom right is
  # seen by few cells, the one at the top left by all.
  _, area = method_lib.attention_in_box(mass, boxes)
  assert chance[1] < area[1] and chance[2] > area[2]


def test_trains_a_few_steps_and_reports_attention_metrics(make_config, one_device_mesh, tmp_path):
  c = make_config('bilinear_lstm', hidden=8)
  with c.unlocked():
    c.train.num_epochs = 1.0
  trainer.train_and_evaluate(c, str(tmp_path), mesh=one_device_mesh, log=lambda m: None)
  with open(os.path.join(tmp_path, 'metrics.json')) as f:
    result = json.load(f)
  final = result['final'] if 'final' in result else result
  flat = json.dumps(final)
  for key in ('attention_mass_in_box', 'attention_mass_in_box_ratio', 'last_cell_attention_in_box',
              'box_area_fraction', 'attention_mass_causal_ratio', 'attention_self_mass',
              'attention_entropy'):
    assert key in flat, key
