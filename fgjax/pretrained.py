"""Import ImageNet weights that users bring (nothing is downloaded) into fgjax weight directories.

    python -m fgjax.pretrained convert --arch resnet50 --src resnet50-11ad3fa6.pth --out DIR
    python -m fgjax.pretrained convert --arch vggm --src imagenet-vgg-m.mat --out DIR

Sources: torchvision state_dicts as `.pth`/`.pt` (read with `torch.load(weights_only=True)`, so a
pickle carrying code is refused, never executed; needs torch), `.safetensors` (needs the
`safetensors` package) or `.npz` (read with `allow_pickle=False`), all with torchvision's tensor
names; MatConvNet `imagenet-vgg-m.mat` (scipy.io) for `vggm`.

DIR gets an Orbax pytree `{'params', 'batch_stats'}` for the backbone with its ImageNet head,
`preprocessing.json` (the mean/std/channel order these weights expect, so a config cannot pair
them with the wrong input normalisation) and `source.json` (arch, source file and its sha256).
Load it with the weight field of the method (`weights_hint`): `config.model.backbone_pretrained=DIR`
(the one-backbone methods: a3m, activation_attention, focus_discriminate, classifier),
`config.model.backbone_a_pretrained=DIR` / `backbone_b_pretrained=DIR` (the streams of bcnn,
bcnn_spp, bilinear_lstm), or `config.init_from`. `--method NAME` names that method's fields only.

Errors (a missing or unreadable file, an existing --out) exit 2 with one line `ERROR: ...` (the
traceback too with --verbosity=1 or FGJAX_TRACEBACK=1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping

import numpy as np
import orbax.checkpoint as ocp
import scipy.io

from fgjax import checkpoint, cli, methods
from fgjax.models import backbones
from fgjax.models.backbones import preprocessing as prep_lib, resnet, small, vgg

ARCHS = ('resnet50', 'vgg16', 'vgg19', 'vggm')


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """{name: array} from a .pth/.pt, .safetensors or .npz file (no code is ever unpickled)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'weight file {path!r} does not exist')
  ext = os.path.splitext(path)[1].lower()
  if ext in ('.pth', '.pt'):
    try:
      import torch  # pylint: disable=g-import-not-at-top  # optional (bench extra), .pth only
    except ImportError:
      raise ImportError(f'reading {path} needs PyTorch (pip install torch==2.13.0); or convert it '
                        'to .npz/.safetensors elsewhere') from None
    try:
      obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
      raise ValueError(f'{path} is not a plain torch state_dict (refused by '
                       f'torch.load(weights_only=True)): {e}') from e
    if isinstance(obj, Mapping) and 'state_dict' in obj and isinstance(obj['state_dict'], Mapping):
      obj = obj['state_dict']
    if not isinstance(obj, Mapping):
      raise ValueError(f'{path} holds a {type(obj).__name__}, not a state_dict of tensors')
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, 'detach')}
  if ext == '.safetensors':
    try:
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top  # optional
    except ImportError:
      raise ImportError(f'reading {path} needs `pip install safetensors`') from None
    return dict(load_file(path))
  if ext == '.npz':
    try:
      with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
    except ValueError as e:
      raise ValueError(f'{path}: refusing a .npz that needs pickle (object arrays): {e}') from e
  raise ValueError(f'unsupported weight file {path!r}: expected .pth, .pt, .safetensors or .npz '
                   '(or .mat for --arch vggm)')


def from_torchvision(arch: str, state_dict: Mapping[str, np.ndarray],
                     include_top: bool = True) -> dict:
  """Flax variables {'params', 'batch_stats'?} of backbone `arch` from a torchvision state_dict."""
  if arch == 'resnet50':
    return resnet.from_torchvision(state_dict, include_top=include_top)
  if arch in ('vgg16', 'vgg19'):
    return vgg.from_torchvision(arch, state_dict, include_top=include_top)
  raise ValueError(f'no torchvision mapping for arch {arch!r}; valid: resnet50, vgg16, vgg19')


def load_source(arch: str, src: str) -> tuple[dict, prep_lib.Preprocessing]:
  """(variables with the ImageNet head, preprocessing) for a weight file of `arch`."""
  if arch not in ARCHS:
    raise ValueError(f'unknown arch {arch!r}; valid: {", ".join(ARCHS)}')
  if arch == 'vggm':
    if not src.lower().endswith('.mat'):
      raise ValueError(f'--arch vggm reads a MatConvNet .mat file (imagenet-vgg-m.mat), got {src}')
    if not os.path.isfile(src):
      raise FileNotFoundError(f'weight file {src!r} does not exist')
    net = scipy.io.loadmat(src, squeeze_me=True, struct_as_record=False)
    return vgg.from_matconvnet_vggm(net)
  return from_torchvision(arch, read_tensors(src)), prep_lib.TORCHVISION


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def convert(arch: str, src: str, out: str) -> str:
  """Convert `src` and write the weight directory `out` (see module docstring)."""
  variables, preprocessing = load_source(arch, src)
  return _write(out, variables, preprocessing,
                {'arch': arch, 'source': os.path.abspath(src), 'sha256': _sha256(src)})


def _write(out: str, variables: dict, preprocessing, source: dict) -> str:
  """A weight directory: weights/ (Orbax), preprocessing.json, source.json; never overwritten."""
  out = os.path.abspath(out)
  if os.path.exists(os.path.join(out, 'weights')):
    raise FileExistsError(f'{out} already holds converted weights; choose another --out')
  os.makedirs(out, exist_ok=True)
  writer = ocp.StandardCheckpointer()
  writer.save(os.path.join(out, 'weights'), variables)
  writer.wait_until_finished()
  preprocessing.save(out)
  with open(os.path.join(out, 'source.json'), 'w') as f:
    json.dump(source, f, indent=2)
  return out


def export(workdir: str, out: str, prefix: str = 'backbone') -> str:
  """The backbone of a fgjax run (the param subtree `prefix` of its latest checkpoint, e.g. a
  `classifier` run pretrained on `synthetic_parts/pretrain`) as a weight directory in the format
  `convert` writes, so that any method loads it through its `*_pretrained` fields."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: --workdir must be a run written by '
                            'python -m fgjax.train')
  with open(path) as f:
    model = json.load(f)['model']
  if prefix not in model or not isinstance(model[prefix], str):
    raise ValueError(f'{path}: config.model has no backbone field {prefix!r} (a backbone name); '
                     'name one with --prefix (e.g. backbone_a)')
  arch, kwargs = model[prefix], dict(model.get(f'{prefix}_kwargs') or {})
  variables = checkpoint.read_variables(workdir)
  tree = {k: v[prefix] for k, v in variables.items() if prefix in v}
  if 'params' not in tree:
    raise ValueError(f'{workdir}: the checkpoint has no params under {prefix!r}')
  if model.get(f'{prefix}_pretrained'):
    preprocessing = prep_lib.Preprocessing.load(model[f'{prefix}_pretrained'])
  else:
    preprocessing = (getattr(backbones.get_backbone(arch, **kwargs), 'preprocessing', None)
                     or small.OWN_PREPROCESSING)
  return _write(out, tree, preprocessing, {'arch': arch, 'kwargs': kwargs,
                                           'source': os.path.abspath(workdir),
                                           'param_prefix': prefix})


def read_source_info(directory: str) -> dict:
  """The source.json of a weight directory (arch, source file, ...); FileNotFoundError naming what
  is missing: the directory itself, or its source.json (then it is not a weight directory)."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'the weight directory {directory} does not exist: write it with '
                            f'python -m fgjax.pretrained convert --arch ARCH --src FILE '
                            f'--out {directory}')
  path = os.path.join(directory, 'source.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} is missing: {directory} was not written by '
                            '`python -m fgjax.pretrained convert`')
  with open(path) as f:
    return json.load(f)


def weights_hint(out: str, method: str | None = None) -> str:
  """How to load the weight directory `out`: the `*_pretrained` fields of `method`, or of every
  method (grouped by field, with the methods that have it)."""
  names = [method] if method else methods.list_methods()
  users: dict[str, list[str]] = {}
  for name in names:
    for field in methods.get(name).default_model_config():
      if field.endswith('_pretrained'):
        users.setdefault(field, []).append(name)
  if method:
    return 'use it with ' + ' or '.join(f'--config.model.{f}={out}' for f in users)
  groups = {}
  for field, who in users.items():
    groups.setdefault(tuple(who), []).append(field)
  return 'use it with ' + '; '.join(
      ' or '.join(f'--config.model.{f}={out}' for f in fields) + f' ({", ".join(who)})'
      for who, fields in groups.items())


class _Parser(argparse.ArgumentParser):
  """argparse with fgjax's usage errors: one line `ERROR: ...`, exit status 2."""

  def error(self, message):
    print(f'ERROR: {message} ({self.prog} --help)', file=sys.stderr, flush=True)
    sys.exit(2)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = _Parser(prog='python -m fgjax.pretrained', description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument('-v', '--verbosity', type=int, default=0,
                      help='1: print the traceback of an error too')
  sub = parser.add_subparsers(dest='command', required=True, parser_class=_Parser)
  conv = sub.add_parser('convert', parents=[common],
                        help='convert an ImageNet weight file into a weight directory')
  conv.add_argument('--arch', required=True, choices=ARCHS)
  conv.add_argument('--src', required=True, help='.pth/.pt/.safetensors/.npz (torchvision names) '
                    'or .mat (MatConvNet, vggm)')
  conv.add_argument('--out', required=True, help='output directory (must not hold weights yet)')
  conv.add_argument('--method', choices=methods.list_methods(),
                    help='the method that will load it: its weight fields are named at the end')
  exp = sub.add_parser('export', parents=[common],
                       help="a fgjax run's backbone as a weight directory")
  exp.add_argument('--workdir', required=True, help='a run written by python -m fgjax.train')
  exp.add_argument('--out', required=True, help='output directory (must not hold weights yet)')
  exp.add_argument('--prefix', default='backbone',
                   help="the run's backbone field / param subtree (backbone, backbone_a, ...)")
  exp.add_argument('--method', choices=methods.list_methods(),
                   help='the method that will load it: its weight fields are named at the end')
  args = parser.parse_args(argv)
  expand = lambda p: os.path.expanduser(os.path.expandvars(p))
  try:
    out = (export(expand(args.workdir), expand(args.out), args.prefix)
           if args.command == 'export' else convert(args.arch, expand(args.src), expand(args.out)))
  except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
    cli.report(e, ['pretrained'] + argv)
    return 2
  print(f'wrote {out} (weights/, preprocessing.json, source.json); '
        f'{weights_hint(out, args.method)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
