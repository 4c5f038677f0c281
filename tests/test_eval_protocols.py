"""Re-id and retrieval evaluation end to end on the synthetic dataset's query/gallery and
class-disjoint retrieval splits, against the metric functions applied to collected features."""

import pytest

from fgjax import experiment, metrics, trainer
from fgjax.evaluation import protocols


def _setup(make_config, mesh, **eval_fields):
  config = make_config('bcnn')
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
