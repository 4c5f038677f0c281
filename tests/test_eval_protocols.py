"""Re-id and retrieval evaluation end to end on the synthetic dataset's query/gallery and
class-disjoint retrieval splits, against the metric functions applied to collected features."""

import pytest

from fgjax import experiment, metrics, trainer
from fgjax.evaluation import protocols


def _setup(make_config, mesh, method='bcnn', **eval_fields):
  config = make_config(method)
  with config.unlocked():
    config.eval.update(eval_fields)
  exp = experiment.setup(config, mesh=mesh, log=lambda m: None)
  return exp, trainer.init_state(exp, exp.optimizer(exp.stages[0]))


def test_reid_protocol(make_config, one_device_mesh):
  exp, state = _setup(make_config, one_device_mesh, protocol='reid')
  result = protocols.evaluate(exp, state)
  step = protocols.make_eval_step(exp)
  q = protocols.collect(exp, state, 'query', step)
  g = protocols.collect(exp, state, 'gallery', step)
  assert len(q['identity']) == 16 and len(g['identity']) == 32
  assert set(q['identity']) == set(g['identity'])  # every query identity is in the gallery
  want = metrics.reid_metrics(q['features'], q['identity'], q['camera'], g['features'],
                              g['identity'], g['camera'])
  assert result['split'] == 'query->gallery'
  for k in ('cmc_rank1', 'cmc_rank5', 'map'):
    assert result[k] == want[k]
  assert result['num_queries'] == 16 and 0 <= result['cmc_rank1'] <= result['cmc_rank10'] <= 1


def test_retrieval_protocol(make_config, one_device_mesh):
  exp, state = _setup(make_config, one_device_mesh, protocol='retrieval')
  result = protocols.evaluate(exp, state, 'retrieval_test')
  out = protocols.collect(exp, state, 'retrieval_test', protocols.make_eval_step(exp))
  assert 'logits' not in out  # only the embedding leaves the devices
  assert result == {'split': 'retrieval_test', **metrics.recall_at_k(out['features'],
                                                                     out['label']),
                    'nmi': metrics.nmi(out['features'], out['label'], seed=0),
                    'num_examples': 72}


@pytest.mark.parametrize('method, protocol, keys, absent', [
    ('bilinear_lstm', 'reid', ('attention_self_mass', 'attention_entropy',
                               'attention_mass_in_box_ratio'), ()),
    ('a3m', 'retrieval', ('a3m_attention_spread', 'a3m_gate_range'), ()),
    ('activation_attention', 'reid', ('box_area_frac_scale1',), ('acc_avg_ms', 'acc_loc_scale1')),
])
def test_method_diagnostics_under_reid_and_retrieval(make_config, one_device_mesh, method,
                                                     protocol, keys, absent):
  """The method's eval_metrics (its diagnostics) reach a re-id or retrieval run's metrics, computed
  on the query (reid) or evaluated split; label accuracies stay classification-only."""
  exp, state = _setup(make_config, one_device_mesh, method, protocol=protocol,
                      embedding='features')
  split = 'query' if protocol == 'reid' else 'retrieval_test'
  result = protocols.evaluate(exp, state, None if protocol == 'reid' else split)
  gathered = protocols.collect(exp, state, split, protocols.make_eval_step(exp))
  want = exp.method.eval_metrics(gathered, exp.config)
  for k in keys:
    assert k in result and result[k] == want[k], k
  for k in absent:
    assert k not in result, k
  assert ('cmc_rank1' if protocol == 'reid' else 'nmi') in result


def test_bad_protocol_and_missing_fields(make_config, one_device_mesh):
  config = make_config('bcnn')
  with config.unlocked():
    config.eval.protocol = 'ranking'
  with pytest.raises(ValueError, match="'classification', 'reid', 'retrieval'|classification, "
                                       'reid, retrieval'):
    experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  with config.unlocked():
    config.eval.protocol = 'reid'
    config.eval.query_split = 'probe'
  with pytest.raises(ValueError, match="split 'probe'"):
    experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
