"""README's two quick-start commands exist, and CI runs the test command verbatim from README."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(name):
  out = subprocess.run(['bash', os.path.join(ROOT, '.ci', 'readme_command.sh'), name],
                       capture_output=True, text=True, check=True)
  return out.stdout.strip()


def test_quickstart_commands():
  demo, test = _command('demo'), _command('test')
  assert 'pip install' in demo and 'python -m fgjax.train --config=configs/demo.py' in demo
  assert os.path.exists(os.path.join(ROOT, 'configs', 'demo.py'))
  assert "pip install -e '.[test]'" in test and 'pytest' in test
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  # The two commands are the first code blocks of the README.
  assert readme.index(demo) < readme.index(test) < readme.index('## ')


def test_ci_runs_the_readme_test_command():
  with open(os.path.join(ROOT, '.ci', 'run')) as f:
    script = f.read()
  assert 'readme_command.sh test' in script and 'bash -c "$cmd"' in script


def test_missing_block_is_an_error(tmp_path):
  os.makedirs(tmp_path / '.ci')
  with open(os.path.join(ROOT, '.ci', 'readme_command.sh')) as f:
    (tmp_path / '.ci' / 'readme_command.sh').write_text(f.read())
  (tmp_path / 'README.md').write_text('# nothing here\n')
  out = subprocess.run(['bash', str(tmp_path / '.ci' / 'readme_command.sh'), 'test'],
                       capture_output=True, text=True)
  assert out.returncode == 2 and 'quickstart:test' in out.stderr


def test_settings_listing_command_runs():
  """README's command that lists a method's settings (config.model, derived from the module)."""
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  start = readme.index('`python -c "from fgjax import methods;')
  cmd = readme[start + 1:readme.index('`', start + 1)]
  out = subprocess.run(['bash', '-c', cmd], capture_output=True, text=True, cwd=ROOT, check=True)
  # a3m's loss weights are values, not the "variant default" placeholders of older versions.
  assert 'alpha: 0.5' in out.stdout and 'attribute_classes' in out.stdout
  assert '-1.0' not in out.stdout
