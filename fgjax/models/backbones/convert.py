"""Shared machinery for mapping foreign weight dicts (torchvision, MatConvNet, ...) onto Flax trees.

A mapping reads source tensors by name through `SourceTensors.take`, which records what was used;
`finish()` then raises one error listing every source tensor that no rule consumed. `check_tree`
compares the produced variables with the model's own (abstract) variables and raises one error
listing missing, unexpected and wrongly shaped entries. Together they make a conversion exact:
every source tensor used once, every model variable filled with the right shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np



class ConversionError(ValueError):
  pass


class SourceTensors:
  """Read-once view of a {name: array} dict, for exact mappings."""

  def __init__(self, tensors: Mapping[str, np.ndarray], source: str,
               ignore: Callable[[str], bool] = lambda name: False):
    self._tensors = {k: np.asarray(v) for k, v in tensors.items()}
    self._used: set[str] = set()
    self._missing: list[str] = []
    self.source = source
    self._ignore = ignore

  def __contains__(self, name: str) -> bool:
    return name in self._tensors

  def take(self, name: str, transform: Callable[[np.ndarray], np.ndarray] = lambda x: x):
    """The tensor `name` (transformed), marked used; a missing name is collected, not raised."""
    if name not in self._tensors:
      self._missing.append(name)
      return None
    self._used.add(name)
    return np.asarray(transform(self._tensors[name]), np.float32)

  def finish(self) -> None:
    unused = sorted(k for k in self._tensors if k not in self._used and not self._ignore(k))
    if self._missing or unused:
      lines = [f'  missing in {self.source}: {m}' for m in self._missing]
      lines += [f'  not used (no rule maps it): {u} {self._tensors[u].shape}' for u in unused]
      raise ConversionError(f'{self.source} does not match the expected layout:\n' +
                            '\n'.join(lines))


def _flat(tree) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(p, simple=True, separator='/'): tuple(leaf.shape)
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_tree(converted: dict, expected: dict, source: str) -> None:
  """Raise ConversionError listing missing / unexpected / wrongly shaped variables."""
  got, want = _flat(converted), _flat(expected)
  lines = [f'  missing: {k} {want[k]}' for k in sorted(set(want) - set(got))]
  lines += [f'  unexpected: {k} {got[k]}' for k in sorted(set(got) - set(want))]
  lines += [f'  wrong shape: {k}: converted {got[k]} vs model {want[k]}'
            for k in sorted(set(got) & set(want)) if got[k] != want[k]]
  if lines:
    raise ConversionError(f'converted {source} does not fit the model:\n' + '\n'.join(lines))


def conv_oihw_to_hwio(w: np.ndarray) -> np.ndarray:
  """torch Conv2d weight (out, in, kh, kw) -> Flax Conv kernel (kh, kw, in, out)."""
  return np.transpose(w, (2, 3, 1, 0))


def linear_to_dense(w: np.ndarray) -> np.ndarray:
  """torch Linear weight (out, in) -> Flax Dense kernel (in, out)."""
  return np.transpose(w, (1, 0))


def nest(flat: Mapping[str, np.ndarray]) -> dict:
  """{'a/b/c': x} -> {'a': {'b': {'c': x}}}."""
  out: dict = {}
  for name, value in flat.items():
    node = out
    *parents, leaf = name.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out
