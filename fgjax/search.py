"""Search a gallery with a trained re-id or retrieval run: each query's nearest gallery images.

python -m fgjax.search --workdir=DIR --gallery=FOLDER|EXPORT.npz QUERY_IMAGE... [--topk=10]
    [--grid=OUT.png] [--distance=euclidean|cosine] [--rerank|--norerank] [--progress]

The run is rebuilt from WORKDIR/config.json and its latest checkpoint (`fgjax.run.restore`).
Images are embedded as evaluation embeds a split (`config.eval.embedding` through
`protocols.make_eval_step`: evaluation preprocessing, `config.eval.flip_tta`), so a folder of a
split's images gives the embeddings `python -m fgjax.export` writes for that split. A user image
has no box: with `crop_to_bbox` the whole image is the box (as in fgjax.predict).

The gallery is a FOLDER (recursive, fgjax.images.IMAGE_EXTENSIONS, sorted; unreadable files give
`SKIP path: reason` on stderr) or an EXPORT.npz of `python -m fgjax.export` (`embeddings`, and
`ids`, `labels`, `identities`, `cameras` when present; items named by id). A folder item's
identity and camera come from a Market-1501 / DukeMTMC name `{identity}_c{camera}...`, else its
class from its first-level subfolder (FOLDER/CLASS/...). A folder's embeddings are cached in
FOLDER/.fgjax_search/<run>-<hash>.npz, reused while the run (workdir, checkpoint step, its files'
sizes and times, config) and the file list (paths, sizes, times) are unchanged, recomputed
otherwise; stderr says which, and why.

Distances and ranking are evaluation's: `fgjax.metrics.reid_distances` (l2-normalised
embeddings, squared Euclidean or 1 - cosine: `config.eval.distance` or --distance; k-reciprocal
re-ranking, Zhong et al. 2017, when `config.eval.rerank` or --rerank, over all queries together
as evaluation does, so a re-ranked list depends on the other queries), then a stable sort (ties:
gallery order). No gallery item is dropped (a user's query has no known camera).

Output: each query's top-k as JSON lines on stdout, {"query": path, "rank": 1..k, "path" (folder)
or "id" (.npz), "distance", and "identity", "camera", "class" when known}; a summary on stderr.
--grid=OUT.png: one row per query, the query and its top-k images (.npz: the exported split's,
when its dataset is here), distance under each, framed green / red when both identities (or
classes) are known and equal / different.
Exit status 2 with one `ERROR:` line: no workdir or checkpoint, a run without the embedding
output (the valid ones listed), an unreadable query image, a gallery folder without a readable
image, an .npz without `embeddings` or of another dimension or embedding name.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import sys

from absl import flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from fgjax import cli, images as images_lib, metrics, sharding, writers
from fgjax import run as run_lib
from fgjax.data import augment
from fgjax.evaluation import plots, protocols

DEFAULT_TOPK = 10
CACHE_DIR = '.fgjax_search'
REID_NAME = re.compile(r'^(-?\d+)_c(\d+)')  # Market-1501 / DukeMTMC: 0002_c1s1_000451_03.jpg

_GALLERY = flags.DEFINE_string('gallery', None, 'A folder of gallery images (searched '
                               'recursively) or an .npz written by python -m fgjax.export.')
_GRID = flags.DEFINE_string('grid', None, 'Write a PNG: one row per query, the query and its '
                            'top-k gallery images with their distances.')
_DISTANCE = flags.DEFINE_enum('distance', None, ['euclidean', 'cosine'],
                              "Distance (default: the run's config.eval.distance).")
_RERANK = flags.DEFINE_boolean('rerank', None, "k-reciprocal re-ranking, --norerank: none "
                               "(default: the run's config.eval.rerank).")


class SearchError(Exception):
  """A problem the user fixes (workdir, checkpoint, gallery, query, option): exit status 2."""


class Embedder:
  """A restored run's `config.eval.embedding` of decoded images, computed as evaluation does."""

  def __init__(self, exp, state, step: int, workdir: str):
    self.exp, self.state, self.step, self.workdir = exp, state, step, workdir
    self.config = exp.config
    self.name = self.config.eval.embedding
    try:
      protocols.check_embedding(exp, self.name, 'config.eval.embedding')
    except ValueError as e:
      raise SearchError(f'{e} (this run cannot search a gallery)') from None
    self.dim = int(np.prod(protocols.output_shapes(exp)[self.name]))
    self._eval_step = protocols.make_eval_step(exp, outputs=(self.name,), batch_keys=())

  def preprocess(self, image: np.ndarray) -> np.ndarray:
    """The evaluation transform of a user image (`augment.user_image`, as fgjax.predict)."""
    return augment.user_image(image, self.config.dataset)

  def __call__(self, batch: np.ndarray, size: int) -> np.ndarray:
    """(n, D) float32 embeddings of n preprocessed images, padded to `size` (one compile)."""
    n = len(batch)
    pad = np.repeat(batch[:1], size - n, axis=0)
    inputs = {'image': np.concatenate([batch, pad]), 'mask': np.arange(size) < n,
              'index': np.arange(size, dtype=np.int32)}
    out = sharding.to_host(self._eval_step(self.state, inputs)[self.name])
    return np.asarray(out, np.float32)[:n].reshape(n, -1)


def load(workdir: str, step: int | None = None, mesh=None, log=lambda m: None) -> Embedder:
  """The run in `workdir` at checkpoint `step` (default: the latest), on one device."""
  try:
    exp, state, step = run_lib.restore_one_device(workdir, step, mesh, log)
  except run_lib.RunUnreadable as e:
    raise SearchError(str(e)) from None
  return Embedder(exp, state, step, workdir)


def embed_images(embedder: Embedder, images: list, size: int) -> np.ndarray:
  """(n, D) embeddings of preprocessed images, in batches of `size`."""
  parts = [embedder(np.stack(images[s:s + size]), size) for s in range(0, len(images), size)]
  return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)


def embed_files(embedder: Embedder, paths, *, err, progress: bool):
  """(embeddings (n, D) of the readable files, [[index into paths, reason]] of the others, each
  reported as a `SKIP path: reason` line). Files are read one batch at a time."""
  size = max(1, min(embedder.config.eval.batch_size, len(paths)))
  bar = writers.StatusLine('gallery', err, progress)
  parts, pending, skipped = [], [], []
  for i, path in enumerate(paths):
    try:
      pending.append(embedder.preprocess(images_lib.read_image(path)))
    except (images_lib.ImageError, ValueError) as e:  # ValueError: too small for the crop
      bar.clear()
      print(f'SKIP {path}: {e}', file=err, flush=True)
      skipped.append([i, str(e)])
    if len(pending) == size or (i == len(paths) - 1 and pending):
      parts.append(embed_images(embedder, pending, size))
      pending = []
    bar(i + 1, len(paths))
  return embed_images(embedder, [], size) if not parts else np.concatenate(parts), skipped


@dataclasses.dataclass
class Gallery:
  embeddings: np.ndarray  # (G, D) float32
  items: list[dict]  # per item: 'path' or 'id', and 'identity', 'camera', 'class' when known
  image: object  # item index -> its image (H, W, 3) uint8, or None when not available


def labels_from_name(relpath: str) -> dict:
  """identity and camera from a re-id file name, else class from the first-level subfolder."""
  match = REID_NAME.match(os.path.basename(relpath))
  if match:
    return {'identity': int(match.group(1)), 'camera': int(match.group(2))}
  parts = relpath.replace(os.sep, '/').split('/')
  return {'class': parts[0]} if len(parts) > 1 else {}


def _stats(root: str, relpaths) -> list[list]:
  stat = lambda rel: os.stat(os.path.join(root, rel))
  return [[rel.replace(os.sep, '/'), stat(rel).st_size, stat(rel).st_mtime_ns] for rel in relpaths]


def cache_key(embedder: Embedder, folder: str, relpaths) -> dict:
  """What the cached embeddings depend on (see the module docstring), as JSON-able values."""
  ckpt = os.path.join(os.path.abspath(embedder.workdir), 'checkpoints', str(embedder.step))
  files = sorted(os.path.relpath(os.path.join(r, f), ckpt) for r, _, fs in os.walk(ckpt)
                 for f in fs)
  config = json.dumps(json.loads(embedder.config.to_json_best_effort()), sort_keys=True)
  return {'workdir': os.path.realpath(embedder.workdir), 'step': int(embedder.step),
          'checkpoint files': _stats(ckpt, files), 'embedding': embedder.name,
          'config': hashlib.sha256(config.encode()).hexdigest(),
          'gallery files': _stats(folder, relpaths)}


def cache_path(folder: str, workdir: str) -> str:
  real = os.path.realpath(workdir)
  tag = hashlib.sha256(real.encode()).hexdigest()[:12]
  return os.path.join(folder, CACHE_DIR, f'{os.path.basename(real) or "run"}-{tag}.npz')


def _stale_reason(old: dict | None, new: dict) -> str:
  if old is None:
    return 'no cache yet'
  if old.get('step') != new['step']:
    return f'checkpoint step {old.get("step")} -> {new["step"]}'
  return ' and '.join(k for k in new if old.get(k) != new[k]) + ' changed'


def _read_cache(path: str):
  """(key, embeddings, skipped) of a cache file; Nones when there is none or it is unreadable."""
  try:
    with np.load(path, allow_pickle=False) as f:
      return json.loads(str(f['key'])), f['embeddings'], json.loads(str(f['skipped']))
  except (OSError, ValueError, KeyError):
    return None, None, None


def folder_gallery(embedder: Embedder, folder: str, *, err, progress: bool) -> Gallery:
  """The gallery of a folder's images, embedded or read from the cache (module docstring)."""
  root = os.path.normpath(folder)
  found, _ = images_lib.find_images([root])
  relpaths = [os.path.relpath(f.path, root) for f in found]
  if not relpaths:
    raise SearchError(f'--gallery={folder} holds no image file (extensions: '
                      f'{", ".join(images_lib.IMAGE_EXTENSIONS)})')
  key, path = cache_key(embedder, root, relpaths), cache_path(root, embedder.workdir)
  old, embeddings, skipped = _read_cache(path)
  if old == key and len(embeddings) == len(relpaths) - len(skipped):
    print(f'fgjax.search: gallery embeddings reused from {path}', file=err, flush=True)
    for i, reason in skipped:
      print(f'SKIP {os.path.join(root, relpaths[i])}: {reason}', file=err, flush=True)
  else:
    reason = _stale_reason(old, key)
    embeddings, skipped = embed_files(embedder, [os.path.join(root, r) for r in relpaths],
                                      err=err, progress=progress)
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = path[:-len('.npz')] + f'.{os.getpid()}.tmp.npz'  # two searches may write at once
      np.savez(tmp, embeddings=embeddings, key=np.asarray(json.dumps(key)),
               skipped=np.asarray(json.dumps(skipped)))
      os.replace(tmp, path)
      print(f'fgjax.search: gallery embeddings computed ({reason}), cached in {path}', file=err,
            flush=True)
    except OSError as e:
      print(f'fgjax.search: gallery embeddings computed ({reason}); WARNING: cannot write the '
            f'cache {path}: {e}', file=err, flush=True)
  dropped = {i for i, _ in skipped}
  kept = [r for i, r in enumerate(relpaths) if i not in dropped]
  if not kept:
    raise SearchError(f'--gallery={folder}: no readable image among its {len(relpaths)} files')
  items = [{'path': os.path.join(root, r), **labels_from_name(r)} for r in kept]
  return Gallery(embeddings, items, lambda i: images_lib.read_image(items[i]['path']))


def npz_gallery(embedder: Embedder, path: str, *, err) -> Gallery:
  """The gallery of an .npz written by fgjax.export (checked against the run)."""
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = dict(f)
  except (OSError, ValueError) as e:
    raise SearchError(f'--gallery={path} is not a readable .npz: {e}') from None
  if 'embeddings' not in arrays:
    raise SearchError(f'--gallery={path} has no `embeddings` array (it has: '
                      f'{", ".join(sorted(arrays)) or "none"}); write one with python -m '
                      f'fgjax.export --workdir={embedder.workdir} --split=SPLIT --out=FILE.npz')
  emb = arrays['embeddings']
  if emb.ndim != 2 or emb.shape[1] != embedder.dim:
    raise SearchError(f'--gallery={path}: embeddings of shape {emb.shape}, but this run\'s '
                      f'config.eval.embedding {embedder.name!r} has dimension {embedder.dim}')
  name = str(arrays['embedding']) if 'embedding' in arrays else embedder.name
  if name != embedder.name:
    raise SearchError(f'--gallery={path} holds the {name!r} output, but this run searches with '
                      f'config.eval.embedding={embedder.name!r}')
  if 'step' in arrays and int(arrays['step']) != embedder.step:
    print(f'WARNING {path}: exported at step {int(arrays["step"])}, the queries are embedded at '
          f'step {embedder.step}', file=err, flush=True)
  n = len(emb)
  ids = arrays.get('ids', np.arange(n))
  fields = (('identities', 'identity'), ('cameras', 'camera'), ('labels', 'class'))
  items = [{'id': int(ids[i]), **{k: int(arrays[a][i]) for a, k in fields if a in arrays}}
           for i in range(n)]

  same_data = str(arrays.get('dataset', '')) == embedder.exp.meta.name and 'index' in arrays
  source = functools.cache(lambda: embedder.exp.source(str(arrays['split'])))

  def image(i):  # the exported split's image, when its dataset is on this machine
    try:
      return np.asarray(source()[int(arrays['index'][i])]['image']) if same_data else None
    except Exception:  # pylint: disable=broad-except  # no dataset here: the cell says so
      return None
  return Gallery(emb.astype(np.float32), items, image)


def rank(query: np.ndarray, gallery: np.ndarray, topk: int, metric: str, rerank: bool):
  """(order (Q, k) gallery indices, distances (Q, k)) as evaluation ranks them."""
  dist = metrics.reid_distances(query, gallery, metric, normalize=True, rerank=rerank)
  order = np.argsort(dist, axis=1, kind='stable')[:, :topk]
  return order, np.take_along_axis(dist, order, axis=1)


def search(embedder: Embedder, queries, gallery: str, *, topk: int | None = None,
           metric: str | None = None, rerank: bool | None = None, grid: str | None = None,
           progress: bool = False, out=None, err=None) -> list[dict]:
  """Rank `gallery` (a folder or an export .npz) for every query image file: JSON lines on
  `out`, messages on `err`; returns the records. Raises SearchError."""
  out, err = out or sys.stdout, err or sys.stderr
  metric = metric or embedder.config.eval.distance
  rerank = embedder.config.eval.rerank if rerank is None else rerank
  topk = DEFAULT_TOPK if topk is None else topk
  check_args(queries, gallery, topk, grid)
  query_images, inputs = [], []
  for path in queries:
    try:
      query_images.append(images_lib.read_image(path))
      inputs.append(embedder.preprocess(query_images[-1]))
    except (images_lib.ImageError, ValueError) as e:  # ValueError: too small for the crop
      raise SearchError(f'query image {path} cannot be read: {e}') from None
  q = embed_images(embedder, inputs, min(embedder.config.eval.batch_size, len(inputs)))
  g = (npz_gallery(embedder, gallery, err=err) if gallery.endswith('.npz')
       else folder_gallery(embedder, gallery, err=err, progress=progress))
  order, dist = rank(q, g.embeddings, min(topk, len(g.items)), metric, rerank)
  records = []
  for qi, path in enumerate(queries):
    for r, (gi, d) in enumerate(zip(order[qi], dist[qi]), 1):
      (name, value), *labels = g.items[gi].items()  # 'path' or 'id' first, then what is known
      records.append({'query': path, 'rank': r, name: value, 'distance': float(d), **dict(labels)})
      print(json.dumps(records[-1]), file=out, flush=True)
  print(f'fgjax.search: {len(queries)} query image(s), gallery of {len(g.items)} ({gallery}), '
        f'{metric} distance, re-ranking {"on" if rerank else "off"}, {embedder.name!r} at step '
        f'{embedder.step}', file=err, flush=True)
  if grid is not None:
    rows = [(path, query_images[qi], [(g.image(gi), g.items[gi], d)
                                      for gi, d in zip(order[qi], dist[qi])])
            for qi, path in enumerate(queries)]
    draw_grid(rows, grid, f'{embedder.exp.method.name}, step {embedder.step}: {metric} distance'
              + (', re-ranked' if rerank else ''))
    print(f'fgjax.search: wrote {grid}', file=err, flush=True)
  return records


def check_args(queries, gallery: str, topk: int | None, grid: str | None) -> None:
  """The checks that need no run (made before loading it): SearchError naming the argument."""
  if not queries:
    raise SearchError('no query image given: python -m fgjax.search --workdir=DIR '
                      '--gallery=FOLDER|EXPORT.npz QUERY_IMAGE...')
  missing = [p for p in queries if not os.path.isfile(p)]
  if missing:
    raise SearchError(f'query image {missing[0]}: no such file')
  if not (os.path.isdir(gallery) or (gallery.endswith('.npz') and os.path.isfile(gallery))):
    raise SearchError(f'--gallery={gallery} is neither a folder nor an existing .npz file')
  if topk is not None and topk < 1:
    raise SearchError(f'--topk={topk}: must be at least 1')
  if grid is not None and (not grid.lower().endswith('.png')
                           or not os.path.isdir(os.path.dirname(os.path.abspath(grid)))):
    raise SearchError(f'--grid={grid} must be a .png file in an existing directory')


def _same(query_path: str, item: dict) -> bool | None:
  query = labels_from_name(os.path.basename(query_path))
  key = 'identity' if 'identity' in item else 'class'
  return query[key] == item[key] if key in query and key in item else None


def draw_grid(rows, path: str, title: str) -> str:
  """One row per query: (query path, its image, [(image or None, item, distance)])."""
  k = max(len(r[2]) for r in rows)
  size = (plots.RETRIEVAL_CELL * (k + 1), (plots.RETRIEVAL_CELL + 0.4) * len(rows) + 0.4)
  fig = Figure(figsize=size, dpi=plots.DPI, layout='constrained')  # as fgjax.evaluation.plots
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(rows), k + 1, squeeze=False)
  for (query_path, query_image, matches), row in zip(rows, axes):
    cells = [(query_image, os.path.basename(query_path), plots.QUERY)]
    for r, (image, item, d) in enumerate(matches, 1):
      name = next((f'{k} {item[k]}' for k in ('identity', 'class', 'id') if k in item), '')
      same = _same(query_path, item)
      colour = None if same is None else plots.SAME if same else plots.DIFFERENT
      cells.append((image, f'{r}: {d:.4f}\n{name}', colour))
    for ax, cell in zip(row, cells + [None] * (k + 1 - len(cells))):
      ax.set(xticks=[], yticks=[])
      if cell is None:
        ax.set_axis_off()
        continue
      image, caption, colour = cell
      if image is None:
        ax.text(0.5, 0.5, 'no image', ha='center', va='center', fontsize=7)
      else:
        ax.imshow(np.asarray(image), interpolation='nearest', aspect='auto')
      ax.set_xlabel(caption[:40], fontsize=7)
      for spine in ax.spines.values():
        spine.set_edgecolor(colour or '#999999')
        spine.set_linewidth(4 if colour else 1)
  fig.suptitle(title, fontsize=9)
  fig.savefig(path, dpi=plots.DPI, format='png', facecolor='white')
  return path


def main(argv):
  cli.start()
  gallery = run_lib.expand_path(_GALLERY.value)
  check_args(argv[1:], gallery, cli.TOPK.value, _GRID.value)
  embedder = load(run_lib.expand_path(cli.WORKDIR.value), cli.STEP.value,
                  log=lambda m: print(m, file=sys.stderr))
  search(embedder, argv[1:], gallery, topk=cli.TOPK.value, metric=_DISTANCE.value,
         rerank=_RERANK.value, grid=_GRID.value, progress=cli.PROGRESS.value or sys.stderr.isatty())


if __name__ == '__main__':
  # Required here, not at import: fgjax.cli's flags are shared with the other commands. A
  # SearchError (workdir, checkpoint, gallery, query, option) exits 2 with one ERROR line.
  cli.run(main, shared=('workdir', 'progress', 'step', 'topk'), required=('workdir', 'gallery'),
          user_errors=(SearchError,))
