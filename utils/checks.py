"""Checks of numeric parameters, with one-line errors that name the gin parameter.

Kept free of TensorFlow and Keras so light modules (tuning, metrics) can use it.
A bool is not a number here (`True` for a rate is a typo), and neither are NaN or an
infinity (gin parses `1e999` as one).
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def _text(bound: float) -> str:
  return str(int(bound)) if float(bound).is_integer() else f'{bound:g}'


def _describe(whole: bool, low: float | None, high: float | None, low_open: bool,
              high_open: bool) -> str:
  kind = 'a whole number' if whole else 'a number'
  if low is not None and high is not None:
    return (f'{kind} in {"(" if low_open else "["}{_text(low)}, {_text(high)}'
            f'{")" if high_open else "]"}')
  if low is not None:
    return f'{kind} {">" if low_open else ">="} {_text(low)}'
  if high is not None:
    return f'{kind} {"<" if high_open else "<="} {_text(high)}'
  return kind


def check_number(parameter: str, value: Any, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 high_open: bool = False, whole: bool = False,
                 none_ok: bool = False, note: str = '') -> None:
  """Raises ValueError unless `value` is a finite number within the bounds.

  Args:
    parameter: The name the message gives, e.g. 'train.learning_rate'.
    value: The value to check.
    low: Least value, or None for no lower bound.
    high: Greatest value, or None for no upper bound.
    low_open: `low` itself is excluded.
    high_open: `high` itself is excluded.
    whole: Only integers are accepted.
    none_ok: None is accepted (a parameter that None switches off).
    note: Said in brackets after the range, e.g. '0 is off'.

  Raises:
    ValueError: `parameter must be a number in [0, 1) (0 is off), got 'x'`.
  """
  if value is None and none_ok:
    return
  kind = numbers.Integral if whole else numbers.Real
  ok = (isinstance(value, kind) and not isinstance(value, bool)
        and (isinstance(value, numbers.Integral) or math.isfinite(value))
        and (low is None or value > low or (value == low and not low_open))
        and (high is None or value < high or (value == high and not high_open)))
  if not ok:
    said = [note] if note else []
    said += ['or None'] if none_ok and 'None' not in note else []
    note = f' ({", ".join(said)})' if said else ''
    raise ValueError(f'{parameter} must be '
                     f'{_describe(whole, low, high, low_open, high_open)}{note}, '
                     f'got {value!r}')


def check_choice(parameter: str, value: Any, choices) -> None:
  """Raises ValueError unless `value` is one of `choices`, naming the parameter."""
  if value not in choices:
    raise ValueError(f'{parameter} must be one of {list(choices)}, got {value!r}')
