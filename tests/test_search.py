"""python -m fgjax.search on a tiny finished bcnn run (conftest `trained_workdir`, embedding
'features') and the synthetic dataset's re-id splits (query: camera 0, gallery: the other
cameras). Oracles: the split embeddings written by `fgjax.export` (the grain evaluation pipeline,
not the search code), with distances recomputed in NumPy and the ranking a stable argsort, and
`fgjax.metrics.re_ranking` for --rerank. Also: the .npz gallery equals the folder gallery, the
embedding cache is reused and invalidated, --grid writes a PNG, errors exit 2 with one line."""

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

from fgjax import export, metrics, search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_QUERIES = 3


def _market_name(example, index):
  """A Market-1501 style name: identity, camera, and the split index (to find the row back)."""
  return f'{int(example["identity"]):04d}_c{int(example["camera"])}s1_{index:06d}.png'


def _write(source, indices, folder):
  os.makedirs(folder, exist_ok=True)
  paths = []
  for i in indices:
    paths.append(os.path.join(folder, _market_name(source[i], i)))
    Image.fromarray(np.asarray(source[i]['image'])).save(paths[-1])  # lossless
  return paths


@pytest.fixture(scope='module')
def data(trained_workdir, tmp_path_factory, one_device_mesh):
  """The run, its embedder, the gallery written as a folder, query PNGs, and the exported
  embeddings of both splits (the oracle)."""
  workdir = trained_workdir('bcnn')
  root = tmp_path_factory.mktemp('search')
  embedder = search.load(workdir, mesh=one_device_mesh)
  exp = embedder.exp
  gallery, query = exp.source('gallery'), exp.source('query')
  npz = {}
  for split in ('gallery', 'query'):
    path = export.export(workdir, split, str(root / f'{split}.npz'), mesh=one_device_mesh)
    with np.load(path) as f:
      npz[split] = dict(f)
  return {'workdir': workdir, 'root': root, 'embedder': embedder,
          'folder': os.path.dirname(_write(gallery, range(len(gallery)), str(root / 'gallery'))[0]),
          'queries': _write(query, range(NUM_QUERIES), str(root / 'queries')),
          'npz': npz, 'npz_path': str(root / 'gallery.npz')}


def _search(embedder, queries, gallery, **kw):
  out, err = io.StringIO(), io.StringIO()
  records = search.search(embedder, queries, gallery, out=out, err=err, **kw)
  assert [json.loads(line) for line in out.getvalue().splitlines()] == records
  return records, err.getvalue()


def _rows(records, queries):
  return [[r for r in records if r['query'] == q] for q in queries]


def _index(record):
  """The gallery split index of a record (folder: from the file name; .npz: the id)."""
  if 'id' in record:
    return record['id']
  return int(os.path.basename(record['path']).split('_')[-1].split('.')[0])


def _oracle_distances(q, g, metric):
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  g = g / np.linalg.norm(g, axis=1, keepdims=True)
  if metric == 'cosine':
    return 1.0 - q @ g.T
  return ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)


def _check_ranking(records, queries, dist, k):
  """Each query's records = the k smallest oracle distances in stable order, within 1e-5."""
  for qi, row in enumerate(_rows(records, queries)):
    assert [r['rank'] for r in row] == list(range(1, k + 1))
    want = np.argsort(dist[qi], kind='stable')[:k]
    assert [_index(r) for r in row] == want.tolist()
    np.testing.assert_allclose([r['distance'] for r in row], dist[qi][want], atol=1e-5)


def test_folder_ranking_matches_the_exported_embeddings(data):
  g, q = data['npz']['gallery'], data['npz']['query']
  records, err = _search(data['embedder'], data['queries'], data['folder'], topk=32)
  dist = _oracle_distances(q['embeddings'][:NUM_QUERIES].astype(np.float64),
                           g['embeddings'].astype(np.float64), 'euclidean')
  _check_ranking(records, data['queries'], dist, 32)
  for r in records:  # identity and camera parsed from the Market-1501 style name
    i = _index(r)
    assert (r['identity'], r['camera']) == (g['identities'][i], g['cameras'][i])
    assert set(r) == {'query', 'rank', 'path', 'distance', 'identity', 'camera'}
  assert 'euclidean distance, re-ranking off' in err


def test_npz_gallery_gives_the_folder_result(data):
  folder, _ = _search(data['embedder'], data['queries'], data['folder'], topk=5)
  npz, err = _search(data['embedder'], data['queries'], data['npz_path'], topk=5)
  assert [(_index(a), a['rank'], a['identity'], a['camera']) for a in folder] == [
      (b['id'], b['rank'], b['identity'], b['camera']) for b in npz]
  np.testing.assert_allclose([a['distance'] for a in folder], [b['distance'] for b in npz],
                             atol=1e-5)
  labels = data['npz']['gallery']['labels']
  assert all(b['class'] == labels[b['id']] for b in npz)
  assert 'WARNING' not in err  # exported at the same step


def test_cosine_and_rerank_follow_flags_and_config(data):
  g, q = data['npz']['gallery'], data['npz']['query']
  qe, ge = q['embeddings'][:NUM_QUERIES].astype(np.float64), g['embeddings'].astype(np.float64)
  records, err = _search(data['embedder'], data['queries'], data['npz_path'], topk=7,
                         metric='cosine')
  _check_ranking(records, data['queries'], _oracle_distances(qe, ge, 'cosine'), 7)
  assert 'cosine distance' in err
  # config.eval.rerank=True applies without a flag; re-ranked over the 3 queries together.
  rerank = copy.copy(data['embedder'])
  rerank.config = data['embedder'].config.copy_and_resolve_references()
  with rerank.config.unlocked():
    rerank.config.eval.rerank = True
  want = metrics.re_ranking(metrics.distance_matrix(qe, ge, normalize=True),
                            metrics.distance_matrix(qe, qe, normalize=True),
                            metrics.distance_matrix(ge, ge, normalize=True))
  records, err = _search(rerank, data['queries'], data['npz_path'], topk=32)
  _check_ranking(records, data['queries'], want, 32)
  assert 're-ranking on' in err
  records, _ = _search(rerank, data['queries'], data['npz_path'], topk=32, rerank=False)
  _check_ranking(records, data['queries'], _oracle_distances(qe, ge, 'euclidean'), 32)


def test_cache_is_reused_and_invalidated(data, tmp_path, one_device_mesh):
  workdir = str(tmp_path / 'run')
  shutil.copytree(data['workdir'], workdir)
  embedder = search.load(workdir, mesh=one_device_mesh)
  folder = tmp_path / 'g'
  folder.mkdir()
  names = sorted(n for n in os.listdir(data['folder']) if n.endswith('.png'))
  for name in names[:6]:
    shutil.copy(os.path.join(data['folder'], name), folder / name)
  first, err = _search(embedder, data['queries'][:1], str(folder), topk=6)
  cache = search.cache_path(str(folder), workdir)
  assert os.path.isfile(cache) and os.path.dirname(cache) == str(folder / '.fgjax_search')
  assert f'gallery embeddings computed (no cache yet), cached in {cache}' in err
  again, err = _search(embedder, data['queries'][:1], str(folder), topk=6)
  assert f'gallery embeddings reused from {cache}' in err and 'computed' not in err
  assert again == first
  shutil.copy(os.path.join(data['folder'], names[6]), folder / names[6])  # the file list changes
  more, err = _search(embedder, data['queries'][:1], str(folder), topk=7)
  assert 'gallery embeddings computed (gallery files changed)' in err
  assert sorted(os.path.basename(r['path']) for r in more) == names[:7]
  # A new checkpoint step (a copy of the last one): recomputed, the step named.
  ckpt = os.path.join(workdir, 'checkpoints')
  step = max(int(s) for s in os.listdir(ckpt) if s.isdigit())
  shutil.copytree(os.path.join(ckpt, str(step)), os.path.join(ckpt, str(step + 8)))
  later = search.load(workdir, mesh=one_device_mesh)
  assert later.step == step + 8
  _, err = _search(later, data['queries'][:1], str(folder), topk=7)
  assert f'computed (checkpoint step {step} -> {step + 8})' in err


def test_errors(data, tmp_path, one_device_mesh):
  embedder, queries = data['embedder'], data['queries']
  with pytest.raises(search.SearchError, match='config.json does not exist'):
    search.load(str(tmp_path), mesh=one_device_mesh)
  shutil.copy(os.path.join(data['workdir'], 'config.json'), tmp_path / 'config.json')
  with pytest.raises(search.SearchError, match='no checkpoints'):
    search.load(str(tmp_path), mesh=one_device_mesh)
  # A run whose config.eval.embedding is no vector output of its method.
  other = tmp_path / 'other'
  shutil.copytree(data['workdir'], other)
  with open(other / 'config.json') as f:
    config = json.load(f)
  config['eval']['embedding'] = 'attention'
  with open(other / 'config.json', 'w') as f:
    json.dump(config, f)
  with pytest.raises(search.SearchError, match=r"config.eval.embedding='attention' is not a "
                                               r'vector output.*valid: features, logits'):
    search.load(str(other), mesh=one_device_mesh)
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'not an image')
  with pytest.raises(search.SearchError, match=f'query image {bad} cannot be read'):
    _search(embedder, [queries[0], str(bad)], data['folder'])
  with pytest.raises(search.SearchError, match='no such file'):
    _search(embedder, [str(tmp_path / 'missing.png')], data['folder'])
  empty = tmp_path / 'empty'
  (empty / 'sub').mkdir(parents=True)
  (empty / 'notes.txt').write_text('no image')
  with pytest.raises(search.SearchError, match='holds no image file'):
    _search(embedder, queries, str(empty))
  (empty / 'sub' / 'broken.png').write_bytes(b'xx')
  with pytest.raises(search.SearchError, match='no readable image among its 1 files'):
    _search(embedder, queries, str(empty))
  g = data['npz']['gallery']
  for arrays, message in (
      ({'ids': g['ids']}, r'has no `embeddings` array \(it has: ids\)'),
      ({'embeddings': g['embeddings'][:, :5]}, r'shape \(32, 5\).*dimension'),
      ({'embeddings': g['embeddings'], 'embedding': np.asarray('logits')},
       "holds the 'logits' output")):
    np.savez(tmp_path / 'x.npz', **arrays)
    with pytest.raises(search.SearchError, match=message):
      _search(embedder, queries, str(tmp_path / 'x.npz'))
  for kw, message in (({'topk': 0}, '--topk=0'), ({'grid': str(tmp_path / 'g.jpg')}, '.png'),
                      ({'grid': str(tmp_path / 'no' / 'g.png')}, 'existing directory')):
    with pytest.raises(search.SearchError, match=message):
      _search(embedder, queries, data['folder'], **kw)
  with pytest.raises(search.SearchError, match='neither a folder nor'):
    _search(embedder, queries, str(tmp_path / 'nothing.npz'))


def _cli(*args):
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'FGJAX_TRACEBACK')}
  return subprocess.run([sys.executable, '-m', 'fgjax.search', *args], cwd=ROOT,
                        env={**env, 'JAX_PLATFORMS': 'cpu'}, capture_output=True, text=True,
                        timeout=300, check=False)


def _one_error_line(proc):
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('ERROR:')]
  assert len(lines) == 1 and proc.stdout == '', proc.stderr[-3000:]
  return lines[0]


def test_command_line_with_grid(data, tmp_path):
  grid = tmp_path / 'grid.png'
  proc = _cli(f'--workdir={data["workdir"]}', f'--gallery={data["npz_path"]}', '--topk=3',
              f'--grid={grid}', *data['queries'][:2])
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in proc.stdout.splitlines()]  # only JSON lines
  want, _ = _search(data['embedder'], data['queries'][:2], data['npz_path'], topk=3)
  assert [(r['query'], r['rank'], r['id']) for r in records] == [
      (r['query'], r['rank'], r['id']) for r in want]
  with Image.open(grid) as im:
    assert im.format == 'PNG' and im.size == (480, 2 * 160 + 40)  # 4 cells of 1.2 in, 2 rows
    assert np.asarray(im.convert('RGB'), np.float64).std() > 20  # the images are drawn
  assert f'wrote {grid}' in proc.stderr
  line = _one_error_line(_cli(f'--workdir={data["workdir"]}', f'--gallery={data["folder"]}',
                              str(tmp_path / 'missing.png')))
  assert 'missing.png: no such file' in line
  np.savez(tmp_path / 'ids.npz', ids=np.arange(3))
  line = _one_error_line(_cli(f'--workdir={data["workdir"]}', f'--gallery={tmp_path}/ids.npz',
                              data['queries'][0]))  # found after the run is loaded
  assert 'has no `embeddings` array' in line
  proc = _cli('--help')
  assert proc.returncode == 0 and '--gallery' in proc.stdout and '--rerank' in proc.stdout
