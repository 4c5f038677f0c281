"""ONNX export of a serving function (`fgjax.exported.serving_fn`) through jax2onnx, checked with
onnxruntime before the file is kept. An optional dependency: `pip install -e '.[onnx]'`.

Why jax2onnx 0.13.0: it converts Flax Linen models from their JAX functions (no TensorFlow), and it
is the newest release whose declared requirements admit fgjax's orbax-checkpoint 0.12 (0.13.1 and
later declare orbax-checkpoint<0.11.37), so one environment holds fgjax, its tests and the
converter (`pip check` clean; measured 2026-12-05 with jax 0.10.2).

What converts (measured with jax2onnx 0.13.0; outputs within 1e-6 of JAX): bcnn, bcnn_spp and
a3m, with a dynamic batch dimension, and bilinear_lstm (its `lax.scan`) on jax 0.10 (Python
3.10 / 3.11). What does not (`unsupported`: the error names the op and points to StableHLO,
which exports every method): activation_attention and focus_discriminate, and bilinear_lstm on
jax 0.12 (Python >= 3.12).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TOL = 1e-4  # onnxruntime against JAX, absolute and relative, on random uint8 images

# method -> the op jax2onnx 0.13.0 cannot express, and why (what a user needs to know).
UNSUPPORTED = {
    'activation_attention': (
        "the per-image Otsu threshold (fgjax.ops.otsu under jax.vmap): jax2onnx's batching rule "
        "for jnp.where uses jax.interpreters.batching.not_mapped, which jax 0.10 removed"),
    'focus_discriminate': (
        "the per-image hard NMS (fgjax.ops.nms, a lax.fori_loop under jax.vmap): jax2onnx has no "
        "batching rule for lax.fori_loop; with a dynamic batch, its jax.image.resize also needs "
        "a constant batch size; --part=image_branch exports its image branch (backbone, pooling, "
        "image classifier) to ONNX"),
}


JAX_012 = tuple(int(p) for p in jax.__version__.split('.')[:2]) >= (0, 12)


def unsupported(method: str) -> str | None:
  """Why jax2onnx 0.13.0 cannot convert `method` under this jax, or None."""
  if method == 'bilinear_lstm' and JAX_012:
    return ("the anti-diagonal lax.scan (fgjax.models.spatial_lstm): jax2onnx's scan rule rejects "
            "jax 0.12's scan ('All scanned inputs must share the same leading dimension'); it "
            "converts on jax 0.10")
  return UNSUPPORTED.get(method)


class OnnxExportError(Exception):
  """The converter cannot express the model, or is not installed: exit 2 with this message."""


def _converter():
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise OnnxExportError(f"--format=onnx needs jax2onnx and onnxruntime ({e.name} is missing): "
                          "pip install -e '.[onnx]' (README \"Exporting a trained model\")") from None
  return jax2onnx, onnxruntime


def export_onnx(serve, input_hw, batch: int, method: str, log=lambda m: None) -> bytes:
  """The serialized ONNX model of `serve` (input 'images' uint8 (B, H, W, 3); outputs 'logits'
  and 'embedding'), after onnxruntime reproduced JAX's outputs within `TOL` on random images."""
  jax2onnx, onnxruntime = _converter()
  b = jax.export.symbolic_shape('B')[0] if batch == 0 else batch
  spec = jax.ShapeDtypeStruct((b, *input_hw, 3), jnp.uint8)
  try:
    model = jax2onnx.to_onnx(serve, inputs=[spec], input_names=['images'],
                             output_names=['logits', 'embedding'], model_name=f'fgjax_{method}')
  except Exception as e:  # pylint: disable=broad-except (the converter's errors have no base)
    why = unsupported(method) or f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'
    raise OnnxExportError(f'jax2onnx cannot convert method {method!r}: {why}. '
                          '--format=stablehlo exports it (every method).') from e
  data = model.SerializeToString()
  session = onnxruntime.InferenceSession(data, providers=['CPUExecutionProvider'])
  images = np.random.default_rng(0).integers(0, 256, (batch or 3, *input_hw, 3), dtype=np.uint8)
  got = session.run(None, {'images': images})
  want = jax.jit(serve)(images)
  worst = max(float(np.max(np.abs(np.asarray(g) - np.asarray(w)) / (TOL + TOL * np.abs(w))))
              for g, w in zip(got, want))
  if worst > 1:
    raise OnnxExportError(f'the ONNX model of method {method!r} differs from JAX by more than '
                          f'{TOL} (onnxruntime); not written. --format=stablehlo exports it.')
  log(f'onnx: onnxruntime reproduces JAX within {TOL} on {len(images)} random images')
  return data
