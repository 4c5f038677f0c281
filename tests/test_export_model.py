"""python -m fgjax.export_model: every method's evaluation model round-trips through StableHLO
(outputs within 1e-4 of the JAX model, any batch size) and, where jax2onnx can express it, ONNX
(onnxruntime); the exported file runs without the run (`fgjax.exported`, `fgjax.predict
--model`), and the command's user errors exit 2."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import onnxruntime
import pytest
from PIL import Image

from fgjax import experiment, exported, export_model, onnx_export, predict, run as run_lib
from fgjax import trainer
from fgjax.data import augment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4
# Small heads where the default is a real-recipe size (the export holds the weights).
SMALL = {'bilinear_lstm': {'hidden': 8, 'rank': 8}}
METHODS = ('bcnn', 'bcnn_spp', 'bilinear_lstm', 'a3m', 'activation_attention',
           'focus_discriminate')


def _reference(exp, state, images, embedding):
  """The JAX model itself, jitted as evaluation runs it: predict_fn's logits and embedding (the
  export's contract). Jitted: focus_discriminate picks regions by top-k / NMS over attention
  scores, where op-by-op rounding can flip near-ties that one compiled program does not."""
  variables = {'params': state.params, **({'batch_stats': state.batch_stats}
                                          if state.batch_stats else {})}

  def forward(variables, images):
    out = exp.method.predict_fn(exp.model.apply(variables, images, train=False))
    return out['logits'], out[embedding]
  return tuple(np.asarray(x, np.float32) for x in jax.jit(forward)(variables, images))


@pytest.mark.parametrize('method', METHODS)
def test_stablehlo_round_trip_for_every_method(method, tiny_config_factory, one_device_mesh):
  """The deserialized file against the same serving function run by JAX (jitted, concrete batch),
  and that function against the model itself where the model is continuous in its input
  (focus_discriminate picks regions by top-k / NMS of attention scores: near-ties on a random-init
  model flip between two compiled programs, so it is compared with its own serving function)."""
  exp = experiment.setup(tiny_config_factory(method, **SMALL.get(method, {})),
                         mesh=one_device_mesh, log=lambda m: None)
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  embedding = exp.config.eval.embedding
  hw = augment.input_hw(exp.config.dataset)
  serve = exported.serving_fn(exp, state, embedding)
  run = exported.load_stablehlo(exported.export_stablehlo(serve, hw))
  rng = np.random.default_rng(0)
  for n in (3, 5):  # a symbolic batch: one file, any batch size
    images = rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    got = run(images)
    for g, w in zip(got, jax.jit(serve)(images)):
      assert g.shape == w.shape and g.dtype == np.float32
      np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)
    if method != 'focus_discriminate':
      for g, w in zip(got, _reference(exp, state, images, embedding)):
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)


def test_flip_tta_is_inside_the_export(tiny_config_factory, one_device_mesh):
  config = tiny_config_factory('bcnn')
  with config.unlocked():
    config.eval.flip_tta = True
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  hw = augment.input_hw(exp.config.dataset)
  run = exported.load_stablehlo(exported.export_stablehlo(
      exported.serving_fn(exp, state, 'features'), hw, batch=2))
  images = np.random.default_rng(1).integers(0, 256, (2, *hw, 3), dtype=np.uint8)
  plain = _reference(exp, state, images, 'features')
  mirror = _reference(exp, state, images[:, :, ::-1], 'features')
  for g, a, b in zip(run(images), plain, mirror):
    np.testing.assert_allclose(g, (a + b) / 2, rtol=TOL, atol=TOL)
    assert not np.allclose(g, a, rtol=TOL, atol=TOL)  # the mirror changed something


@pytest.fixture(scope='module')
def workdir(trained_workdir):
  return trained_workdir('bcnn')


def _cli(module, *args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, '-m', module, *args], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=300, check=False)


def test_command_line_export_then_predict_with_the_file(workdir, tmp_path, one_device_mesh):
  out = str(tmp_path / 'bcnn.stablehlo')
  r = _cli('fgjax.export_model', f'--workdir={workdir}', f'--out={out}')
  assert r.returncode == 0, r.stderr
  with open(out + '.json') as f:
    meta = json.load(f)
  assert meta['format'] == 'stablehlo' and meta['method'] == 'bcnn'
  assert meta['input'] == {'name': 'images', 'shape': [None, 32, 32, 3], 'dtype': 'uint8'}
  assert [o['name'] for o in meta['outputs']] == ['logits', 'features']
  # The file against the run's JAX model, on the test split's images.
  config = run_lib.load_config(workdir)
  exp, state, _ = run_lib.restore(config, workdir, one_device_mesh, lambda m: None)
  src = exp.source('test')
  images = np.stack([predict.preprocess(np.asarray(src[i]['image']), exp.config.dataset)
                     for i in range(4)])
  model = exported.load(out)
  for g, w in zip(model.run(images), _reference(exp, state, images, 'features')):
    np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)
  # fgjax.predict --model gives the probabilities of fgjax.predict --workdir.
  paths = []
  for i in range(3):
    paths.append(str(tmp_path / f'img{i}.png'))
    Image.fromarray(np.asarray(src[i]['image'])).save(paths[-1])
  by_model = _cli('fgjax.predict', f'--model={out}', '--topk=3', *paths)
  by_run = _cli('fgjax.predict', f'--workdir={workdir}', '--topk=3', *paths)
  assert by_model.returncode == 0 and by_run.returncode == 0, (by_model.stderr, by_run.stderr)
  for a, b in zip(by_model.stdout.splitlines(), by_run.stdout.splitlines(), strict=True):
    a, b = json.loads(a), json.loads(b)
    assert [t['class'] for t in a['topk']] == [t['class'] for t in b['topk']]
    np.testing.assert_allclose([t['prob'] for t in a['topk']], [t['prob'] for t in b['topk']],
                               atol=1e-5)
  # A fixed batch.
  fixed = str(tmp_path / 'fixed.stablehlo')
  assert export_model.export_model(workdir, 'stablehlo', fixed, batch=2).endswith('fixed.stablehlo')
  with open(fixed + '.json') as f:
    assert json.load(f)['input']['shape'] == [2, 32, 32, 3]
  assert exported.load(fixed).run(images[:2])[0].shape == (2, exp.meta.num_classes)


def test_user_errors_exit_2(workdir, tmp_path):
  out = tmp_path / 'm.stablehlo'
  out.write_bytes(b'x')
  cases = [
      ([f'--workdir={tmp_path / "none"}', f'--out={tmp_path / "a"}'], 'config.json'),
      ([f'--workdir={workdir}', f'--out={out}'], 'pass --overwrite'),
      ([f'--workdir={workdir}', f'--out={tmp_path / "no" / "a"}'], 'does not exist'),
      ([f'--workdir={workdir}', f'--out={tmp_path / "b"}', '--embedding=nope'],
       'valid: .*features'),
      ([f'--workdir={workdir}', f'--out={tmp_path / "c"}', '--format=tflite'], 'stablehlo'),
  ]
  for args, expect in cases:
    r = _cli('fgjax.export_model', *args)
    errors = [l for l in r.stderr.splitlines() if l.startswith('ERROR: ')]
    assert r.returncode == 2 and len(errors) == 1, (args, r.stderr)
    assert re.search(expect, errors[0]), (expect, errors[0])
  r = _cli('fgjax.predict', f'--model={tmp_path / "none.stablehlo"}', str(out))
  assert r.returncode == 2 and 'export_model' in r.stderr
  r = _cli('fgjax.predict', str(out))
  assert r.returncode == 2 and 'one of --workdir' in r.stderr
  r = _cli('fgjax.export_model', '--help')
  assert r.returncode == 0 and '--format' in r.stdout and '--workdir' in r.stdout, r.stderr


@pytest.mark.parametrize('method', METHODS)
def test_onnx_round_trip_or_a_named_op(method, tiny_config_factory, one_device_mesh):
  """onnxruntime reproduces the serving function within 1e-4 at two batch sizes (a dynamic batch),
  or, for the methods jax2onnx cannot express, the error names the op and points to StableHLO."""
  exp = experiment.setup(tiny_config_factory(method, **SMALL.get(method, {})),
                         mesh=one_device_mesh, log=lambda m: None)
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  hw = augment.input_hw(exp.config.dataset)
  serve = exported.serving_fn(exp, state, exp.config.eval.embedding)
  if onnx_export.unsupported(method):
    with pytest.raises(onnx_export.OnnxExportError, match='--format=stablehlo exports it') as e:
      onnx_export.export_onnx(serve, hw, 0, method)
    assert onnx_export.unsupported(method) in str(e.value)
    return
  session = onnxruntime.InferenceSession(onnx_export.export_onnx(serve, hw, 0, method),
                                         providers=['CPUExecutionProvider'])
  assert [i.name for i in session.get_outputs()] == ['logits', 'embedding']
  rng = np.random.default_rng(2)
  for n in (2, 5):
    images = rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    for g, w in zip(session.run(None, {'images': images}), _reference(exp, state, images,
                                                                      exp.config.eval.embedding)):
      assert g.shape == w.shape
      np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)


def test_onnx_command_line_and_predict(workdir, tmp_path):
  out = str(tmp_path / 'bcnn.onnx')
  r = _cli('fgjax.export_model', f'--workdir={workdir}', '--format=onnx', f'--out={out}')
  assert r.returncode == 0, r.stderr
  assert 'onnxruntime reproduces JAX within' in r.stderr
  with open(out + '.json') as f:
    assert json.load(f)['format'] == 'onnx'
  stable = str(tmp_path / 'bcnn.stablehlo')
  assert _cli('fgjax.export_model', f'--workdir={workdir}', f'--out={stable}').returncode == 0
  images = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  for a, b in zip(exported.load(out).run(images), exported.load(stable).run(images)):
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL)


def test_focus_discriminate_image_branch_part_exports_to_onnx(tiny_config_factory,
                                                             one_device_mesh):
  """--part=image_branch: the same weights without regions or NMS. Its logits are the full model's
  `image_logits` (computed by the whole model, regions and all), and ONNX expresses it."""
  config = tiny_config_factory('focus_discriminate')
  config.eval.flip_tta = False
  exp = experiment.setup(config, mesh=one_device_mesh, log=lambda m: None)
  state = trainer.init_state(exp, exp.optimizer(exp.stages[0]))
  hw = augment.input_hw(exp.config.dataset)
  part = export_model.part_experiment(exp, 'image_branch')
  assert exp.config.model.use_regions and not part.config.model.use_regions  # a copy, not exp's
  serve = exported.serving_fn(part, state, 'features')
  images = np.random.default_rng(4).integers(0, 256, (3, *hw, 3), dtype=np.uint8)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  full = jax.jit(lambda v, x: exp.model.apply(v, x, train=False))(variables, images)
  session = onnxruntime.InferenceSession(
      onnx_export.export_onnx(serve, hw, 0, 'focus_discriminate:image_branch'),
      providers=['CPUExecutionProvider'])
  logits, _ = session.run(None, {'images': images})
  np.testing.assert_allclose(logits, np.asarray(full['image_logits']), rtol=TOL, atol=TOL)
  with pytest.raises(export_model.ExportError, match="valid: image_branch"):
    export_model.part_experiment(exp, 'regions')


def test_part_of_a_method_without_parts_is_a_user_error(workdir, tmp_path):
  r = _cli('fgjax.export_model', f'--workdir={workdir}', f'--out={tmp_path / "x.onnx"}',
           '--format=onnx', '--part=image_branch')
  assert r.returncode == 2, r.stderr
  errors = [line for line in r.stderr.splitlines() if line.startswith('ERROR:')]
  assert errors == ["ERROR: --part='image_branch': valid: none for method 'bcnn' (omit --part for "
                    "the whole model)"], r.stderr
