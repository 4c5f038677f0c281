"""--help lists the configs and how to print one; --print_config prints a config without training;
convert names the weight field of the method; a command's output carries fgjax's lines, not other
libraries' noise. The commands run as subprocesses, as a user runs them."""

import ast
import glob
import io
import os
import subprocess
import sys

import numpy as np

from fgjax import cli, pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))
FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'torchvision_resnet50.npz')


def _cli(module, *args, env=None, timeout=300):
  base = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'FGJAX_TRACEBACK')}
  return subprocess.run([sys.executable, '-m', f'fgjax.{module}', *args], cwd=ROOT,
                        env={**base, **(env or {})}, capture_output=True, text=True,
                        timeout=timeout)


def _first_doc_line(path):
  with open(path) as f:
    return ast.get_docstring(ast.parse(f.read())).strip().split('\n')[0]


def test_train_help_lists_the_configs_and_print_config():
  proc = _cli('train', '--help')
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  for path in CONFIGS:
    name = os.path.basename(path)
    line = next((ln for ln in lines if ln.split() and ln.split()[0] == name), None)
    assert line is not None, name
    assert ' '.join(_first_doc_line(path).split()[:2]) in line, (name, line)
  assert 'python -m fgjax.train --config=configs/NAME.py --print_config' in proc.stdout
  assert '--workdir' in proc.stdout and '--print_config' in proc.stdout
  assert 'absl' not in proc.stdout and 'jax_' not in proc.stdout  # only this command's flags
  assert max(len(ln) for ln in lines) <= 100


def test_evaluate_help_lists_its_flags_and_the_configs():
  proc = _cli('evaluate', '--help')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '--svm_c' in proc.stdout and '--workdir' in proc.stdout
  assert 'demo.py' in proc.stdout


def test_print_config_prints_fields_and_values_without_work(tmp_path):
  proc = _cli('train', '--config=configs/synthetic_bcnn.py', '--config.optim.learning_rate=0.02',
              '--config.dataset.image_size=448', '--print_config',
              env={'TFDS_DATA_DIR': str(tmp_path / 'tfds')})
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert 'method: bcnn' in out and '  learning_rate: 0.02' in out
  assert '  image_size: 448' in out and '  resize_size: 512' in out  # derived: 448 * 8 / 7
  assert 'config.dataset.resize_size=512: derived' in proc.stderr
  assert os.listdir(tmp_path) == []  # no dataset built, no workdir


def test_convert_names_the_weight_field_of_the_method(tmp_path):
  with np.load(FIXTURE, allow_pickle=False) as f:
    names, shapes = list(f['names']), f['shapes']
  # Only the names and shapes matter for the hint: zeros, unpadded as the fixture's loader does.
  state = {str(n): np.zeros([int(d) for d in s if d >= 0], np.float32)
           for n, s in zip(names, shapes)}
  np.savez(tmp_path / 'r50.npz', **state)
  out = tmp_path / 'r50'
  proc = _cli('pretrained', 'convert', '--arch', 'resnet50', '--src', str(tmp_path / 'r50.npz'),
              '--out', str(out), '--method', 'a3m')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith(f'use it with --config.model.backbone_pretrained={out}')
  assert 'backbone_a_pretrained' not in proc.stdout


def test_weights_hint_without_a_method_names_each_field_with_its_methods():
  hint = pretrained.weights_hint('/w')
  assert ('--config.model.backbone_pretrained=/w (a3m, activation_attention, classifier, '
          'focus_discriminate)') in hint, hint
  assert ('--config.model.backbone_a_pretrained=/w or --config.model.backbone_b_pretrained=/w '
          '(bcnn, bcnn_spp, bilinear_lstm)') in hint, hint


def test_no_third_party_noise_in_a_tiny_run(tmp_path):
  """A tiny run (image_size 80 on a config resized to 72: the resize is derived) prints fgjax's
  lines and nothing of tfds (OpenCV warning, 'Unknown size' banner, progress bars)."""
  proc = _cli('train', '--config=configs/synthetic_bcnn.py', f'--workdir={tmp_path / "w"}',
              '--config.dataset.config=tiny', f'--config.dataset.data_dir={tmp_path / "tfds"}',
              '--config.train.num_epochs=0.34', '--config.dataset.image_size=80',
              '--config.dataset.num_threads=1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = proc.stdout + proc.stderr
  for noise in ('OpenCV', 'TensorFlow', 'Unknown size', 'Generating splits', '%|',
                'dataset_info.json'):
    assert noise not in text, (noise, text[-3000:])
  assert "preparing dataset 'synthetic_parts'" in proc.stdout
  assert 'config.dataset.resize_size=91' in proc.stdout  # round(80 * 8 / 7)
  assert 'final evaluation' in proc.stdout and proc.stderr == ''


def test_quiet_stdout_drops_tfds_banners_and_keeps_other_lines():
  sink = io.StringIO()
  out = cli.QuietStdout(sink)
  print('preparing dataset x', file=out)
  print('\n\n' + '*' * 63, file=out)
  print('Failed to import TensorFlow. Please note that TensorFlow is not installed', file=out)
  print('*' * 63 + '\n\n', file=out)
  print('\x1b[1mDownloading and preparing dataset Unknown size (download: Unknown size)\x1b[0m',
        file=out)
  print('\x1b[1mDataset cub2011 downloaded and prepared to /d. Subsequent calls\x1b[0m', file=out)
  print('step 1/2', file=out)
  print('', file=out)
  print('final', end='', file=out)
  out.flush()
  assert sink.getvalue() == 'preparing dataset x\nstep 1/2\n\nfinal'
