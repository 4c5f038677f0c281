"""fgjax.export: the .npz holds every example of the split once, in order, with the dataset's
labels / identities / cameras, and embeddings equal to a direct model.apply; overwrite refusal;
clear errors (exit 2 from the command) for a bad workdir, split or embedding name."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fgjax import export, run
from fgjax.data import augment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_npz_contents_match_the_dataset_and_the_model(trained_workdir, tmp_path,
                                                      one_device_mesh):
  wd = trained_workdir('bcnn')
  config = run.load_config(wd)
  with config.unlocked():
    config.eval.batch_size = 24  # 32 gallery images: the second batch is padded with 16
  out = export.export(wd, 'gallery', str(tmp_path / 'g.npz'), config=config,
                      mesh=one_device_mesh)
  assert out == str(tmp_path / 'g.npz')
  with np.load(out) as f:  # no pickled objects
    z = dict(f)
  exp, state, step = run.restore(None, wd, one_device_mesh)
  source = exp.source('gallery')
  n = len(source)
  assert n == 32
  assert set(z) == {'embeddings', 'labels', 'index', 'ids', 'identities', 'cameras', 'split',
                    'method', 'dataset', 'embedding', 'step'}
  assert z['embeddings'].dtype == np.float32 and z['embeddings'].shape[0] == n
  np.testing.assert_array_equal(z['index'], np.arange(n))
  np.testing.assert_array_equal(z['ids'], np.arange(n))  # synthetic_parts has no image_id
  for key, field in (('labels', 'label'), ('identities', 'identity'), ('cameras', 'camera')):
    np.testing.assert_array_equal(z[key], [int(source[i][field]) for i in range(n)])
  assert (str(z['split']), str(z['method']), str(z['dataset']), str(z['embedding'])) == (
      'gallery', 'bcnn', 'synthetic_parts', 'features')
  assert int(z['step']) == step == 12
  # Embeddings = the model applied directly to a few eval-preprocessed examples (first, middle,
  # and the last one, in the padded final batch).
  picks = [0, 17, n - 1]
  images = np.stack([augment.preprocess(source[i], exp.config.dataset, None)['image']
                     for i in picks])
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  direct = exp.method.predict_fn(exp.model.apply(variables, images, train=False))['features']
  np.testing.assert_allclose(z['embeddings'][picks], np.asarray(jax.device_get(direct)),
                             rtol=1e-5, atol=1e-5)


def test_refuses_to_overwrite_and_bad_names(trained_workdir, tmp_path, one_device_mesh):
  wd = trained_workdir('bcnn')
  out = tmp_path / 'x.npz'
  out.write_bytes(b'keep')
  with pytest.raises(FileExistsError, match='--overwrite'):
    export.export(wd, 'test', str(out), mesh=one_device_mesh)
  assert out.read_bytes() == b'keep'
  with pytest.raises(ValueError, match='must end with .npz'):
    export.export(wd, 'test', str(tmp_path / 'x.txt'), mesh=one_device_mesh)
  with pytest.raises(ValueError, match="split 'val'.*valid: gallery, query, retrieval_test, "
                                       'retrieval_train, test, train'):
    export.export(wd, 'val', str(tmp_path / 'v.npz'), mesh=one_device_mesh)
  with pytest.raises(ValueError, match="--embedding='attention'.*valid: features, logits"):
    export.export(wd, 'test', str(tmp_path / 'a.npz'), 'attention', mesh=one_device_mesh)
  with pytest.raises(FileNotFoundError, match='config.json does not exist'):
    export.export(str(tmp_path), 'test', str(tmp_path / 'b.npz'))
  # --overwrite replaces it; the logits export has one column per class.
  export.export(wd, 'test', str(out), 'logits', overwrite=True, mesh=one_device_mesh)
  with np.load(out) as f:
    assert f['embeddings'].shape == (48, 4) and str(f['embedding']) == 'logits'
  assert sorted(os.listdir(tmp_path)) == ['x.npz']  # no temporary file left


def _cli(*args):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  return subprocess.run([sys.executable, '-m', 'fgjax.export', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli(trained_workdir, tmp_path):
  wd = trained_workdir('bcnn')
  out = _cli(f'--workdir={wd}', '--split=test', f'--out={tmp_path}/t.npz', '--progress')
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'wrote {tmp_path}/t.npz' in out.stdout
  assert 'export test: 48/48' in out.stderr and 'img/s' in out.stderr
  with np.load(tmp_path / 't.npz') as f:
    assert f['embeddings'].shape[0] == 48 and np.isfinite(f['embeddings']).all()
    assert sorted(set(f['labels'].tolist())) == [0, 1, 2, 3]
  out = _cli(f'--workdir={wd}', '--split=test', f'--out={tmp_path}/t.npz')
  assert out.returncode == 2 and '--overwrite' in out.stderr
  out = _cli(f'--workdir={wd}', '--split=val', f'--out={tmp_path}/v.npz')
  assert out.returncode == 2 and "valid: gallery, query" in out.stderr, out.stderr[-2000:]
  out = _cli(f'--workdir={tmp_path}/missing', '--split=test', f'--out={tmp_path}/m.npz')
  assert out.returncode == 2 and 'config.json does not exist' in out.stderr
