"""Export a trained run's evaluation-time model for deployment: StableHLO or ONNX.

python -m fgjax.export_model --workdir=DIR --format=stablehlo|onnx --out=PATH [--batch=N]
    [--step=S] [--embedding=NAME] [--platforms=cpu,cuda,tpu] [--part=NAME] [--overwrite]

The exported function takes uint8 NHWC images at the run's input size (the output of its
evaluation preprocessing: resize and centre crop, `fgjax.data.augment.preprocess`) and returns
`logits` (B, C) and the method's embedding (B, D) (`--embedding`, default config.eval.embedding),
both float32; the model's input normalisation, the method's own steps (bilinear_lstm's scan,
activation_attention's Otsu masks and crops, focus_discriminate's NMS and crops) and the run's
flip test-time augmentation (`eval.flip_tta`: logits and embedding averaged with the mirror's,
as evaluation does) are inside it. The weights are constants of the exported program.

- `stablehlo`: `jax.export` serialized to PATH; it reloads with `jax.export.deserialize(bytes)` and
  runs with `.call(images)` without fgjax's model code. The batch dimension is symbolic (any batch
  size) unless `--batch=N` fixes it. `--platforms` lowers for other backends too (default: the
  one exporting).
- `onnx`: jax2onnx (`pip install -e '.[onnx]'`, README "Exporting a trained model"), checked by
  onnxruntime against the JAX model before the file is kept (`fgjax.onnx_export`): bcnn,
  bcnn_spp, bilinear_lstm, a3m; activation_attention and focus_discriminate use ops the converter
  cannot express (the error names them; StableHLO exports every method).
- `--part=NAME`: a sub-model of the run with the same weights (`Method.export_parts`):
  focus_discriminate's `image_branch` (backbone, pooling and image classifier: the paper's
  image-level prediction, no regions), which ONNX can express.
Beside PATH, PATH.json holds what a user of the file needs: input shape and dtype, output names,
class names, the method, checkpoint step, and the evaluation preprocessing (`dataset` geometry)
that `python -m fgjax.predict --model=PATH IMAGE...` applies before running the file.

Exit codes: 0 done; 2 a bad workdir, format, output path or embedding name, or an operation the
ONNX converter cannot express (the ERROR line names it and what does export): one `ERROR:` line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import app, flags
import jax
import numpy as np

from fgjax import cli, exported, onnx_export, run as run_lib
from fgjax.data import augment
from fgjax.evaluation import protocols

FORMATS = ('stablehlo', 'onnx')
_FORMAT = flags.DEFINE_enum('format', 'stablehlo', list(FORMATS), 'Export format.')
_BATCH = flags.DEFINE_integer('batch', 0, 'Fixed batch size of the exported model; 0: symbolic '
                              '(StableHLO: any batch size; ONNX: a dynamic batch dimension).')
_PART = flags.DEFINE_string('part', '', 'Export this sub-model of the run (same weights), e.g. '
                            'focus_discriminate\'s image_branch; default: the whole model.')
_PLATFORMS = flags.DEFINE_list('platforms', None, 'stablehlo: lower for these backends (cpu, '
                               'cuda, rocm, tpu); default: the current one.')


class ExportError(Exception):
  """A problem the user fixes (workdir, output path, option, an op the converter lacks): exit 2."""


def metadata(exp, step: int, fmt: str, embedding: str, batch: int, dims: tuple,
             part: str = '') -> dict:
  h, w = augment.input_hw(exp.config.dataset)
  return {'format': fmt, 'method': exp.method.name, 'part': part or None,
          'dataset': exp.config.dataset.name,
          'step': step, 'input': {'name': 'images', 'shape': [batch or None, h, w, 3],
                                  'dtype': 'uint8'},
          'outputs': [{'name': 'logits', 'shape': [batch or None, dims[0]]},
                      {'name': embedding, 'shape': [batch or None, dims[1]]}],
          'embedding': embedding, 'flip_tta': bool(exp.config.eval.flip_tta),
          'class_names': list(exp.class_names) if exp.class_names else None,
          'num_classes': exp.meta.num_classes,
          'preprocessing': exp.config.dataset.to_dict()}


def part_experiment(exp, part: str):
  """`exp` with the model of its sub-model `part` (`Method.export_parts`: config.model overrides
  under which the same parameters give e.g. focus_discriminate's image branch alone)."""
  parts = exp.method.export_parts
  if part not in parts:
    valid = ', '.join(parts) if parts else f'none for method {exp.method.name!r}'
    raise ExportError(f'--part={part!r}: valid: {valid} (omit --part for the whole model)')
  config = exp.config.copy_and_resolve_references()
  with config.unlocked():
    config.model.update(dict(parts[part]))
  return dataclasses.replace(exp, config=config, model=exp.method.build_model(config, exp.meta))


def check_out(out: str, overwrite: bool) -> str:
  out = os.path.abspath(run_lib.expand_path(out))
  for path in (out, out + '.json'):
    if os.path.exists(path) and not overwrite:
      raise ExportError(f'--out: {path} exists; pass --overwrite to replace it')
  if not os.path.isdir(os.path.dirname(out)):
    raise ExportError(f'--out: the directory {os.path.dirname(out)} does not exist')
  return out


def export_model(workdir: str, fmt: str, out: str, *, batch: int = 0, step: int | None = None,
                 embedding: str | None = None, platforms=None, overwrite: bool = False,
                 part: str = '', mesh=None, log=lambda m: None) -> str:
  """Write OUT and OUT.json (see the module docstring); returns OUT."""
  if fmt not in FORMATS:
    raise ExportError(f'--format={fmt!r}: valid: {", ".join(FORMATS)}')
  if batch < 0:
    raise ExportError(f'--batch={batch}: a batch size >= 1, or 0 for a symbolic batch')
  out = check_out(out, overwrite)
  try:
    exp, state, step = run_lib.restore_one_device(workdir, step, mesh, log)
  except run_lib.RunUnreadable as e:
    raise ExportError(str(e)) from None
  if part:
    exp = part_experiment(exp, part)
  what = f'{exp.method.name}:{part}' if part else exp.method.name
  embedding = embedding or exp.config.eval.embedding
  try:
    protocols.check_embedding(exp, embedding, '--embedding')
  except ValueError as e:
    raise ExportError(str(e)) from None
  serve = exported.serving_fn(exp, state, embedding)
  hw = augment.input_hw(exp.config.dataset)
  probe = np.zeros((max(batch, 1), *hw, 3), np.uint8)
  dims = tuple(int(x.shape[-1]) for x in jax.eval_shape(serve, probe))
  if fmt == 'stablehlo':
    data = exported.export_stablehlo(serve, hw, batch, platforms)
  else:
    try:
      data = onnx_export.export_onnx(serve, hw, batch, what, log)
    except onnx_export.OnnxExportError as e:
      raise ExportError(str(e)) from e
  with open(out, 'wb') as f:
    f.write(data)
  with open(out + '.json', 'w') as f:
    json.dump(metadata(exp, step, fmt, embedding, batch, dims, part), f, indent=1)
  log(f'{fmt}{f" ({part})" if part else ""}: {len(data) / 2**20:.1f} MiB, input uint8 '
      f'({batch or "B"}, {hw[0]}, {hw[1]}, 3), '
      f'outputs logits ({dims[0]}) and {embedding} ({dims[1]}), step {step}')
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.start()
  log = lambda m: print(m, file=sys.stderr, flush=True)
  path = export_model(run_lib.expand_path(cli.WORKDIR.value), _FORMAT.value, cli.OUT.value,
                      batch=_BATCH.value, step=cli.STEP.value, embedding=cli.EMBEDDING.value,
                      platforms=_PLATFORMS.value, overwrite=cli.OVERWRITE.value,
                      part=_PART.value, log=log)
  print(f'wrote {path} and {path}.json', flush=True)


if __name__ == '__main__':
  cli.run(main, shared=('workdir', 'out', 'step', 'embedding', 'overwrite'), required=('workdir', 'out'),
          user_errors=(ExportError,))
