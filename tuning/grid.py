"""The search space: a gin dict of parameter -> values, expanded into trials.

A grid is bound in gin, e.g.

    tune.grid_search.grid = {
        'train.learning_rate': [1e-3, 3e-4],
        'train.batch_size': [8, 16],
    }

and expands, in order, into the Cartesian product of its values. Each trial is
written back as gin bindings (`train.learning_rate = 0.001`) and named after its
values (`learning_rate=0.001,batch_size=8`), so a trial's sub-run keeps its name when
values are added to the grid later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from typing import Any, Mapping

GRID_PARAMETER = 'tune.grid_search.grid'
_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_./]*$')
_UNSAFE_RE = re.compile(r'[^A-Za-z0-9._+-]+')
_MAX_NAME = 120  # characters of a trial folder name before it is shortened with a hash


@dataclasses.dataclass
class Trial:
  """One point of the grid.

  Attributes:
    index: Position in the grid, from 0.
    name: Folder name of the trial's sub-run (filesystem-safe, unique in the grid).
    values: Parameter -> value as gin parsed it (references and macros kept).
  """
  index: int
  name: str
  values: dict[str, Any]

  @property
  def bindings(self) -> list[str]:
    """The trial's gin bindings, e.g. `['train.learning_rate = 0.001']`."""
    return [f'{param} = {gin_text(value)}' for param, value in self.values.items()]


def gin_text(value: Any) -> str:
  """Gin source text of a parsed value (`repr` round-trips literals, @refs, %macros)."""
  return repr(value)


def validate(grid: Any) -> dict[str, list[Any]]:
  """Checks the shape of a grid and returns it as an ordered dict of lists.

  Raises:
    ValueError: One line naming `tune.grid_search.grid` and the entry at fault.
  """
  if not isinstance(grid, Mapping) or not grid:
    raise ValueError(f'{GRID_PARAMETER} must be a non-empty dict of '
                     f"'configurable.parameter': [values], got {grid!r}")
  checked = {}
  for param, values in grid.items():
    if not isinstance(param, str) or not _NAME_RE.match(param):
      raise ValueError(f"{GRID_PARAMETER}: key {param!r} is not a gin parameter name "
                       "such as 'train.learning_rate' (or a macro name)")
    if not isinstance(values, (list, tuple)) or not values:
      raise ValueError(f'{GRID_PARAMETER}[{param!r}] must be a non-empty list of values, '
                       f'got {values!r}')
    texts = [gin_text(v) for v in values]
    if len(set(texts)) != len(texts):
      raise ValueError(f'{GRID_PARAMETER}[{param!r}] repeats a value: {values!r}')
    checked[param] = list(values)
  return checked


def short_names(params: list[str]) -> dict[str, str]:
  """Parameter -> its last component, or the full name where that is ambiguous."""
  last = [p.rsplit('.', 1)[-1] for p in params]
  return {p: (s if last.count(s) == 1 else p) for p, s in zip(params, last)}


def _slug(value: Any) -> str:
  text = value if isinstance(value, str) else gin_text(value)
  return _UNSAFE_RE.sub('_', text).strip('_') or 'empty'


def expand(grid: Mapping[str, Any]) -> list[Trial]:
  """The trials of a grid, in `itertools.product` order of its values."""
  grid = validate(grid)
  params = list(grid)
  short = short_names(params)
  trials = []
  for index, combo in enumerate(itertools.product(*grid.values())):
    values = dict(zip(params, combo))
    name = ','.join(f'{short[p]}={_slug(v)}' for p, v in values.items())
    trials.append(Trial(index, name, values))
  names = [t.name for t in trials]
  for trial in trials:
    if len(trial.name) > _MAX_NAME or names.count(trial.name) > 1:
      digest = hashlib.sha1('\n'.join(trial.bindings).encode()).hexdigest()[:8]
      trial.name = f'{trial.name[:_MAX_NAME]}-{digest}'
  return trials
