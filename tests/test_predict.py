"""python -m fgjax.predict on a tiny finished bcnn run (conftest `trained_workdir`): JSON lines,
agreement with the evaluation pipeline, --topk, unreadable files, folder recursion, batch padding,
overlay PNGs, progress, exit status 2 cases (in-process and through the real command line)."""

import copy
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fgjax import checkpoint, images as images_lib, predict, trainer
from fgjax.evaluation import protocols
from fgjax.visualisation import overlays
from fgjax.data import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def workdir(trained_workdir):
  return trained_workdir('bcnn')


@pytest.fixture(scope='module')
def predictor(workdir, one_device_mesh):
  return predict.load(workdir, mesh=one_device_mesh, log=lambda m: None)


def _test_examples(predictor, n):
  src = predictor.exp.source('test')
  return [src[i] for i in range(n)]


def _write_pngs(examples, folder):
  os.makedirs(folder, exist_ok=True)
  paths = []
  for i, ex in enumerate(examples):
    paths.append(os.path.join(folder, f'img{i}.png'))
    Image.fromarray(np.asarray(ex['image'])).save(paths[-1])  # lossless: the dataset's pixels
  return paths


def _run(predictor, paths, **kw):
  out, err = io.StringIO(), io.StringIO()
  summary = predict.run(predictor, paths, out=out, err=err, **kw)
  return [json.loads(l) for l in out.getvalue().splitlines()], err.getvalue(), summary


def _softmax64(logits):
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def test_json_lines_match_the_evaluation_pipeline(predictor, workdir, tmp_path):
  # Oracle: protocols.collect (grain pipeline, eval preprocessing, eval step) on the same test
  # examples; predict reads them back from PNG files and must give the same probabilities.
  exp = predictor.exp
  ckpts = checkpoint.Checkpoints(workdir)
  state, _ = trainer.restore(exp, ckpts, ckpts.latest_step())
  gathered = protocols.collect(exp, state, 'test', protocols.make_eval_step(exp))
  order = np.argsort(gathered['index'])
  expected = _softmax64(gathered['logits'][order][:3])
  paths = _write_pngs(_test_examples(predictor, 3), str(tmp_path / 'imgs'))
  lines, err, summary = _run(predictor, paths, topk=3)
  builder, _ = datasets.prepare(exp.config.dataset, log=lambda m: None)
  names = builder.info.features['label'].names
  assert summary == {'predicted': 3, 'skipped': 0, 'overlays': 0}
  assert [l['path'] for l in lines] == paths
  for line, p in zip(lines, expected):
    assert set(line) == {'path', 'topk'}
    top = line['topk']
    assert len(top) == 3 and all(set(t) == {'class', 'name', 'prob'} for t in top)
    probs = [t['prob'] for t in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert [t['class'] for t in top] == list(np.argsort(-p, kind='stable')[:3])
    np.testing.assert_allclose(probs, np.sort(p)[::-1][:3], rtol=1e-4, atol=1e-6)
    assert all(t['name'] == names[t['class']] for t in top)
  assert 'predicted 3 image(s), skipped 0' in err and 'SKIP' not in err


def test_topk_out_of_range_is_refused(predictor, tmp_path):
  paths = _write_pngs(_test_examples(predictor, 1), str(tmp_path))
  c = predictor.num_classes
  for k in (c + 1, 0):
    with pytest.raises(predict.PredictError, match=f'--topk={k}.*{c} classes'):
      _run(predictor, paths, topk=k)
  lines, _, _ = _run(predictor, paths, topk=c)  # all classes: probabilities sum to 1
  assert len(lines[0]['topk']) == c
  assert sum(t['prob'] for t in lines[0]['topk']) == pytest.approx(1.0, abs=1e-5)


def test_unreadable_and_missing_files_are_skipped_and_reported(predictor, tmp_path):
  (good,) = _write_pngs(_test_examples(predictor, 1), str(tmp_path))
  bad = tmp_path / 'bad.jpg'
  bad.write_bytes(b'not an image at all')
  empty = tmp_path / 'empty.png'
  empty.write_bytes(b'')
  truncated = tmp_path / 'trunc.png'
  truncated.write_bytes(open(good, 'rb').read()[:60])
  missing = str(tmp_path / 'nope.png')
  lines, err, summary = _run(predictor, [str(bad), good, str(empty), missing, str(truncated)])
  assert [l['path'] for l in lines] == [good]
  assert predictor.num_classes == 4 and len(lines[0]['topk']) == 4  # default: min(5, classes)
  for p in (str(bad), str(empty), missing, str(truncated)):
    assert f'SKIP {p}: ' in err
  assert summary['skipped'] == 4
  assert 'predicted 1 image(s), skipped 4' in err


def test_no_readable_image_is_an_error(predictor, tmp_path):
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'xx')
  with pytest.raises(predict.PredictError, match='no readable image'):
    _run(predictor, [str(bad), str(tmp_path / 'missing')])


def test_folders_are_recursed_in_sorted_order_with_overlay_names(predictor, tmp_path):
  ex = _test_examples(predictor, 3)
  root = tmp_path / 'shots'
  (root / 'a').mkdir(parents=True)
  Image.fromarray(ex[0]['image']).save(root / 'b.png')
  Image.fromarray(ex[1]['image']).save(root / 'a' / 'z.bmp')
  Image.fromarray(ex[2]['image']).save(root / 'a' / 'y.JPG', quality=95)
  (root / 'notes.txt').write_text('not an image')
  out_dir = tmp_path / 'ov'
  lines, err, summary = _run(predictor, [str(root)], topk=1, overlays_dir=str(out_dir))
  assert [os.path.relpath(l['path'], root) for l in lines] == ['a/y.JPG', 'a/z.bmp', 'b.png']
  assert sorted(os.listdir(out_dir)) == ['shots__a__y.JPG.png', 'shots__a__z.bmp.png',
                                         'shots__b.png.png']
  assert [os.path.basename(l['overlay']) for l in lines] == [
      'shots__a__y.JPG.png', 'shots__a__z.bmp.png', 'shots__b.png.png']
  assert summary == {'predicted': 3, 'skipped': 0, 'overlays': 3} and 'SKIP' not in err


def test_find_images_keeps_argument_order_and_drops_duplicates(tmp_path):
  for name in ('b.png', 'a.png'):
    Image.new('RGB', (4, 4)).save(tmp_path / name)
  found, missing = images_lib.find_images([str(tmp_path / 'b.png'), str(tmp_path),
                                           str(tmp_path / 'x.png')])
  assert [os.path.basename(f.path) for f in found] == ['b.png', 'a.png']
  assert missing == [(str(tmp_path / 'x.png'), 'no such file or directory')]


def test_read_image_converts_grey_palette_and_alpha_to_rgb(tmp_path):
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
  Image.fromarray(grey).save(tmp_path / 'g.png')
  rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
  Image.fromarray(rgba).save(tmp_path / 'a.png')
  np.testing.assert_array_equal(images_lib.read_image(str(tmp_path / 'g.png')),
                                np.repeat(grey[..., None], 3, -1))
  a = rgba[..., 3:].astype(np.float64) / 255.0  # alpha composited over white, as the builders do
  np.testing.assert_allclose(images_lib.read_image(str(tmp_path / 'a.png')),
                             rgba[..., :3] * a + 255.0 * (1.0 - a), atol=1.0)
  Image.fromarray(grey).convert('P').save(tmp_path / 'p.gif')
  assert images_lib.read_image(str(tmp_path / 'p.gif')).shape == (5, 7, 3)


def test_padded_batches_give_the_same_predictions(predictor, tmp_path):
  paths = _write_pngs(_test_examples(predictor, 3), str(tmp_path))
  full, _, _ = _run(predictor, paths, topk=3)
  small = copy.copy(predictor)
  small.batch_size = 2
  split, _, _ = _run(small, paths, topk=3)  # batches of 2: [2 images], [1 image + 1 padding]
  for a, b in zip(full, split):
    assert [t['class'] for t in a['topk']] == [t['class'] for t in b['topk']]
    np.testing.assert_allclose([t['prob'] for t in a['topk']], [t['prob'] for t in b['topk']],
                               rtol=1e-5, atol=1e-7)


def test_overlay_pngs_exist_have_the_size_and_differ_between_images(predictor, tmp_path):
  paths = _write_pngs(_test_examples(predictor, 2), str(tmp_path / 'imgs'))
  lines, _, summary = _run(predictor, paths, topk=2, overlays_dir=str(tmp_path / 'ov'))
  assert summary['overlays'] == 2
  pixels = []
  for line in lines:
    assert os.path.isfile(line['overlay'])
    with Image.open(line['overlay']) as im:
      assert im.format == 'PNG'
      assert im.size == (520, 300)  # bcnn: the input + 1 panel (overlays.figure_size_px(1))
      pixels.append(np.asarray(im.convert('RGB'), np.float64))
    assert pixels[-1].std() > 20
  assert np.abs(pixels[0] - pixels[1]).mean() > 1.0


def test_progress_only_when_asked_or_on_a_terminal(predictor, tmp_path):
  paths = _write_pngs(_test_examples(predictor, 2), str(tmp_path))
  _, err, _ = _run(predictor, paths, progress=True)
  assert 'predict: 2/2 (' in err and 'img/s' in err
  _, err, _ = _run(predictor, paths)  # StringIO is not a TTY
  assert 'img/s' not in err


def test_load_errors(workdir, tmp_path, one_device_mesh):
  with pytest.raises(predict.PredictError, match='config.json'):
    predict.load(str(tmp_path), mesh=one_device_mesh)
  shutil.copy(os.path.join(workdir, 'config.json'), tmp_path / 'config.json')
  with pytest.raises(predict.PredictError, match='no checkpoints'):
    predict.load(str(tmp_path), mesh=one_device_mesh)
  with pytest.raises(predict.PredictError, match=r'--step=123456: no such checkpoint'):
    predict.load(workdir, step=123456, mesh=one_device_mesh)
  assert predict.parse_cell('1,-2') == (1, -2)
  with pytest.raises(predict.PredictError, match='--cell'):
    predict.parse_cell('3')


def _cli(*args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, '-m', 'fgjax.predict', *args], capture_output=True,
                        text=True, cwd=ROOT, env=env, timeout=300, check=False)


def test_command_line(predictor, workdir, tmp_path):
  paths = _write_pngs(_test_examples(predictor, 2), str(tmp_path / 'imgs'))
  r = _cli(f'--workdir={workdir}', '--topk', '2', '--overlays', str(tmp_path / 'ov'), *paths)
  assert r.returncode == 0, r.stderr
  lines = [json.loads(l) for l in r.stdout.splitlines()]  # stdout holds only the JSON lines
  assert [l['path'] for l in lines] == paths and all(len(l['topk']) == 2 for l in lines)
  assert all(os.path.isfile(l['overlay']) for l in lines)
  assert 'predicted 2 image(s), skipped 0' in r.stderr
  r = _cli(f'--workdir={tmp_path / "nothing"}', *paths)
  assert r.returncode == 2 and 'config.json' in r.stderr and r.stdout == ''
  r = _cli(f'--workdir={workdir}', '--topk=1000', *paths)
  assert r.returncode == 2 and '--topk=1000' in r.stderr
