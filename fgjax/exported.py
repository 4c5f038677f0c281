"""An exported model (`python -m fgjax.export_model`): the serving function it is made of, and
how to load and run one (StableHLO through `jax.export`, ONNX through onnxruntime) without the
run or fgjax's model code. PATH.json beside the file describes it (fgjax.export_model)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def serving_fn(exp, state, embedding: str):
  """`images (B, H, W, 3) uint8 -> (logits (B, C), embedding (B, D))` float32, with the run's
  weights closed over and its flip TTA (`protocols.flip_averaged`: logits and embedding)."""
  variables = {'params': state.params}
  if state.batch_stats:
    variables['batch_stats'] = state.batch_stats
  model, method, tta = exp.model, exp.method, exp.config.eval.flip_tta

  def predict(images):
    out = method.predict_fn(model.apply(variables, images, train=False))
    return out['logits'].astype(jnp.float32), out[embedding].astype(jnp.float32)

  def serve(images):
    logits, emb = predict(images)
    if tta:
      flipped_logits, flipped_emb = predict(images[:, :, ::-1])
      logits, emb = (logits + flipped_logits) / 2, (emb + flipped_emb) / 2
    return logits, emb
  return serve


def export_stablehlo(serve, input_hw, batch: int = 0, platforms=None) -> bytes:
  """The serialized `jax.export.Exported` of `serve` (symbolic batch when batch == 0)."""
  b = jax.export.symbolic_shape('b')[0] if batch == 0 else batch
  spec = jax.ShapeDtypeStruct((b, *input_hw, 3), jnp.uint8)
  kwargs = {'platforms': tuple(platforms)} if platforms else {}
  return jax.export.export(jax.jit(serve), **kwargs)(spec).serialize()


def load_stablehlo(blob: bytes):
  """`images -> (logits, embedding)` of a serialized StableHLO export (no fgjax model code)."""
  exported = jax.export.deserialize(bytearray(blob))
  return lambda images: tuple(np.asarray(x) for x in exported.call(images))


def load_onnx(path: str):
  """`images -> (logits, embedding)` of an ONNX export, run by onnxruntime (CPU)."""
  import onnxruntime  # pylint: disable=g-import-not-at-top (optional dependency: '.[onnx]')
  session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
  name = session.get_inputs()[0].name
  return lambda images: tuple(np.asarray(x) for x in session.run(None, {name: images}))


@dataclasses.dataclass(frozen=True)
class ExportedModel:
  """A loaded export: `meta` (PATH.json) and `run(images uint8 (B, H, W, 3)) -> (logits,
  embedding)` as NumPy float32."""
  path: str
  meta: dict
  run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def load(path: str) -> ExportedModel:
  """Load PATH (its format from PATH.json). FileNotFoundError / ValueError name what is wrong."""
  meta_path = path + '.json'
  for p in (path, meta_path):
    if not os.path.exists(p):
      raise FileNotFoundError(f'{p} does not exist: --model must be a file written by python -m '
                              'fgjax.export_model (with its .json beside it)')
  with open(meta_path) as f:
    meta = json.load(f)
  fmt = meta.get('format')
  if fmt == 'stablehlo':
    with open(path, 'rb') as f:
      run = load_stablehlo(f.read())
  elif fmt == 'onnx':
    run = load_onnx(path)
  else:
    raise ValueError(f'{meta_path}: format {fmt!r} is not one fgjax exports (stablehlo, onnx)')
  return ExportedModel(path, meta, run)
