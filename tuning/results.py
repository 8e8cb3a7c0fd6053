"""The results table of a grid search and its printed summary.

results.csv has one row per trial, best first by the selection metric (completed
trials without the metric, then failed ones, last): trial, each hyperparameter as gin
text, each validation metric, status, error, seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Any

from tuning import grid as grid_lib

RESULTS_CSV = 'results.csv'


@dataclasses.dataclass
class Report:
  """A finished search: rows sorted best first, and what they were sorted by."""
  run_dir: str
  params: list[str]
  metrics: list[str]
  selection_metric: str
  selection_mode: str
  rows: list[dict[str, Any]]
  bindings: dict[str, list[str]]  # trial name -> its gin bindings

  @property
  def completed(self) -> list[dict[str, Any]]:
    return [r for r in self.rows if r['status'] == 'completed']

  @property
  def failed(self) -> list[dict[str, Any]]:
    return [r for r in self.rows if r['status'] != 'completed']

  @property
  def best(self) -> dict[str, Any] | None:
    row = self.rows[0] if self.rows else None
    ok = row and row['status'] == 'completed' and _finite(row.get(self.selection_metric))
    return row if ok else None


def _finite(value: Any) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def sort_rows(rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
  """Completed trials best first by `metric` ('max' or 'min'); failures last."""
  def key(row):
    value = row.get(metric)
    if row['status'] != 'completed':
      return (2, 0.0)
    if not _finite(value):
      return (1, 0.0)
    return (0, -value if mode == 'max' else value)
  return sorted(rows, key=key)


def write_csv(report: Report) -> str:
  """Writes results.csv at the top of the run directory and returns its path."""
  path = os.path.join(report.run_dir, RESULTS_CSV)
  fields = (['trial'] + report.params + [f'val_{m}' for m in report.metrics] +
            ['status', 'error', 'seconds'])
  with open(path + '.tmp', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(fields)
    for row in report.rows:
      writer.writerow([row['trial']] + [row[p] for p in report.params] +
                      [_cell(row.get(m)) for m in report.metrics] +
                      [row['status'], row['error'], f'{row["seconds"]:.1f}'])
  os.replace(path + '.tmp', path)
  return path


def _cell(value: Any) -> str:
  return f'{value:.6g}' if _finite(value) else ''


def shell_quote(text: str) -> str:
  """Quotes a binding for a POSIX shell, preferring readable single quotes."""
  if "'" not in text:
    return f"'{text}'"
  if not any(c in text for c in '"$`\\!'):
    return f'"{text}"'
  return "'" + text.replace("'", "'\"'\"'") + "'"


def format_summary(report: Report, top: int = 10) -> str:
  """The printed summary: best trials, failures, and the best bindings ready to paste."""
  metric = report.selection_metric
  lines = [f'{len(report.completed)} of {len(report.rows)} trials completed; '
           f'ranked by val {metric} ({report.selection_mode}):']
  width = max([len(r['trial']) for r in report.rows] + [5])
  shown = [m for m in report.metrics if any(_finite(r.get(m)) for r in report.rows)]
  lines.append(f'  {"trial":<{width}}' + ''.join(f'{m[:17]:>19}' for m in shown) +
               f'{"seconds":>9}')
  for row in report.completed[:top]:
    lines.append(f'  {row["trial"]:<{width}}' +
                 ''.join(f'{_cell(row.get(m)) or "-":>19}' for m in shown) +
                 f'{row["seconds"]:>9.0f}')
  if len(report.completed) > top:
    lines.append(f'  ... {len(report.completed) - top} more in {RESULTS_CSV}')
  for row in report.failed:
    lines.append(f'FAILED {row["trial"]}: {row["error"]}')
  best = report.best
  if best is not None:
    bindings = report.bindings[best['trial']]
    lines += [f'best trial: {best["trial"]} (val {metric} {best[metric]:.4f}); '
              f'its sub-run: {os.path.join(report.run_dir, best["trial"])}',
              '  flags:   ' + ' '.join(f'--gin_bindings={shell_quote(b)}' for b in bindings),
              '  gin file:']
    lines += [f'    {b}' for b in bindings]
  lines.append(f'results: {os.path.join(report.run_dir, RESULTS_CSV)}; '
               f'tensorboard --logdir {report.run_dir}')
  return '\n'.join(lines)


def make_row(name: str, values: dict[str, Any], metrics: dict[str, Any] | None,
             status: str, error: str, seconds: float) -> dict[str, Any]:
  """One row: trial name, hyperparameters as gin text, metrics, status, error, seconds."""
  row: dict[str, Any] = dict(trial=name, status=status, error=error,
                             seconds=float(seconds or 0.0))
  row.update({p: grid_lib.gin_text(v) for p, v in values.items()})
  row.update({k: v for k, v in (metrics or {}).items() if k not in row})
  return row

