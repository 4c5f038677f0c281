"""`Method.diagnose`: the warnings of an inert mechanism reach the training log and `evaluate`."""

import dataclasses

import jax

from fgjax import evaluate, methods, sharding, trainer


def test_trainer_and_evaluate_print_each_diagnose_warning(make_config, tmp_path, monkeypatch):
  seen = []

  def diagnose(metrics):
    seen.append(dict(metrics))
    return [f'diagnostic top1={metrics["top1"]:.3f} says the mechanism is inert']

  patched = dataclasses.replace(methods.get('bcnn'), diagnose=diagnose)
  monkeypatch.setitem(methods.METHODS, 'bcnn', patched)
  config = make_config()
  with config.unlocked():
    config.train.num_epochs = 0.5
  log = []
  mesh = sharding.make_mesh(jax.devices()[:1])
  result = trainer.train_and_evaluate(config, str(tmp_path), mesh=mesh, log=log.append)
  warnings = [line for line in log if line.startswith('WARNING: ')]
  assert warnings == [f'WARNING: diagnostic top1={result["top1"]:.3f} says the mechanism is inert']
  assert seen[0]['top1'] == result['top1']  # diagnose sees the final evaluation's metrics
  # after the final-evaluation line, before the "wrote metrics.json" line
  i = log.index(warnings[0])
  assert log[i - 1].startswith('final evaluation: ') and log[i + 1].startswith('wrote ')

  log.clear()
  evaluate.evaluate_latest(None, str(tmp_path), mesh=mesh, log=log.append)
  assert [line for line in log if line.startswith('WARNING: ')] == warnings


def test_methods_without_diagnostics_warn_about_nothing():
  assert methods.get('bcnn').diagnose({'top1': 0.0}) == []
