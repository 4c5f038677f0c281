"""A3M's attribute groups and the dataset's attribute columns.

A3M (Han et al. 2018, "Attribute-Aware Attention Model for Fine-grained Representation Learning")
has K attribute branches, each a softmax over C^(k) classes (`config.model.attribute_classes`).
A dataset stores attributes in one int field (`config.model.attribute_field`) of M columns (-1 =
unknown). `config.model.attribute_columns` says which columns make group k:

- `()` (default): column k is group k's class index (M = K): synthetic_parts, cub2011's
  `attribute_groups`, compcars' `attribute_classes`;
- otherwise one tuple of column indices per group:
  - one column `(j,)`: its value is the class index;
  - several columns `(j1, ..., jc)`: one-hot binary columns (1 = yes). The class is the position
    of the one column that says yes. A row where no column says yes gets class c if the group has
    c + 1 classes (the last class = "none of these"), else -1 (unknown, left out of the loss); a
    row where several say yes, or any is unknown, gets -1. Such a group has c or c + 1 classes.

Market-1501 (Lin et al. 2019, "Improving person re-identification by attribute and identity
learning") stores 27 columns: 9 binary attributes, age (4 values) and one-hot upper (8) and lower
(9) colours; `MARKET1501_ATTRIBUTE_COLUMNS` makes them the 12 groups of Lin et al.'s attribute
evaluation (colour = one 8-way / 9-way choice).

`check_fit` is the config-time check that the groups fit the field (`fgjax.methods.a3m`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

# Lin et al.'s 27 Market-1501 columns (the market1501 builder's order: gender, hair, sleeve, lower
# length, lower type, hat, backpack, bag, handbag, age, 8 upper colours, 9 lower colours) as 12
# groups, and their class counts: the colour groups get a last class "none of the colours"
# (147 of the 1,501 identities have no upper colour marked, 74 no lower colour; none has two).
MARKET1501_ATTRIBUTE_COLUMNS = tuple((j,) for j in range(10)) + (
    tuple(range(10, 18)), tuple(range(18, 27)))
MARKET1501_ATTRIBUTE_CLASSES = (2,) * 9 + (4, 9, 10)


def check_columns(columns, classes) -> None:
  """The model's own check of `attribute_columns` against `attribute_classes` (no dataset)."""
  if not columns:
    return
  if len(columns) != len(classes):
    raise ValueError(f'config.model.attribute_columns has {len(columns)} groups but '
                     f'config.model.attribute_classes has {len(classes)}: give one tuple of '
                     'dataset columns per attribute group, or () for column k = group k')
  for k, (cols, n) in enumerate(zip(columns, classes)):
    if not cols or any(int(j) < 0 for j in cols):
      raise ValueError(f'config.model.attribute_columns[{k}] must be a non-empty tuple of column '
                       f'indices >= 0, got {cols!r}')
    if len(cols) > 1 and int(n) not in (len(cols), len(cols) + 1):
      raise ValueError(
          f'config.model.attribute_classes[{k}] = {n}, but config.model.attribute_columns[{k}] '
          f'makes a one-hot group of {len(cols)} columns: it has {len(cols)} classes (rows with '
          f'no column set are unknown) or {len(cols) + 1} (the last class = none set)')


def attribute_targets(values, columns, classes):
  """(N, K) class indices per group (-1 = unknown) from the dataset field's (N, M) `values`;
  NumPy in, NumPy out, else jax.numpy (inside the loss)."""
  if not columns:
    return values
  xp = np if isinstance(values, np.ndarray) else jnp
  out = []
  for cols, n in zip(columns, classes):
    v = values[:, [int(j) for j in cols]]
    if len(cols) == 1:
      out.append(v[:, 0])
      continue
    yes = (v == 1).astype(values.dtype)
    count = yes.sum(-1)
    none = len(cols) if int(n) == len(cols) + 1 else -1
    target = xp.where(count == 1, xp.argmax(yes, -1).astype(values.dtype),
                      xp.where(count == 0, none, -1))
    out.append(xp.where((v >= 0).all(-1), target, -1).astype(values.dtype))
  return xp.stack(out, 1)


def value_counts(metadata, field: str, num_columns: int) -> list[int] | None:
  """Number of values of each column of dataset field `field` (its max value + 1), read from the
  dataset's tfds metadata where the builder records it, else None. Known layouts: market1501
  `attributes` (`attribute_num_values`), synthetic_parts `attributes` (`class_attributes`: the
  classes' values), cub2011 `attribute_groups` (`attribute_group_num_classes`), compcars
  `attribute_classes` (`attribute_num_classes`; both written when the dataset is prepared)."""
  md = dict(metadata or {})
  counts = None
  if field == 'attributes' and md.get('attribute_num_values'):
    counts = list(md['attribute_num_values'])
  elif field == 'attributes' and md.get('class_attributes'):
    counts = list(np.asarray(md['class_attributes']).max(0) + 1)
  elif field == 'attribute_groups' and md.get('attribute_group_num_classes'):
    counts = list(md['attribute_group_num_classes'])
  elif field == 'attribute_classes' and md.get('attribute_num_classes'):
    counts = list(md['attribute_num_classes'])
  if counts is None or len(counts) != num_columns:
    return None
  return [int(c) for c in counts]


def check_fit(classes, columns, field: str, num_columns: int, counts: Sequence[int] | None,
              dataset: str) -> None:
  """The groups fit dataset field `field` of `num_columns` columns whose column j takes
  `counts[j]` values (None: unknown, only the number of columns is checked). ValueError naming
  config.model.attribute_classes / attribute_columns, the field and the sizes."""
  where = f'dataset {dataset!r} field {field!r} (config.model.attribute_field)'
  check_columns(columns, classes)
  if not columns:
    if len(classes) != num_columns:
      raise ValueError(
          f'config.model.attribute_classes has {len(classes)} groups {tuple(classes)} but {where} '
          f'has {num_columns} columns: give one class count per column, or map the columns to '
          'groups with config.model.attribute_columns')
    columns = tuple((j,) for j in range(num_columns))
  for k, cols in enumerate(columns):
    bad = [int(j) for j in cols if int(j) >= num_columns]
    if bad:
      raise ValueError(f'config.model.attribute_columns[{k}] = {tuple(cols)} names columns {bad} '
                       f'but {where} has {num_columns} (0..{num_columns - 1})')
  if counts is None:
    return
  for k, (cols, n) in enumerate(zip(columns, classes)):
    if len(cols) == 1:
      need = counts[int(cols[0])]
      if int(n) < need:
        raise ValueError(
            f'config.model.attribute_classes[{k}] = {n}, but column {int(cols[0])} of {where} '
            f'takes {need} values (0..{need - 1}): the group needs >= {need} classes')
      continue
    wide = [int(j) for j in cols if counts[int(j)] > 2]
    if wide:
      raise ValueError(
          f'config.model.attribute_columns[{k}] = {tuple(cols)} makes a one-hot group, but '
          f'columns {wide} of {where} are not binary (values: {[counts[j] for j in wide]})')


def group_names(metadata, columns) -> list[tuple[str, list[str]]] | None:
  """(group name, value names) of each mapped group, from the per-column names of the dataset's
  metadata (Market-1501: `attribute_names`, `attribute_values`); None without them. A one-hot
  group is named by its columns' common prefix and its values by the columns (+ 'none')."""
  md = dict(metadata or {})
  names, values = md.get('attribute_names'), md.get('attribute_values')
  if not names or not values or max(int(j) for c in columns for j in c) >= len(names):
    return None
  out = []
  for cols in columns:
    cols = [int(j) for j in cols]
    if len(cols) == 1:
      out.append((str(names[cols[0]]), [str(x) for x in values[cols[0]]]))
      continue
    col_names = [str(names[j]) for j in cols]
    prefix = _common_prefix(col_names)
    out.append((f'{prefix} (one of {len(cols)})' if prefix else f'columns {cols[0]}-{cols[-1]}',
                [c[len(prefix):] or c for c in col_names] + ['none']))
  return out


def _common_prefix(words: list[str]) -> str:
  first, last = min(words), max(words)
  i = 0
  while i < min(len(first), len(last)) and first[i] == last[i]:
    i += 1
  return first[:i]
