"""benchmarks.methods (every method against its paper's claim) and benchmarks.fgvc_oracles (the
benchmark's validation), end to end on tiny data: real training runs of a few steps."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from benchmarks import fgvc_oracles, methods, pretrain
from fgjax import default_config
from fgjax import methods as fg_methods

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'builders'))
import test_cub2011  # noqa: E402  pylint: disable=wrong-import-position


def test_verdict_needs_every_seed():
  assert methods.verdict([0.5, 0.6], [0.4, 0.5]) == 'holds'
  assert methods.verdict([0.5, 0.6], [0.4, 0.7]) == 'does not hold'
  assert methods.verdict([0.5], [0.5]) == 'does not hold'  # a tie is not a win
  assert methods.verdict([0.5, 0.6], [0.4]) == 'incomplete'


def test_every_claim_has_configs_on_the_benchmark():
  for claim in methods.CLAIMS:
    for run in (claim.run_a, claim.run_b):
      assert os.path.exists(methods.config_path('synthetic_fgvc', run)), run


def test_before_and_readings_runs_set_what_they_name():
  """`--before` runs set the method's `readings_before` (the values its config.json migration also
  writes for a run older than the fields); `--readings` runs set the one field they name."""
  for claim in methods.CLAIMS:
    # (focus_discriminate's before run is also one of its readings: checked once)
    runs = dict.fromkeys(([claim.before] if claim.before else [])
                         + list(methods.READINGS.get(claim.method, ())))
    default, _ = methods.load_config('synthetic_fgvc', claim.run_a, 0, False, 1.0, None)
    for run in runs:
      config, name = methods.load_config('synthetic_fgvc', run, 0, False, 1.0, None)
      assert name.endswith(':' + methods.RUNS[run][1]), name
      changed = {k: v for k, v in config.model.items() if default.model[k] != v}
      if run == claim.before:
        method = fg_methods.get(claim.method)
        assert method.readings_before and set(changed) <= set(method.readings_before)
        assert all(config.model[k] == v for k, v in method.readings_before.items())
        migrated = {k: v for k, v in config.model.to_dict().items()
                    if k not in method.readings_before}
        method.migrate_model_config(migrated)
        assert {k: migrated[k] for k in method.readings_before} == dict(method.readings_before)
      else:
        key, value = methods.RUNS[run][1].split('=')
        assert changed == {key: value}, (run, changed)
  spec = importlib.util.spec_from_file_location('c', methods.config_path('synthetic_fgvc', 'a3m'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with pytest.raises(ValueError, match="readings='later': valid: after"):
    module.get_config('readings=later')


def test_before_and_readings_train_no_config_twice():
  """`--before --readings` plans every run once, and no two planned runs have the same config
  (focus_discriminate's before run is its anchor_mean reading)."""
  runs = methods.planned_runs(methods.CLAIMS, True, True, True)
  assert len(runs) == len(set(runs))
  configs = {}
  for run in runs:
    config, _ = methods.load_config('synthetic_fgvc', run, 0, False, 1.0, None)
    key = json.dumps(config.to_dict(), sort_keys=True, default=str)
    assert key not in configs, (run, configs.get(key))
    configs[key] = run
  assert methods.planned_runs(methods.CLAIMS[:1], False, False, False) == ['bcnn_spp', 'bcnn']


def test_before_and_readings_tables_against_hand_computed_values():
  row = lambda run, seed, top1: {'run': run, 'seed': seed, 'top1': top1, 'wall_s': 10.0,
                                 'img_s': None}
  rows = [row('focus_discriminate', 0, 0.10), row('focus_discriminate', 1, 0.20),
          row('focus_discriminate_image_level', 0, 0.30), row('focus_discriminate_image_level', 1,
                                                              0.10),
          row('focus_discriminate_before', 0, 0.05), row('focus_discriminate_before', 1, 0.15),
          row('focus_discriminate_anchor_excess', 0, 0.40),
          row('focus_discriminate_anchor_excess', 1, 0.20)]
  claims = [c for c in methods.CLAIMS if c.method == 'focus_discriminate']
  text = methods.table(rows, claims, 'synthetic_fgvc')
  assert '| A before: top-1 % |' in text.splitlines()[0]
  # A 10, 20 -> 15.0 ± 5.0; before 5, 15 -> 10.0 ± 5.0; B 30, 10 -> 20.0 ± 10.0
  assert ('| focus_discriminate: 15.0 ± 5.0 | focus_discriminate_before: 10.0 ± 5.0 | '
          'focus_discriminate_image_level: 20.0 ± 10.0 | does not hold | 2 |') in text
  readings = methods.readings_table(rows, claims)
  # anchor_excess - A, paired: 30, 0 -> 15.0 ± 15.0; the before run is the anchor_mean reading:
  # before - A, paired: -5, -5 -> -5.0 ± 0.0
  assert ('| focus_discriminate | focus_discriminate_anchor_excess '
          '(`:region_scoring=anchor_excess`) | 30.0 ± 10.0 | 15.0 ± 5.0 | 15.0 ± 15.0 | 2 |'
          ) in readings
  assert ('| focus_discriminate | focus_discriminate_before (`:readings=before`) | 10.0 ± 5.0 | '
          '15.0 ± 5.0 | -5.0 ± 0.0 | 2 |') in readings
  assert len(readings.splitlines()) == 2 + 2  # header, rule, the two readings: none twice
  # a reading without rows keeps its row, empty
  assert ('| focus_discriminate_anchor_excess (`:region_scoring=anchor_excess`) | - | - | - | 0 |'
          in methods.readings_table(rows[:6], claims))
  # without before rows the table keeps its columns
  assert 'A before' not in methods.table(rows[:4], claims, 'synthetic_fgvc')


def test_user_errors_exit_2(tmp_path, capsys):
  assert methods.main(['--workdir', str(tmp_path), '--methods', 'nope']) == 2
  assert 'valid: bcnn_spp' in capsys.readouterr().err
  # market1501 has no bcnn_spp config: named, not a traceback.
  assert methods.main(['--workdir', str(tmp_path), '--data', 'market1501', '--methods',
                       'bcnn_spp']) == 2
  assert 'market1501_bcnn_spp.py' in capsys.readouterr().err
  assert methods.main(['--workdir', str(tmp_path), '--data', 'cub2011', '--before']) == 2
  assert 'ERROR: --before and --readings are for --data synthetic_fgvc' in capsys.readouterr().err
  assert fgvc_oracles.main(['--workdir', str(tmp_path), '--oracles', 'zoom']) == 2


@pytest.mark.slow
def test_benchmark_runs_a_claim_end_to_end(tmp_path, capsys, data_dir):
  assert methods.main(['--workdir', str(tmp_path), '--methods', 'bcnn_spp', '--seeds', '0',
                       '--epochs_scale', '0.1', '--dataset_config', 'fgvc_tiny',
                       '--data_dir', data_dir]) == 0
  out = capsys.readouterr().out
  rows = [json.loads(line) for line in out.splitlines() if line.startswith('{')]
  assert [r['run'] for r in rows] == ['bcnn_spp', 'bcnn']
  assert all(0.0 <= r['top1'] <= 1.0 and r['steps'] > 0 for r in rows)
  with open(tmp_path / 'synthetic_fgvc' / 'table.md') as f:
    table = f.read()
  verdict = methods.verdict([rows[0]['top1']], [rows[1]['top1']])
  assert f'| {verdict} | 1 |' in table and 'B-CNN+SPP > B-CNN [D,M]' in table


@pytest.mark.slow
def test_real_data_runlocal_prints_the_published_numbers(tmp_path, capsys):
  manual = tmp_path / 'manual'
  test_cub2011.write_cub(str(manual))
  assert methods.main(['--workdir', str(tmp_path / 'runs'), '--data', 'cub2011', '--runlocal',
                       '--methods', 'focus_discriminate', '--seeds', '0',
                       '--manual_dir', str(manual), '--data_dir', str(tmp_path / 'tfds')]) == 0
  out = capsys.readouterr().out
  assert 'configs/cub_focus_discriminate.py:image_level,runlocal' in out
  assert '(published 87.6 / 86.7)' in out


def test_pair_metrics_against_hand_counts():
  kinds = ['base', 'layout', 'layout', 'detail', 'detail']
  partner = np.array([-1, 2, 1, 4, 3])
  labels = np.array([0, 1, 2, 3, 4, 3])
  logits = np.zeros((6, 5))
  logits[0, 0] = 1  # right
  logits[1, 2] = 1  # layout image of class 1 scored as its partner: pair wrong
  logits[2, 2] = 1  # right
  logits[3, [3, 0]] = [1, 2]  # wrong class, but beats its partner: pair right
  logits[4, 4] = 1  # right
  logits[5, 4] = 1  # pair wrong
  m = fgvc_oracles.pair_metrics(logits, labels, kinds, partner)
  assert m['top1'] == 3 / 6 and m['top1_base'] == 1.0 and m['top1_layout'] == 0.5
  assert m['layout_pair_accuracy'] == 0.5 and m['detail_pair_accuracy'] == 2 / 3
  assert m['top1_detail'] == 1 / 3


@pytest.mark.slow
def test_oracle_runs_on_tiny_data(tmp_path, capsys, data_dir):
  assert fgvc_oracles.main(['--workdir', str(tmp_path), '--oracles', 'eye', '--epochs', '0.5',
                            '--dataset_config', 'fgvc_tiny', '--data_dir', data_dir]) == 0
  out = capsys.readouterr().out
  row = json.loads(next(line for line in out.splitlines() if line.startswith('{')))
  assert row['oracle'] == 'eye' and 0.0 <= row['detail_pair_accuracy'] <= 1.0
  assert '| eye | synthetic_parts/fgvc_tiny | 1 |' in out


def _fgvc_config(method: str, arg: str):
  path = methods.config_path('synthetic_fgvc', method)
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_fgvc_backbone_streams_and_their_weights():
  model = fg_methods.get('focus_discriminate').default_model_config()
  with pytest.raises(ValueError, match=r"one of d, r, got 'x'"):
    default_config.fgvc_backbone(model, 'x')
  for method in ('focus_discriminate', 'activation_attention'):
    d, r = _fgvc_config(method, 'weights=/w'), _fgvc_config(method, 'backbone=r,weights=/w')
    assert (d.model.backbone, d.model.backbone_pretrained) == ('small_cnn', '/w/d')  # the default
    assert (r.model.backbone, r.model.layer) == ('small_resnet', 'stage4')
    assert r.model.backbone_kwargs.to_dict() == default_config.FGVC_STREAM_R['kwargs']
    assert r.model.backbone_pretrained == '/w/r'
    with pytest.raises(ValueError, match='one of d, r'):
      _fgvc_config(method, 'backbone=m')
  # The two-stream configs keep WEIGHTS/d and WEIGHTS/m.
  bcnn, _ = methods.load_config('synthetic_fgvc', 'bcnn', 0, False, 1.0, None, weights='/w')
  assert (bcnn.model.backbone_a_pretrained, bcnn.model.backbone_b_pretrained) == ('/w/d', '/w/m')


def test_pretrain_stopped_by_sigterm_exports_nothing(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(pretrain.trainer, 'train_and_evaluate', lambda *a, **k: None)  # stopped
  assert pretrain.main(['--out', str(tmp_path), '--streams', 'r,d']) == 0
  captured = capsys.readouterr()
  assert captured.out == '' and 'stream r stopped before its end' in captured.err
  assert not os.path.exists(tmp_path / 'r') and not os.path.exists(tmp_path / 'd')


@pytest.mark.slow
def test_pretrain_recipe_writes_weights_the_benchmark_loads(tmp_path, capsys, data_dir,
                                                           monkeypatch):
  out = tmp_path / 'weights'
  assert pretrain.main(['--out', str(out), '--streams', 'd,r', '--epochs', '0.5',
                        '--dataset_config', 'pretrain_tiny', '--data_dir', data_dir]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()
          if line.startswith('{')]
  assert [r['stream'] for r in rows] == ['d', 'r']
  row = rows[0]
  assert row['stream'] == 'd' and row['dataset'] == 'synthetic_parts/pretrain_tiny'
  assert rows[1]['backbone'] == 'small_resnet'
  assert os.path.isdir(out / 'd' / 'weights') and os.path.isdir(out / 'r' / 'weights')
  # The one-backbone configs take the R stream with :backbone=r and load WEIGHTS/r; its
  # constructor arguments match those the weights were exported with.
  for method in ('focus_discriminate', 'activation_attention'):
    config = _fgvc_config(method, f'backbone=r,weights={out}')
    assert config.model.backbone_pretrained == str(out / 'r')
    fg_methods.get(method).check_config(config)
    with config.unlocked():
      config.model.backbone_kwargs.widths = (32, 64, 96, 96)
    with pytest.raises(ValueError, match='backbone_kwargs'):
      fg_methods.get(method).check_config(config)
  # A rerun reuses the finished runs and their weight directories: nothing is retrained.
  monkeypatch.setattr(pretrain.trainer, 'train_and_evaluate',
                      lambda *a, **k: pytest.fail('a finished stream was retrained'))
  assert pretrain.main(['--out', str(out), '--streams', 'r,d', '--epochs', '0.5',
                        '--dataset_config', 'pretrain_tiny', '--data_dir', data_dir]) == 0
  again = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith('{')]
  assert [(r['stream'], r['test_top1']) for r in again] == [
      (r['stream'], r['test_top1']) for r in rows[::-1]]
  monkeypatch.undo()
  # The benchmark's configs take it as :weights=DIR, through the same fields as ImageNet weights.
  config, name = methods.load_config('synthetic_fgvc', 'bcnn', 0, False, 1.0, data_dir,
                                     weights=str(out))
  assert name.endswith(f'synthetic_fgvc_bcnn.py:weights={out}')
  assert config.model.backbone_a_pretrained == str(out / 'd')
  assert 'backbone' not in config.optim.lr_multipliers  # pretrained layers at the full rate
  with config.unlocked():
    config.model.backbone_b = ''  # the M stream was not pretrained here
    config.model.backbone_b_pretrained = ''
  fg_methods.get('bcnn').check_config(config)  # the D stream's constructor arguments match
  # An oracle starts from the same weights.
  assert fgvc_oracles.main(['--workdir', str(tmp_path / 'oracles'), '--oracles', 'full',
                            '--epochs', '0.5', '--dataset_config', 'fgvc_tiny',
                            '--weights', str(out), '--data_dir', data_dir]) == 0
  assert '"backbone": "pretrained D"' in capsys.readouterr().out
  assert pretrain.main(['--out', str(out), '--streams', 'x']) == 2
  assert 'valid: d, m, r' in capsys.readouterr().err
