"""DESIGN.md's map and the tree agree: every module the layout names exists and every module of the
package is named; every method has its five places (method module, model, configs, page, tests)."""

import glob
import os
import re

from fgjax import methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _design():
  with open(os.path.join(ROOT, 'DESIGN.md')) as f:
    return f.read()


def _layout() -> str:
  text = _design()
  start = text.index('```\nfgjax/\n')
  return text[start:text.index('```\n', start + 4)]


def test_layout_names_every_module_and_only_existing_ones():
  layout = _layout()
  named = set(re.findall(r'([a-z_0-9]+\.py)', layout))
  package = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, 'fgjax', '**', '*.py'),
                                                    recursive=True)}
  package -= {'__init__.py'}
  # Builders are named by their folder; every other module by name.
  builders = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, 'fgjax', 'data',
                                                                  'builders', '*.py'))}
  assert sorted(package - named - builders) == []
  assert sorted(named - package - {'__init__.py', 'test_multiprocess.py'}) == []
  for folder in re.findall(r'^  ([a-z_]+)/', layout, flags=re.M):
    assert os.path.isdir(os.path.join(ROOT, 'fgjax', folder)), folder


def test_every_method_has_its_five_places():
  text = _design()
  table = text[text.index('## Every method has the same five places'):]
  rows = [r for r in table.splitlines() if r.startswith('| `')]
  listed = set()
  for row in rows:
    cells = [c.strip() for c in row.strip('|').split('|')]
    names = re.findall(r'`([a-z_0-9]+)`', cells[0])
    listed.update(names)
    for cell in cells[1:]:
      paths = re.findall(r'`([^`]+)`', cell)
      assert paths, row
      for path in paths:
        path = path if '/' in path else f'configs/{path}'
        assert glob.glob(os.path.join(ROOT, path)), f'{path} (row {names}) does not exist'
  assert listed == set(methods.METHODS)
  modules = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'fgjax', 'methods',
                                                                     '*.py'))}
  assert modules - {'__init__', 'common', 'two_stream'} <= {m for m in listed} | {'bcnn'}
  for name in methods.METHODS:
    page = 'bcnn' if name.startswith('bcnn') else name
    assert os.path.exists(os.path.join(ROOT, 'docs', 'methods', f'{page}.md'))
