"""No recompiles: each stage's train step is traced once, the eval step once for the whole run.

The methods' loss_fn / predict_fn run only while JAX traces the step functions, so counting their
calls counts traces. A retrace per batch (a shape, dtype or Python-value change between batches,
e.g. a last partial batch) would make these counts grow with the number of steps.
"""

import dataclasses

import ml_collections

from fgjax import methods, trainer


def test_one_trace_per_stage_and_one_eval_trace(make_config, tmp_path, one_device_mesh,
                                                monkeypatch):
  base = methods.get('bcnn')
  calls = {'loss_fn': 0, 'predict_fn': 0}

  def counted(name):
    fn = getattr(base, name)

    def wrapper(*args, **kwargs):
      calls[name] += 1
      return fn(*args, **kwargs)
    return wrapper

  monkeypatch.setitem(methods.METHODS, 'bcnn', dataclasses.replace(
      base, loss_fn=counted('loss_fn'), predict_fn=counted('predict_fn')))
  config = make_config('bcnn')
  with config.unlocked():
    config.stages = (ml_collections.ConfigDict({'name': 'head', 'num_epochs': 1.0,
                                                'frozen': '^backbone'}),
                     ml_collections.ConfigDict({'name': 'all', 'num_epochs': 1.0}))
    config.train.eval_every_steps = 2
  result = trainer.train_and_evaluate(config, str(tmp_path / 'run'), mesh=one_device_mesh,
                                      log=lambda m: None)
  assert result['step'] >= 6  # several steps per stage and several evaluations ran
  assert calls == {'loss_fn': 2, 'predict_fn': 1}, calls
