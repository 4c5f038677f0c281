"""The methods fgjax has, by config name (`config.method`).

The trainer only ever calls `get(config.method)` and the fields of the returned
`fgjax.methods.common.Method`; adding a method means adding a module to this package that defines
its `Method` and one line to `METHODS` below, never branching on a method name in the trainer.
"""

from __future__ import annotations

from fgjax.methods import (a3m, activation_attention, bcnn, bilinear_lstm, classifier,
                           focus_discriminate)
from fgjax.methods.common import Method, compute_dtype, resolve_keys

METHODS: dict[str, Method] = {
    'bcnn': bcnn.BCNN_METHOD,
    'bcnn_spp': bcnn.BCNN_SPP_METHOD,
    'bilinear_lstm': bilinear_lstm.METHOD,
    'a3m': a3m.METHOD,
    'activation_attention': activation_attention.METHOD,
    'focus_discriminate': focus_discriminate.METHOD,
    'classifier': classifier.METHOD,
}


def list_methods() -> list[str]:
  return sorted(METHODS)


def get(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r} (config.method); valid: {", ".join(list_methods())}')
  return METHODS[name]


__all__ = ['METHODS', 'Method', 'compute_dtype', 'get', 'list_methods', 'resolve_keys']
