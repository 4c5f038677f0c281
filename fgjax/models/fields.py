"""Checks of a model's fields, shared by the models' `__post_init__`.

A model's fields are its method's `config.model` (fgjax/methods/common.py builds the model with
`Model(num_classes=..., **config.model)`), so a bad value is reported as `config.model.<field>`.
This module imports nothing of fgjax, so that every model can use it.
"""

from __future__ import annotations


def check_choice(model, field: str, valid) -> None:
  """ValueError naming config.model.<field> and the valid values, if the field is not one."""
  value = getattr(model, field)
  if value not in valid:
    raise ValueError(f'config.model.{field} must be one of {", ".join(map(str, valid))}, got '
                     f'{value!r}')


def check_choices(model, choices: dict) -> None:
  """`check_choice` for each {field: valid values}."""
  for field, valid in choices.items():
    check_choice(model, field, valid)
