"""The methods fgjax has, by config name (`config.method`).

The trainer only ever calls `get(config.method)` and the fields of the returned
`fgjax.methods.common.Method`; adding a method means adding a module to this package that defines
its `Method` and one line to `METHODS` below, never branching on a method name in the trainer.
"""

from __future__ import annotations

import importlib  # TRANSITION: replaced by the explicit imports once every method is ported
from fgjax.methods.common import Method, compute_dtype, resolve_keys

METHODS: dict[str, Method] = {}
for _mod, _pairs in (('bcnn', (('bcnn', 'BCNN_METHOD'), ('bcnn_spp', 'BCNN_SPP_METHOD'))),
                     ('bilinear_lstm', (('bilinear_lstm', 'METHOD'),)),
                     ('a3m', (('a3m', 'METHOD'),)),
                     ('activation_attention', (('activation_attention', 'METHOD'),)),
                     ('focus_discriminate', (('focus_discriminate', 'METHOD'),))):
  try:
    _m = importlib.import_module(f'fgjax.methods.{_mod}')
  except (ImportError, SyntaxError) as _e:  # not ported yet
    print(f'TRANSITION: fgjax.methods.{_mod} not importable: {_e}')
    continue
  for _n, _attr in _pairs:
    METHODS[_n] = getattr(_m, _attr)


def list_methods() -> list[str]:
  return sorted(METHODS)


def get(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r} (config.method); valid: {", ".join(list_methods())}')
  return METHODS[name]


__all__ = ['METHODS', 'Method', 'compute_dtype', 'get', 'list_methods', 'resolve_keys']
