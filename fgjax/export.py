"""Export a run's embeddings of one split to a .npz file (for retrieval or linear SVMs elsewhere).

python -m fgjax.export --workdir=DIR --split=test --out=FILE.npz [--embedding=features]
    [--progress] [--overwrite] [--config=configs/X.py]

Uses the latest checkpoint and the run's own config (WORKDIR/config.json) unless --config is
given. Every example of the split exactly once, in split order (the padded, masked evaluation
batches of fgjax.evaluation), in evaluation mode (centre crop; config.eval.flip_tta applies).
Arrays in the file:
- `embeddings` (N, D) float32: the method output --embedding (default config.eval.embedding);
- `labels` (N,) int32; `index` (N,) int32: the position in the split;
- `ids` (N,) int64: the dataset's `image_id` when it has one, else `index`;
- `identities`, `cameras` (N,) int32: when the dataset has `identity` / `camera` (re-id);
- metadata (0-d string / int arrays): `split`, `method`, `dataset`, `embedding`, `step`.
Progress (n/total, img/s) goes to stderr when stderr is a terminal or with --progress.

Exit codes: 0 done; 2 a bad workdir, split, embedding name or output path: one line
`ERROR: ...` says what to change and lists the valid names (the traceback too with
--verbosity=1 or FGJAX_TRACEBACK=1).
"""

from __future__ import annotations

import os
import sys

from absl import app
import jax
import numpy as np

from fgjax import cli, run, writers
from fgjax.evaluation import protocols



def check_out(out: str, overwrite: bool) -> str:
  out = os.path.abspath(run.expand_path(out))
  if not out.endswith('.npz'):
    raise ValueError(f'--out={out} must end with .npz')
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f'--out={out} exists; pass --overwrite to replace it')
  parent = os.path.dirname(out)
  if not os.path.isdir(parent):
    raise FileNotFoundError(f'--out: the directory {parent} does not exist')
  return out


def export_embeddings(workdir: str, split: str, embedding: str | None = None, *, config=None,
                      progress=None, mesh=None, log=lambda m: None) -> dict[str, np.ndarray]:
  """The arrays of the .npz (see the module docstring), computed on the latest checkpoint."""
  exp, state, step = run.restore(config, workdir, mesh, log)
  exp.meta.check_split(split, '--split')
  embedding = embedding or exp.config.eval.embedding
  protocols.check_embedding(exp, embedding, '--embedding')
  features = exp.meta.features
  keys = ('label',) + tuple(k for k in ('image_id', 'identity', 'camera') if k in features)
  eval_step = protocols.make_eval_step(exp, outputs=(embedding,), batch_keys=keys)
  out = protocols.collect(exp, state, split, eval_step, batch_keys=keys, progress=progress)
  index = out['index'].astype(np.int32)
  if not np.array_equal(index, np.arange(exp.meta.split_sizes[split])):
    raise RuntimeError(f'export of {split!r} did not see every example once, in order')
  arrays = {
      'embeddings': out[embedding].reshape(len(index), -1).astype(np.float32),
      'labels': out['label'].astype(np.int32), 'index': index,
      'ids': out['image_id'].astype(np.int64) if 'image_id' in out else index.astype(np.int64)}
  if 'identity' in out:
    arrays['identities'] = out['identity'].astype(np.int32)
  if 'camera' in out:
    arrays['cameras'] = out['camera'].astype(np.int32)
  arrays.update(split=np.asarray(split), method=np.asarray(exp.method.name),
                dataset=np.asarray(exp.meta.name), embedding=np.asarray(embedding),
                step=np.asarray(step, np.int64))
  return arrays


def export(workdir: str, split: str, out: str, embedding: str | None = None, *,
           overwrite: bool = False, config=None, progress=None, mesh=None,
           log=lambda m: None) -> str:
  """Write the .npz (process 0 only); returns its path. Refuses to overwrite unless told."""
  out = check_out(out, overwrite)
  arrays = export_embeddings(workdir, split, embedding, config=config, progress=progress,
                             mesh=mesh, log=log)
  if jax.process_index() == 0:
    tmp = out[:-len('.npz')] + '.tmp.npz'
    np.savez(tmp, **arrays)
    os.replace(tmp, out)  # no half-written file under the final name
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} (flags take the form '
                         '--name=value; --help lists them)')
  cli.start()
  log = lambda m: print(m, file=sys.stderr, flush=True)
  config = cli.CONFIG.value
  if config is not None:
    config = run.resolve_config(config, cli.overridden_fields(), log)
  show = cli.PROGRESS.value or sys.stderr.isatty()
  progress = writers.StatusLine(f'export {cli.SPLIT.value}',
                                enabled=show and jax.process_index() == 0)
  path = export(run.expand_path(cli.WORKDIR.value), cli.SPLIT.value, cli.OUT.value,
                cli.EMBEDDING.value, overwrite=cli.OVERWRITE.value, config=config, progress=progress,
                log=log)
  print(f'wrote {path}', flush=True)


if __name__ == '__main__':
  # Required here, not at import: fgjax.cli's flags are shared with the other commands.
  cli.run(main, shared=('config', 'workdir', 'split', 'out', 'progress', 'embedding', 'overwrite'),
          required=('workdir', 'split', 'out'),
          user_errors=(FileNotFoundError, FileExistsError, ValueError))
