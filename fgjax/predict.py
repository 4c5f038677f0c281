"""Predict the classes of image files with a trained run, optionally with attention overlays.

python -m fgjax.predict --workdir=DIR IMAGE_OR_FOLDER... [--topk=K] [--overlays=OUT] [--step=N]
    [--batch_size=8] [--progress] [--cell=U,V]
python -m fgjax.predict --model=EXPORTED IMAGE_OR_FOLDER... [--topk=K] [--batch_size=8]

`--model` runs a file of `python -m fgjax.export_model` (StableHLO or ONNX, with its .json
beside it) instead of a run: the same preprocessing (read from the .json), no fgjax model code,
no overlays (an export returns logits and the embedding only).

The run is rebuilt from WORKDIR/config.json (`fgjax.run.load_config`) and its checkpoint
(latest, or --step). Folders are searched recursively (fgjax.images.IMAGE_EXTENSIONS, sorted).
Every image goes through the evaluation preprocessing of the run (`augment.preprocess` with no
rng: resize, centre crop; a config with `crop_to_bbox` sees the whole image as the box, as user
images have none) and a jitted forward with a fixed batch (padded), compiled once. The run's
`eval.flip_tta` is honoured for the probabilities (the mean of the image's and its mirror's
predict_fn logits, as evaluation does).

Output: one JSON line per image on stdout, {"path", "topk": [{"class", "name", "prob"}, ...]}
(+ "overlay": the PNG written), probabilities = softmax of the logits, sorted high to low. On
stderr: `SKIP path: reason` for every unreadable file (the run goes on), `WARNING path: ...` for
a tiny image (predicted all the same; fgjax.images.tiny_image_warning), progress (n/total, img/s)
when stderr is a terminal or with --progress, and a summary line. With --overlays=OUT, a PNG per
image OUT/<relative name with / replaced by __>.png (the relative name is the file's basename, or
the folder's name and the path inside it) showing the method's `attention_panels`
(fgjax/visualisation/overlays.py, docs/predict.md). Exit status 2 with a message for a bad
workdir, no checkpoint, a bad option, or no readable image at all.
"""

from __future__ import annotations

import json
import os
import sys
import types

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fgjax import cli, exported, images as images_lib, writers
from fgjax import run as run_lib
from fgjax.data import augment
from fgjax.visualisation import overlays

DEFAULT_TOPK = 5

_OVERLAYS = flags.DEFINE_string('overlays', None, 'Folder for one attention-overlay PNG per '
                                'image.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Images per forward pass (the last is '
                                   'padded).')
_MODEL = flags.DEFINE_string('model', None, 'An exported model (python -m fgjax.export_model: '
                              'PATH with PATH.json beside it) to run instead of --workdir.')
_CELL = flags.DEFINE_string('cell', None, 'bilinear_lstm overlays: the cell U,V whose attention '
                            'is drawn (default: the last cell; negative counts from the end).')


class PredictError(Exception):
  """A problem the user fixes (workdir, checkpoint, option, no image): exit status 2."""


class Predictor:
  """A restored run: `preprocess` a decoded image, `__call__` a batch of preprocessed images."""

  def __init__(self, exp, state, step: int, batch_size: int):
    self.exp, self.step, self.batch_size = exp, step, batch_size
    self.config, self.method = exp.config, exp.method
    self.variables = {'params': state.params}
    if state.batch_stats:
      self.variables['batch_stats'] = state.batch_stats
    self.class_names = exp.class_names
    self._jitted = {}

  @property
  def num_classes(self) -> int:
    return self.exp.meta.num_classes

  def preprocess(self, image: np.ndarray) -> np.ndarray:
    """The evaluation transform of the run (uint8 (H, W, 3) model input)."""
    return preprocess(image, self.config.dataset)

  def _forward(self, full: bool):
    if full not in self._jitted:
      capture = self.method.panel_captures
      model, method, tta = self.exp.model, self.method, self.config.eval.flip_tta

      def capture_filter(module, name):
        return name == '__call__' and module.name in capture and len(module.scope.path) == 1

      def forward(variables, images):
        if full and capture:
          outputs, state = model.apply(variables, images, train=False,
                                       capture_intermediates=capture_filter,
                                       mutable=['intermediates'])
          outputs = {**outputs, 'intermediates': state['intermediates']}
        else:
          outputs = model.apply(variables, images, train=False)
        logits = method.predict_fn(outputs)['logits']
        if tta:
          flipped = model.apply(variables, images[:, :, ::-1], train=False)
          logits = (logits + method.predict_fn(flipped)['logits']) / 2
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        if not full:
          return probs, {}
        as_f32 = lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x
        return probs, jax.tree.map(as_f32, outputs)

      self._jitted[full] = jax.jit(forward)
    return self._jitted[full]

  def __call__(self, batch: np.ndarray, full: bool = False, pad_to: int | None = None):
    """(probabilities (n, C) float64, outputs as NumPy (the full model dict when `full`)) of n
    preprocessed images, padded to `pad_to` (default batch_size) images: one shape, one compile."""
    n, size = batch.shape[0], pad_to or self.batch_size
    if n > size:
      raise ValueError(f'{n} images for a batch of {size}')
    padded = np.concatenate([batch, np.repeat(batch[:1], size - n, axis=0)]) if n < size else batch
    probs, outputs = jax.device_get(self._forward(full)(self.variables, padded))
    return np.asarray(probs, np.float64)[:n], outputs


def preprocess(image: np.ndarray, dataset) -> np.ndarray:
  """The evaluation transform of config.dataset `dataset` (`augment.user_image`)."""
  return augment.user_image(image, dataset)


class ExportedPredictor:
  """`Predictor`'s interface over an exported model (`fgjax.exported`): probabilities from its
  logits, the preprocessing its .json records; no attention outputs (no overlays)."""

  def __init__(self, model, batch_size: int):
    meta = model.meta
    self.model, self.batch_size = model, batch_size
    self.config = ml_collections.ConfigDict({'dataset': meta['preprocessing']})
    self.method = types.SimpleNamespace(name=meta['method'], attention_panels=None)
    self.class_names, self.num_classes = meta['class_names'], meta['num_classes']
    self.fixed_batch = meta['input']['shape'][0]  # None: any batch size

  def preprocess(self, image: np.ndarray) -> np.ndarray:
    return preprocess(image, self.config.dataset)

  def __call__(self, batch: np.ndarray, full: bool = False, pad_to: int | None = None):
    del full, pad_to  # no attention outputs; a symbolic batch takes any size
    n, size = batch.shape[0], self.fixed_batch or batch.shape[0]
    if n > size:
      raise ValueError(f'{n} images for the exported batch of {size}')
    padded = np.concatenate([batch, np.repeat(batch[:1], size - n, axis=0)]) if n < size else batch
    logits = np.asarray(self.model.run(padded)[0], np.float64)[:n]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True), {}


def load_exported(path: str, batch_size: int = 8) -> ExportedPredictor:
  if batch_size < 1:
    raise PredictError(f'--batch_size must be >= 1, got {batch_size}')
  try:
    model = exported.load(run_lib.expand_path(path))
  except (FileNotFoundError, ValueError, ImportError) as e:
    raise PredictError(f'--model={path}: {e}') from None
  return ExportedPredictor(model, batch_size)


def load(workdir: str, step: int | None = None, batch_size: int = 8, mesh=None,
         log=lambda m: print(m, file=sys.stderr, flush=True)) -> Predictor:
  """Rebuild a run from WORKDIR/config.json and restore checkpoint `step` (default: latest)."""
  if batch_size < 1:
    raise PredictError(f'--batch_size must be >= 1, got {batch_size}')
  try:
    exp, state, step = run_lib.restore_one_device(workdir, step, mesh, log)
  except run_lib.RunUnreadable as e:
    raise PredictError(str(e)) from None
  return Predictor(exp, state, step, batch_size)


def top_classes(probs: np.ndarray, k: int, names) -> list[dict]:
  """The k most probable classes, high to low (ties: lower class index first)."""
  order = np.argsort(-probs, kind='stable')[:k]
  return [{'class': int(c), 'name': names[c], 'prob': float(probs[c])} for c in order]


def overlay_filename(name: str) -> str:
  return name.replace(os.sep, '__').replace('/', '__') + '.png'


def parse_cell(text: str | None):
  if text is None:
    return None
  try:
    u, v = (int(t) for t in text.split(','))
  except ValueError:
    raise PredictError(f'--cell must be two integers U,V (e.g. --cell=3,5), got {text!r}') from None
  return u, v


def run(predictor: Predictor, paths, *, topk: int | None = None, overlays_dir: str | None = None,
        cell=None, progress: bool | None = None, out=None, err=None) -> dict:
  """Predict every image under `paths`: JSON lines on `out`, SKIP / progress / summary on `err`.
  Returns {'predicted', 'skipped', 'overlays'}. Raises PredictError (nothing readable, bad topk)."""
  out = sys.stdout if out is None else out
  err = sys.stderr if err is None else err
  c = predictor.num_classes
  topk = min(DEFAULT_TOPK, c) if topk is None else topk
  if not 1 <= topk <= c:
    raise PredictError(f'--topk={topk}: must be between 1 and the {c} classes of this run')
  panels_fn = predictor.method.attention_panels
  if overlays_dir is not None:
    if panels_fn is None:
      raise PredictError(f'method {predictor.method.name!r} has no attention_panels: no overlays')
    os.makedirs(overlays_dir, exist_ok=True)
  files, missing = images_lib.find_images(paths)
  skipped = 0
  for path, reason in missing:
    print(f'SKIP {path}: {reason}', file=err, flush=True)
    skipped += 1
  size = max(1, min(predictor.batch_size, len(files)))  # fixed batch shape for this run
  bar = writers.StatusLine('predict', err, err.isatty() if progress is None else progress)
  used_names, pending, predicted, written = set(), [], 0, 0

  def flush():
    nonlocal predicted, written
    if not pending:
      return
    batch = np.stack([x for _, x in pending])
    probs, outputs = predictor(batch, full=overlays_dir is not None, pad_to=size)
    bar.clear()
    for i, (f, image) in enumerate(pending):
      record = {'path': f.path, 'topk': top_classes(probs[i], topk, predictor.class_names)}
      if overlays_dir is not None:
        record['overlay'] = _write_overlay(predictor, f.name, image, outputs, i, probs[i],
                                           overlays_dir, used_names, cell)
        written += 1
      print(json.dumps(record), file=out, flush=True)
      predicted += 1
    pending.clear()

  for f in files:
    try:
      image = images_lib.read_image(f.path)
      tiny = images_lib.tiny_image_warning(image.shape, augment.input_hw(predictor.config.dataset))
      if tiny:
        bar.clear()
        print(f'WARNING {f.path}: {tiny}', file=err, flush=True)
      pending.append((f, predictor.preprocess(image)))
    except (images_lib.ImageError, ValueError) as e:  # ValueError: too small for the crop
      bar.clear()
      print(f'SKIP {f.path}: {e}', file=err, flush=True)
      skipped += 1
    if len(pending) == size:
      flush()
    bar(predicted + skipped, len(files))
  flush()
  bar(predicted + skipped, len(files))
  print(f'fgjax.predict: predicted {predicted} image(s), skipped {skipped}'
        + (f', {written} overlay(s) in {overlays_dir}' if overlays_dir is not None else ''),
        file=err, flush=True)
  if predicted == 0:
    raise PredictError(f'no readable image among {", ".join(map(str, paths)) or "(none given)"}')
  return {'predicted': predicted, 'skipped': skipped, 'overlays': written}


def _write_overlay(predictor, name, image, outputs, index, probs, overlays_dir, used, cell):
  base = overlay_filename(name)
  stem, n = base[:-4], 2
  while base in used:
    base, n = f'{stem}_{n}.png', n + 1
  used.add(base)
  info = getattr(predictor.exp.builder, 'info', None)  # the dataset's names (a3m's attributes)
  options = {'cell': cell, 'metadata': dict(getattr(info, 'metadata', None) or {})}
  try:
    panels = predictor.method.attention_panels(outputs, index, predictor.config, options)
  except ValueError as e:
    raise PredictError(str(e)) from None
  top = int(np.argmax(probs))
  title = (f'{predictor.class_names[top]}  p={probs[top]:.2f}   '
           f'({predictor.method.name}, step {predictor.step})')
  path = os.path.join(overlays_dir, base)
  overlays.save(image, panels, title, path)
  return path


def main(argv):
  cli.start()
  if len(argv) < 2:
    raise PredictError('no image or folder given: python -m fgjax.predict --workdir=DIR '
                       'IMAGE_OR_FOLDER...')
  cell = parse_cell(_CELL.value)
  if (cli.WORKDIR.value is None) == (_MODEL.value is None):
    raise PredictError('give one of --workdir=DIR (a training run) or --model=PATH (a file of '
                       'python -m fgjax.export_model)')
  if _MODEL.value is not None:
    if _OVERLAYS.value is not None:
      raise PredictError('--overlays needs --workdir: an exported model (--model) returns logits '
                         'and the embedding only, no attention')
    predictor = load_exported(_MODEL.value, _BATCH_SIZE.value)
  else:
    predictor = load(run_lib.expand_path(cli.WORKDIR.value), cli.STEP.value, _BATCH_SIZE.value)
  run(predictor, argv[1:], topk=cli.TOPK.value, overlays_dir=_OVERLAYS.value, cell=cell,
      progress=True if cli.PROGRESS.value else None)


if __name__ == '__main__':
  # Required here, not at import: fgjax.cli's flags are shared with the other commands. A
  # PredictError (workdir, checkpoint, option, no readable image) exits 2 with one ERROR line.
  cli.run(main, shared=('workdir', 'progress', 'step', 'topk'),
          user_errors=(PredictError,))
