"""The shell commands written in README.md and docs/: what tests/test_docs_commands.py runs.

A command is taken from
- a fenced block marked ```bash, ```sh or ```console, every line;
- a fenced block without a language whose first command line starts like a shell command (a
  program, a script path, `NAME=value` assignments or `$VAR`; a diagram or a JSON sample does not);
- an inline code span (it may wrap over lines) that starts with one of `INLINE_PREFIXES`.
Backslash-continued lines are joined, `$ ` prompts stripped, comment lines and trailing comments
dropped, whitespace collapsed: `normalise`.
"""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_LANGUAGES = ('bash', 'sh', 'console', 'shell')
INLINE_PREFIXES = ('python -m fgjax.', 'python -m benchmarks.', 'python docs/', 'python -c ',
                   'pip install')
_FENCE = re.compile(r'^(\s*)(```+|~~~+)\s*([\w+-]*)[^\n]*$')
_SHELL_START = re.compile(
    r'^(\$ )?([A-Za-z_][A-Za-z0-9_]*=\S* )*'
    r'(python3?|pip3?|sbatch|tensorboard|\$[A-Za-z_]\w*|[\w./~-]*/[\w.-]+\.(sh|sbatch|py)|'
    r'[\w./~-]*/bin/[\w.-]+|[\w.-]+\.sh)(\s|$)')
_ASSIGNMENT = re.compile(r'([A-Za-z_]\w*)=(?:"([^"]*)"|\'([^\']*)\'|(\S*))')


def doc_files(root: str = ROOT) -> list[str]:
  """README.md and every Markdown file under docs/, relative to `root`, sorted."""
  found = glob.glob(os.path.join(root, 'docs', '**', '*.md'), recursive=True)
  return ['README.md'] + sorted(os.path.relpath(p, root) for p in found)


def normalise(command: str) -> str:
  """One line: continuations joined, whitespace collapsed, a leading `$ ` prompt dropped."""
  command = re.sub(r'\\\n', ' ', command)
  command = ' '.join(command.split())
  return command[2:] if command.startswith('$ ') else command


def _strip_comment(line: str) -> str:
  """`line` without a trailing `# comment` (a `#` at the start or after a blank, outside quotes)."""
  quote = None
  for i, ch in enumerate(line):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch == '#' and (i == 0 or line[i - 1] in ' \t'):
      return line[:i].rstrip()
  return line


def _block_commands(lines: list[str]) -> list[str]:
  """The commands of a fenced block's lines: continuations joined (a trailing backslash, or a
  synopsis line that starts with `[`), comments dropped, `NAME=value` lines (alone on their line)
  substituted into the later lines as `$NAME`."""
  commands, variables, pending = [], {}, ''
  for line in lines:
    stripped = _strip_comment(line.strip())
    if not pending and not stripped:
      continue
    if stripped.endswith('\\'):
      pending += stripped[:-1] + ' '
      continue
    command = normalise(pending + stripped)
    pending = ''
    assignment = _ASSIGNMENT.fullmatch(command)
    if assignment:
      variables[assignment.group(1)] = next(g for g in assignment.groups()[1:] if g is not None)
      continue
    for name, value in variables.items():
      command = re.sub(r'\$(%s\b|\{%s\})' % (name, name), lambda _, v=value: v, command)
    if command.startswith('[') and commands:
      commands[-1] += ' ' + command
    else:
      commands.append(command)
  if pending.strip():
    commands.append(normalise(pending))
  return commands


def _looks_like_shell(lines: list[str]) -> bool:
  """The block's first command (its continuation lines joined) starts like a shell command."""
  text = re.sub(r'\\\n', ' ', '\n'.join(ln.strip() for ln in lines))
  first = next((ln for ln in text.split('\n') if ln.strip() and not ln.startswith('#')), '')
  first = normalise(first)
  return bool(_SHELL_START.match(first) or _ASSIGNMENT.fullmatch(first))


def extract(text: str) -> list[str]:
  """The commands in Markdown `text`, in order of appearance (duplicates kept)."""
  found, outside, lines, i = [], [], text.split('\n'), 0
  while i < len(lines):
    match = _FENCE.match(lines[i])
    if not match:
      outside.append(lines[i])
      i += 1
      continue
    fence, language = match.group(2), match.group(3).lower()
    body, i = [], i + 1
    while i < len(lines) and not lines[i].strip().startswith(fence):
      body.append(lines[i])
      i += 1
    i += 1  # the closing fence
    outside.append('')  # a fenced block ends a paragraph
    if language in SHELL_LANGUAGES or (not language and _looks_like_shell(body)):
      found.extend(_block_commands(body))
  prose = '\n'.join(outside)
  for span in re.findall(r'(?<!`)`([^`]+)`(?!`)', prose):
    command = normalise(span.replace('\n', ' '))
    if command.startswith(INLINE_PREFIXES):
      found.append(command)
  return found


def commands_by_file(root: str = ROOT) -> dict[str, list[str]]:
  """{file relative to root: its distinct commands in order of appearance}."""
  out = {}
  for name in doc_files(root):
    with open(os.path.join(root, name), encoding='utf-8') as f:
      commands = extract(f.read())
    out[name] = list(dict.fromkeys(commands))
  return out
