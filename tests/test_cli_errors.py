"""Every mistake a user can make before the first step: exit status 2, exactly one `ERROR: ...` line
on stderr naming the field or file (and the valid choices), no traceback unless asked for
(--verbosity=1 or FGJAX_TRACEBACK=1). The commands run as subprocesses, as a user runs them."""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from fgjax import methods, run
from fgjax.data import augment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))


def _cli(module, *args, env=None, timeout=300):
  base = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'FGJAX_TRACEBACK')}
  return subprocess.run([sys.executable, '-m', f'fgjax.{module}', *args], cwd=ROOT,
                        env={**base, **(env or {})}, capture_output=True, text=True,
                        timeout=timeout)


def _error(proc) -> str:
  """The one ERROR line of a command that exited 2 without a traceback."""
  text = proc.stdout + proc.stderr
  assert proc.returncode == 2, text[-3000:]
  assert 'Traceback' not in text, text[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith('ERROR:')]
  assert len(lines) == 1, proc.stderr[-3000:]
  return lines[0]


def _train(tmp_path, config, *args, env=None):
  return _cli('train', f'--config={config}', f'--workdir={tmp_path / "w"}',
              f'--config.dataset.data_dir={tmp_path / "tfds"}', *args, env=env)


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_misspelt_field_names_it_and_lists_the_block(tmp_path):
  line = _error(_train(tmp_path, 'configs/demo.py', '--config.optim.learnng_rate=0.1'))
  assert "config.optim has no field 'learnng_rate'" in line, line
  assert 'did you mean config.optim.learning_rate?' in line, line
  assert 'momentum, nesterov, optimizer, schedule' in line, line  # the block's fields
  assert not (tmp_path / 'w').exists() and not (tmp_path / 'tfds').exists()


def test_unknown_top_level_field(tmp_path):
  line = _error(_train(tmp_path, 'configs/demo.py', '--config.lr=0.1'))
  assert "config has no field 'lr'" in line, line
  assert 'dataset, eval, init_from, method, model, optim' in line, line


def test_traceback_only_when_asked(tmp_path):
  args = ('configs/demo.py', '--config.optim.learnng_rate=0.1')
  for extra, env in ((('--verbosity=1',), None), ((), {'FGJAX_TRACEBACK': '1'})):
    proc = _train(tmp_path, *args, *extra, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback' in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith('ERROR:')] == [
        "ERROR: --config.optim.learnng_rate: config.optim has no field 'learnng_rate' (did you "
        'mean config.optim.learning_rate?); its fields: decay_epochs, decay_factor, frozen, '
        'grad_clip_norm, learning_rate, lr_multipliers, momentum, nesterov, optimizer, schedule, '
        'warmup_epochs, weight_decay, weight_decay_pattern']


def test_missing_config_file(tmp_path):
  line = _error(_train(tmp_path, 'configs/nope.py'))
  assert 'config file configs/nope.py does not exist' in line, line
  assert f'configs are in configs{os.sep}' in line, line
  line = _error(_train(tmp_path, 'configs/cub_a3n.py', '--config.lr=1'))
  assert 'did you mean configs/cub_a3m.py' in line, line


def test_missing_config_flag(tmp_path):
  line = _error(_cli('train', f'--workdir={tmp_path}'))
  assert 'needs --config' in line and '--help' in line, line


def test_unknown_method_lists_the_methods(tmp_path):
  line = _error(_train(tmp_path, 'configs/demo.py', '--config.method=nope'))
  assert "unknown method 'nope'" in line and 'config.method' in line, line
  assert 'a3m, activation_attention, bcnn, bcnn_spp, bilinear_lstm' in line, line


def test_config_argument_the_config_does_not_take(tmp_path):
  line = _error(_train(tmp_path, 'configs/cub_a3m.py:bogus'))
  assert "config argument 'bogus'" in line and 'configs/cub_a3m.py' in line, line
  assert "runlocal (default False), variant (default 'paper')" in line, line
  line = _error(_train(tmp_path, 'configs/demo.py:runlocal'))
  assert 'configs/demo.py takes no argument' in line, line
  line = _error(_train(tmp_path, 'configs/synthetic_a3m.py:runlocal'))
  assert 'CPU-sized already' in line, line


def test_bad_value_and_unknown_flag(tmp_path):
  line = _error(_train(tmp_path, 'configs/demo.py', '--config.train.num_epochs=abc'))
  assert '--config.train.num_epochs=abc' in line, line
  line = _error(_train(tmp_path, 'configs/demo.py', '--epochs=3'))
  assert "'epochs'" in line, line
  line = _error(_train(tmp_path, 'configs/demo.py', 'stray'))
  assert 'unexpected arguments: stray' in line, line


def test_grid_and_resize_geometry(tmp_path):
  line = _error(_train(tmp_path, 'configs/synthetic_bcnn_spp.py',
                       '--config.dataset.image_size=8'))
  assert "gives a 1x1 grid at small_cnn/conv4" in line and 'image_size' in line, line
  line = _error(_train(tmp_path, 'configs/synthetic_bcnn.py',
                       '--config.dataset.resize_size=10'))
  assert 'the resized height 10 is smaller than' in line, line
  assert not (tmp_path / 'tfds').exists()  # found before any dataset work


def test_missing_weights_and_data_in_one_message_before_any_work(tmp_path):
  proc = _train(tmp_path, 'configs/cub_bcnn.py',
                f'--config.dataset.manual_dir={tmp_path / "manual"}',
                f'--config.model.backbone_b_pretrained={tmp_path / "vggm"}')
  line = _error(proc)
  assert line == 'ERROR: missing before training can start:', line
  listed = proc.stderr.split(line, 1)[1]
  assert "config.model.backbone_a='vgg16' needs ImageNet weights" in listed, listed
  assert '--config.model.backbone_a_pretrained=DIR' in listed, listed
  assert f'config.model.backbone_b_pretrained={tmp_path / "vggm"}: no such directory' in listed
  assert "dataset 'cub2011' is not prepared" in listed and 'CUB_200_2011' in listed, listed
  assert not (tmp_path / 'tfds').exists() and not (tmp_path / 'w').exists()


def test_weight_paths_expand_home_and_variables(tmp_path):
  home = tmp_path / 'home'
  line = _error(_train(tmp_path, 'configs/synthetic_bcnn.py',
                       '--config.model.backbone_a_pretrained=~/weights/d',
                       env={'HOME': str(home)}))
  assert f'config.model.backbone_a_pretrained={home}/weights/d: no such directory' in line, line
  line = _error(_train(tmp_path, 'configs/synthetic_a3m.py',
                       '--config.model.backbone_pretrained=$FGJAX_TEST_WEIGHTS/r',
                       env={'FGJAX_TEST_WEIGHTS': str(tmp_path / 'wts')}))
  assert f'config.model.backbone_pretrained={tmp_path}/wts/r: no such directory' in line, line


def test_resolve_config_expands_every_path_field(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.setenv('FGJAX_TEST_DATA', '/data')
  config = _load(os.path.join(ROOT, 'configs', 'cub_bcnn.py')).get_config()
  config.dataset.data_dir, config.dataset.manual_dir = '~/tfds', '$FGJAX_TEST_DATA/cub'
  config.init_from.path = '~/runs/a'
  config.model.backbone_a_pretrained = '${FGJAX_TEST_DATA}/vgg16'
  config.model.backbone_b_pretrained = '~/vggm'
  config.lock()
  resolved = run.resolve_config(config)
  assert resolved.dataset.data_dir == f'{tmp_path}/tfds'
  assert resolved.dataset.manual_dir == '/data/cub'
  assert resolved.init_from.path == f'{tmp_path}/runs/a'
  assert resolved.model.backbone_a_pretrained == '/data/vgg16'
  assert resolved.model.backbone_b_pretrained == f'{tmp_path}/vggm'
  assert config.model.backbone_b_pretrained == '~/vggm' and resolved.is_locked


def test_resize_follows_an_image_size_override():
  """README's ResNet-50 example: --config.dataset.image_size=448 alone on a 72/64 config."""
  config = _load(os.path.join(ROOT, 'configs', 'synthetic_bcnn.py')).get_config()
  config.dataset.image_size = 448
  config.lock()
  notes = []
  resolved = run.resolve_config(config, ('dataset.image_size',), notes.append)
  assert resolved.dataset.resize_size == 512  # 448 * 8 / 7 (random crop)
  assert notes and 'config.dataset.resize_size=512' in notes[0]
  bcnn = _load(os.path.join(ROOT, 'configs', 'cub_bcnn.py')).get_config()
  bcnn.dataset.image_size = 224
  resolved = run.resolve_config(bcnn, ('dataset.image_size',))
  # No random crop: the input plus the room of the +-3 / +-5 px padding-free shifts.
  assert (resolved.dataset.resize_size, resolved.dataset.resize_width) == (230, 234)
  kept = run.resolve_config(bcnn, ('dataset.image_size', 'dataset.resize_size'))
  assert kept.dataset.resize_size == 454  # set explicitly too: kept


REAL = [p for p in CONFIGS if _load(p).get_config().dataset.name != 'synthetic_parts']


@pytest.mark.parametrize('path', REAL, ids=[os.path.basename(p) for p in REAL])
def test_every_real_dataset_config_has_a_runlocal_smoke_run(path):
  module = _load(path)
  full, small = module.get_config(), module.get_config('runlocal')
  small.lock()
  assert small.model.allow_random_init is True  # no ImageNet weights needed
  methods.get(small.method).check_config(small)  # names, grids, no weights asked for
  assert augment.input_hw(small.dataset)[0] <= 112 < augment.input_hw(full.dataset)[0]
  assert small.train.global_batch_size == 8
  assert small.dataset.name == full.dataset.name


def test_synthetic_configs_are_cpu_sized_with_or_without_runlocal():
  for path in CONFIGS:
    if path in REAL:
      continue
    try:
      config = _load(path).get_config('runlocal')
    except (ValueError, TypeError):
      continue  # refused (the command line turns both into one ERROR line, see above)
    assert augment.input_hw(config.dataset)[0] <= 128, path
    assert config.train.global_batch_size <= 32, path


def test_runlocal_smoke_run_needs_no_weights_and_says_random_init_once(tmp_path):
  proc = _train(tmp_path, 'configs/cub_a3m.py:runlocal',
                f'--config.dataset.manual_dir={tmp_path / "manual"}')
  line = _error(proc)  # the dataset is missing: its files are listed, no weights are asked for
  assert 'cub2011: missing files' in line and 'pretrained' not in proc.stderr, proc.stderr[-2000:]
  assert proc.stdout.count('random init') == 1, proc.stdout
  assert "config.model.backbone='small_cnn'" in proc.stdout, proc.stdout


def test_other_commands(tmp_path):
  line = _error(_cli('evaluate', f'--workdir={tmp_path / "none"}'))
  assert 'config.json does not exist' in line, line
  line = _error(_cli('export', f'--workdir={tmp_path}', '--out=x.npz'))
  assert 'needs --split' in line, line
  line = _error(_cli('predict', f'--workdir={tmp_path}'))
  assert 'no image or folder given' in line, line
  line = _error(_cli('average', str(tmp_path / 'none')))
  assert 'metrics.json does not exist' in line, line
  line = _error(_cli('pretrained', 'convert', '--arch', 'resnet50', '--src',
                     str(tmp_path / 'r.npz'), '--out', str(tmp_path / 'o')))
  assert f"weight file '{tmp_path / 'r.npz'}' does not exist" in line, line
  line = _error(_cli('pretrained', 'convert', '--arch', 'resnet51', '--src', 'x', '--out', 'y'))
  assert "invalid choice: 'resnet51'" in line, line
