"""What the entry points (train, evaluate, export, predict, average, pretrained) share: their flags,
their error and exit conventions, --help, logging and multi-process start-up.

Flags more than one command takes are defined here once, so that the entry points can be imported
together (tests) without a DuplicateFlagError; flags only one command takes are defined in it.

Every absl command runs as ``cli.run(main, shared=(...), required=(...), user_errors=(...))``:
- exit 0: done;
- exit 2: a problem the user fixes, found before any work: a flag or config file error (a missing
  or misspelt config file, a config argument it does not take, a misspelt field: the message lists
  the fields of that block), a `ConfigError` (config checks, missing data or weights, workdir),
  app.UsageError, or one of the command's `user_errors`: one line ``ERROR: <message>`` on stderr
  (a list of problems may follow on indented lines), no traceback;
- exit 1: one of the command's `fatal_errors` (one ``ERROR:`` line), or anything else (Python's
  traceback).
The traceback of an exit-2 error is printed too with --verbosity=1 (or more) or FGJAX_TRACEBACK=1.
--help prints the command's own flags, the configs in configs/ and how to print a config.
"""

import ast
import difflib
import functools
import importlib.util
import inspect
import logging as std_logging
import os
import re
import sys
import textwrap
import traceback

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags
import tensorflow_datasets as tfds

from fgjax import sharding
from fgjax.default_config import ConfigError, error_text

TRACEBACK_ENV = 'FGJAX_TRACEBACK'
HELP_ARGS = ('--help', '-help', '--helpshort', '-helpshort', '-?', '-h')
WIDTH = 100

CONFIG = config_flags.DEFINE_config_file(
    'config', None, "Config file (get_config()). train: required; evaluate, export: default the "
    "run's own WORKDIR/config.json.", lock_config=True)
WORKDIR = flags.DEFINE_string(
    'workdir', None, "The run's directory: train writes config.json, checkpoints/ and metrics "
    'there; evaluate, export, export_model, predict and search read them.')
SPLIT = flags.DEFINE_string('split', None, 'Dataset split. evaluate: default '
                            'config.dataset.eval_split; export: required.')
OUT = flags.DEFINE_string('out', None, 'Output file. export: the .npz (required); average: also '
                          'write the result to this JSON file.')
PROGRESS = flags.DEFINE_boolean('progress', False, 'export, predict, search: progress on stderr '
                                'even when it is not a terminal.')
EMBEDDING = flags.DEFINE_string('embedding', None, 'The method output used as the embedding '
                                '(default: config.eval.embedding).')
OVERWRITE = flags.DEFINE_boolean('overwrite', False, 'Replace --out if it exists.')
TOPK = flags.DEFINE_integer('topk', None, 'predict: classes per image (default 5, or all classes '
                            'when there are fewer); search: gallery matches per query (default '
                            '10, or the whole gallery when it is smaller).')
STEP = flags.DEFINE_integer('step', None, 'predict, export_model: the checkpoint step (default: '
                            'the latest).')

_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    "jax.distributed: 'auto' starts it when --coordinator_address is given or SLURM / Cloud TPU "
    "is detected; 'on' always (JAX reads the cluster from the environment); 'off' never.")
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 (bare clusters, local multi-process).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (0-based).')
_LOCAL_DEVICES = flags.DEFINE_integer('local_device_count', None,
                                      'Fake CPU devices per process (testing / debugging).')


# ---- errors and exit codes ----------------------------------------------------------------------

def wants_traceback(argv) -> bool:
  """True with FGJAX_TRACEBACK=1 (any value but '', 0, false, no) or --verbosity / -v >= 1 in argv
  (read from argv: the flags may not have been parsed when the error happened)."""
  if os.environ.get(TRACEBACK_ENV, '').lower() not in ('', '0', 'false', 'no'):
    return True
  for i, arg in enumerate(argv[1:], 1):
    match = re.fullmatch(r'--?(?:verbosity|v)(?:=(.*))?', arg)
    if match:
      value = match.group(1) if match.group(1) is not None else ''.join(argv[i + 1:i + 2])
      try:
        return int(value) >= 1
      except ValueError:
        return False
  return False


def report(e: BaseException, argv, message: str | None = None) -> None:
  """Print `e` as the one `ERROR: ...` line on stderr (its traceback first when asked for:
  `wants_traceback`)."""
  if wants_traceback(argv):
    traceback.print_exception(e)
  text = error_text(e) if message is None else message
  print(f'ERROR: {text}', file=sys.stderr, flush=True)


def _fail(e: BaseException, argv, message: str | None = None, code: int = 2):
  report(e, argv, message)
  sys.exit(code)


def _guarded(main, user_errors: tuple, fatal_errors: tuple, argv):
  try:
    return main(argv)
  except (ConfigError, app.UsageError) + user_errors as e:
    _fail(e, sys.argv)
  except fatal_errors as e:
    _fail(e, sys.argv, code=1)


def run(main, *, shared=(), required=(), user_errors=(), fatal_errors=()) -> None:
  """`absl.app.run(main)` with fgjax's conventions (the module docstring): flag and config file
  errors, a ConfigError, app.UsageError and `user_errors` exit 2 with one `ERROR:` line;
  `fatal_errors` exit 1 with one `ERROR:` line. `shared`: the flags of this module the command
  takes (its --help lists them, and the configs when it takes --config); `required`: flags that
  must be given (checked after --help, so that --help needs none)."""
  app.run(functools.partial(_guarded, main, tuple(user_errors), tuple(fatal_errors)),
          flags_parser=functools.partial(parse_flags, shared=tuple(shared),
                                         required=tuple(required)))


# ---- flags and the config file --------------------------------------------------------------

def _flag_argument(argv, name: str) -> str | None:
  """The value of the last --name=VALUE / --name VALUE in argv, else None."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    match = re.fullmatch(rf'--?{name}(?:=(.*))?', arg)
    if match:
      value = match.group(1) if match.group(1) is not None else ''.join(argv[i + 1:i + 2])
  return value


def _override_paths(argv) -> list[str]:
  """The FIELD of every --config.FIELD=VALUE in argv."""
  paths = []
  for arg in argv[1:]:
    match = re.match(r'--?(?:no)?config\.([^=\s]+)', arg)
    if match:
      paths.append(match.group(1))
  return paths


def config_dir(near: str | None = None) -> str | None:
  """The folder of config files: `near` (a directory) when it holds any, else ./configs, else the
  configs/ folder next to the fgjax package (a source checkout); None when there is none."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for directory in (near, 'configs', os.path.join(root, 'configs')):
    if directory and os.path.isdir(directory) and any(
        n.endswith('.py') for n in os.listdir(directory)):
      return directory
  return None


def list_configs(directory: str) -> list[tuple[str, str]]:
  """(file name, the first line of its docstring) of every config file in `directory`, sorted.
  Read, not imported."""
  out = []
  for name in sorted(os.listdir(directory)):
    if not name.endswith('.py') or name.startswith('_'):
      continue
    try:
      with open(os.path.join(directory, name)) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ''
    except (OSError, SyntaxError, ValueError):
      doc = ''
    out.append((name, doc.strip().split('\n')[0]))
  return out


def check_config_file(value: str) -> None:
  """ConfigError when the file of --config=FILE[:ARG] does not exist, naming it, the closest
  config names and where the configs are."""
  path = value.split(':', 1)[0]
  if not path:
    raise ConfigError('--config is empty: give a config file, e.g. --config=configs/demo.py')
  if os.path.isfile(path):
    return
  directory = config_dir(os.path.dirname(path) or None)
  names = [n for n, _ in list_configs(directory)] if directory else []
  close = difflib.get_close_matches(os.path.basename(path), names, 3, 0.6)
  shown = os.path.relpath(directory) if directory else ''
  hint = f' (did you mean {" or ".join(os.path.join(shown, c) for c in close)}?)' if close else ''
  where = (f'; the {len(names)} configs are in {shown}{os.sep} (--help lists them)' if names
           else '; the configs are in the configs/ folder of the fgjax source tree')
  raise ConfigError(f'config file {path} does not exist (--config={value}){hint}{where}')


def load_config_file(value: str) -> ml_collections.ConfigDict:
  """get_config(ARG) of --config=FILE[:ARG], as ml_collections.config_flags calls it, with every
  failure a ConfigError naming the file (used to explain a flag error)."""
  check_config_file(value)
  path, has_arg, arg = value.partition(':')
  try:
    spec = importlib.util.spec_from_file_location('fgjax_cli_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  # the user's file: name it
    raise ConfigError(f'{path} cannot be loaded: {type(e).__name__}: {error_text(e)}') from e
  get_config = getattr(module, 'get_config', None)
  if get_config is None:
    raise ConfigError(f'{path} has no get_config(): it is not a config file')
  if has_arg and not inspect.signature(get_config).parameters:
    raise ConfigError(f'{path} takes no argument (--config={value}): use --config={path} and '
                      '--config.FIELD=VALUE overrides')
  try:
    config = get_config(arg) if has_arg else get_config()
  except Exception as e:  # pylint: disable=broad-except  # a bad argument, or the user's file
    raise ConfigError(f'--config={value}: {error_text(e)}') from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'{path}: get_config() returned a {type(config).__name__}, not a ConfigDict')
  return config


def check_override(config, path: str) -> str | None:
  """The error of the override --config.PATH=... on `config` when PATH names no field: the
  block's fields and the closest name; None when it does (or cannot be followed: tuples)."""
  node, parts = config, path.split('.')
  for i, key in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or '[' in key:
      return None
    if key not in node:
      block = '.'.join(['config'] + parts[:i])
      fields = sorted(node.keys())
      close = difflib.get_close_matches(key, fields, 1)
      hint = f' (did you mean {block}.{close[0]}?)' if close else ''
      return (f'--config.{path}: {block} has no field {key!r}{hint}; its fields: '
              f'{", ".join(fields) or "none"}')
    node = node[key]
  return None


def _explain_flag_error(e: BaseException, argv) -> str:
  value = _flag_argument(argv, 'config')
  if value is not None and 'config' in flags.FLAGS:
    try:
      config = load_config_file(value)
    except ConfigError as err:
      return str(err)
    for path in _override_paths(argv):
      message = check_override(config, path)
      if message:
        return message
  text = error_text(e).split('Traceback (most recent call last)')[0].strip()
  return text or type(e).__name__


def _help_text(argv, shared) -> str:
  """--help: the command's docstring, its flags, the config files and how to print one."""
  command = os.path.splitext(os.path.basename(argv[0]))[0]
  doc = (sys.modules['__main__'].__doc__ or f'python -m fgjax.{command} [flags]').strip()
  own = flags.FLAGS.get_flags_for_module(argv[0]) or flags.FLAGS.get_flags_for_module('__main__')
  lines = [doc, '', 'flags:']
  for flag in sorted(set(own), key=lambda f: f.name) + [flags.FLAGS[n] for n in shared]:
    default = '' if flag.default in (None, '') else f' (default: {flag.default_as_str})'
    lines += textwrap.wrap(f'--{flag.name}: {flag.help}{default}', WIDTH, initial_indent='  ',
                           subsequent_indent='      ')
  directory = config_dir()
  if 'config' in shared and directory:
    shown = os.path.relpath(directory)
    lines += [''] + textwrap.wrap(
        f'configs (--config={shown}/NAME.py; an argument after a colon, e.g. :runlocal, the CPU '
        'smoke run of a real-dataset config):', WIDTH)
    names = list_configs(directory)
    width = max(len(n) for n, _ in names)
    lines += [f'  {n:<{width}}  ' + textwrap.shorten(first or '-', WIDTH - width - 4,
                                                    placeholder=' ...') for n, first in names]
    lines += ['', "A config's fields and values (after --config.FIELD=VALUE overrides), without "
              'training:', f'  python -m fgjax.train --config={shown}/NAME.py --print_config']
  lines += [''] + textwrap.wrap(
      f'Errors print one line, ERROR: ..., and exit 2 (the traceback too with --verbosity=1 or '
      f"{TRACEBACK_ENV}=1). Every flag, other libraries' too: --helpfull.", WIDTH)
  return '\n'.join(lines)


def parse_flags(argv, shared=(), required=()):
  """absl's flags parser (app.run's `flags_parser`) with fgjax's conventions: --help prints
  `_help_text` and exits 0; every flag or config error exits 2 with one `ERROR:` line."""
  if any(a in HELP_ARGS for a in argv[1:]):
    print(_help_text(argv, shared))
    sys.exit(0)
  try:
    value = _flag_argument(argv, 'config')
    if value is not None and 'config' in flags.FLAGS:
      check_config_file(value)
    rest = flags.FLAGS(argv)
    if value is not None and 'config' in flags.FLAGS:
      dict(flags.FLAGS.config.items())  # a file that failed to load raises its error here
  except ConfigError as e:
    _fail(e, argv)
  except Exception as e:  # pylint: disable=broad-except  # flags.Error, ml_collections' errors
    _fail(e, argv, _explain_flag_error(e, argv))
  command = f'python -m fgjax.{os.path.splitext(os.path.basename(argv[0]))[0]}'
  for name in required:
    if flags.FLAGS[name].value is None:
      example = ' (e.g. --config=configs/demo.py; --help lists the configs)'
      _fail(ConfigError(name), argv,
            f'{command} needs --{name}{example if name == "config" else ""}')
  return rest


def overridden_fields() -> tuple[str, ...]:
  """The dotted config fields set on the command line (--config.FIELD=VALUE)."""
  return tuple(config_flags.get_override_values(flags.FLAGS['config']))


# ---- start-up -------------------------------------------------------------------------------

# stdout lines of other libraries dropped by `quiet_third_party` (tfds' own download banner,
# "Unknown size" for generated datasets, and its TensorFlow-not-installed banner).
NOISE = re.compile(r'^(Downloading and preparing dataset |Dataset \S+ downloaded and prepared to |'
                   r'Failed to import TensorFlow|\*{20,}$)')
_ANSI = re.compile(r'\x1b\[[0-9;]*m')


class QuietStdout:
  """A text stream that forwards whole lines to `stream` except those matching `noise` (and the
  blank lines around them); every other attribute is the stream's."""

  def __init__(self, stream, noise=NOISE):
    self._stream, self._noise = stream, noise
    self._pending, self._blank, self._after_noise = '', 0, False

  def write(self, text: str) -> int:
    self._pending += text
    while '\n' in self._pending:
      line, self._pending = self._pending.split('\n', 1)
      plain = _ANSI.sub('', line).strip()
      if not plain:
        self._blank += 0 if self._after_noise else 1
      elif self._noise.search(plain):
        self._blank, self._after_noise = 0, True
      else:
        self._stream.write('\n' * self._blank + line + '\n')
        self._blank, self._after_noise = 0, False
    return len(text)

  def flush(self) -> None:
    if self._blank or self._pending:
      self._stream.write('\n' * self._blank + self._pending)
      self._blank, self._pending = 0, ''
    self._stream.flush()

  def __getattr__(self, name):
    return getattr(self._stream, name)


def _not_tfds_chatter(record: std_logging.LogRecord) -> bool:
  """Keeps a log record unless it is a tfds warning or info line (OpenCV missing, a variant folder
  without dataset_info.json, ...)."""
  return record.levelno >= std_logging.ERROR or 'tensorflow_datasets' not in record.pathname


def quiet_third_party() -> None:
  """Silence other libraries' noise, keep fgjax's lines: tfds' warnings, its progress bars when
  stderr is not a terminal, and its stdout banners (`QuietStdout`)."""
  absl_logger = logging.get_absl_logger()
  if _not_tfds_chatter not in absl_logger.filters:
    absl_logger.addFilter(_not_tfds_chatter)
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()
  if not isinstance(sys.stdout, QuietStdout):
    sys.stdout = QuietStdout(sys.stdout)


def quiet() -> None:
  """Quiet library INFO logs and other libraries' noise (`quiet_third_party`) unless --verbosity
  was given."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
    quiet_third_party()


def start() -> None:
  """`quiet()`, then start jax.distributed if needed."""
  quiet()
  what = sharding.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                             _PROCESS_ID.value, _LOCAL_DEVICES.value)
  if what != 'single process':
    print(what, flush=True)
