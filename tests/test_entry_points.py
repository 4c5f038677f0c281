"""The commands (python -m fgjax.<name>) import fgjax.run, fgjax.cli and libraries, never another
command, and define their flags at import: all of them import into one process (no
DuplicateFlagError), and a flag two commands take is fgjax.cli's."""

import ast
import importlib
import os

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ('train', 'evaluate', 'export', 'predict', 'average', 'search', 'export_model')


def _imported_fgjax_modules(name):
  with open(os.path.join(ROOT, 'fgjax', f'{name}.py')) as f:
    tree = ast.parse(f.read())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module)
      found |= {f'{node.module}.{a.name}' for a in node.names}
  return {m for m in found if m.startswith('fgjax.')}


def test_no_entry_point_imports_another():
  for name in ENTRY_POINTS:
    others = {f'fgjax.{e}' for e in ENTRY_POINTS if e != name}
    assert not _imported_fgjax_modules(name) & others, name


def test_entry_points_import_together_and_share_cli_flags():
  modules = [importlib.import_module(f'fgjax.{name}') for name in ENTRY_POINTS]  # no error
  assert not any(hasattr(m, 'define_flags') for m in modules)  # flags defined at import
  shared = {f.name for f in flags.FLAGS.flags_by_module_dict()['fgjax.cli']}
  assert {'config', 'workdir', 'split', 'out', 'progress'} <= shared
