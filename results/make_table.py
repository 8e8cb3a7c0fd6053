"""Regenerates the README's results tables from results/<experiment>/.

    python results/make_table.py [--experiment=idrid_binary] [--check]

An experiment is a folder results/<experiment>/ (results/run_seeds.py --name); without
--experiment, every folder of results/ that holds seed results is regenerated.

Per seed and mean +- standard deviation (sample, ddof=1) of the test metrics, plus an
ensemble row: probabilities averaged over the seeds, threshold chosen on the averaged
validation probabilities with the runs' rule, applied to test. Writes
results/<experiment>/table.md and replaces the block between the README's markers.
A cross-validated experiment (run_seeds.py --folds) shows per seed the fold ensemble, and
a row of the single fold models, each at its own fold's threshold, over all seeds.
Each results/<experiment>/tune_<grid>.csv (a copy of tune.py's results.csv) fills the
README's tune:<grid> block; grids with `train.seed` among their parameters show mean +- sd
over the seeds. If results/<experiment>/localisation.json exists (written by
`python -m visualization.localisation`), its table replaces the README's localisation
block. Blocks missing from the README are skipped (the tables still go to
results/<experiment>/). With --check, nothing is written: it exits 1, naming the stale
files, if README.md or a results/<experiment>/table.md is out of date.
"""

import csv
import glob
import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from evaluation import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
from evaluation import predictions as predictions_file  # pylint: disable=g-import-not-at-top
from training import run_dir as rd  # pylint: disable=g-import-not-at-top

KEYS = metrics_lib.REPORTED
HEADER = ('accuracy', 'balanced acc.', 'sensitivity', 'specificity', 'F1', 'ROC AUC')


def ensemble(seed_dirs, rule, min_sensitivity=0.9):
  """Averaged-probability ensemble: (metrics on test, threshold)."""
  _, labels, probs, threshold = predictions_file.ensemble(seed_dirs, rule, min_sensitivity)
  return metrics_lib.binary_metrics(labels, probs, threshold), threshold


def build_table(experiment: str, root: str = ROOT) -> str:
  """The markdown table of results/<experiment>/seed_*/ under `root`."""
  seed_dirs = sorted(glob.glob(os.path.join(root, 'results', experiment, 'seed_*')),
                     key=lambda d: int(d.rsplit('_', 1)[1]))
  unfinished = [d for d in seed_dirs if not os.path.isfile(os.path.join(d, 'metrics.json'))]
  for d in unfinished:  # e.g. the folds of a cross-validated seed still running
    print(f'{os.path.relpath(d, root)}: no metrics.json yet, left out', file=sys.stderr)
  seed_dirs = [d for d in seed_dirs if d not in unfinished]
  if not seed_dirs:
    raise SystemExit(f'no results in results/{experiment}/seed_*')
  rows, values, minutes, fold_values = [], [], [], []
  setting = predictions_file.common_threshold_setting(seed_dirs)  # the seeds must agree
  for d in seed_dirs:
    m, run = (rd.read_json(os.path.join(d, name)) for name in ('metrics.json', 'run.json'))
    try:
      test = m['splits']['test']
      values.append([test[k] for k in KEYS])
      cv = m.get('cross_validation')
      fold_values += [[f['test'][k] for k in KEYS] for f in m.get('folds', [])]
      label = f'seed {run["seed"]}' + (f', {cv["num_folds"]} folds' if cv else '')
    except (AttributeError, KeyError, TypeError) as e:
      raise ValueError(f'{d}: metrics.json or run.json is not that of an evaluated run '
                       f'(no {e})') from e
    minutes.append(run.get('train_seconds', float('nan')) / 60)
    rows.append(f'| {label} | ' + ' | '.join(f'{test[k]:.3f}' for k in KEYS) +
                f' | {minutes[-1]:.1f} |')
  v = np.array(values)
  mean, std = v.mean(axis=0), v.std(axis=0, ddof=1) if len(v) > 1 else np.zeros(len(KEYS))
  rows.append(f'| **mean +- sd ({len(v)} seeds)** | ' +
              ' | '.join(f'**{a:.3f} +- {s:.3f}**' for a, s in zip(mean, std)) +
              f' | {np.mean(minutes):.1f} |')
  if fold_values:
    f = np.array(fold_values)
    rows.append(f'| single fold models ({len(f)}, each at its own fold\'s threshold) | ' +
                ' | '.join(f'{a:.3f} +- {s:.3f}'
                           for a, s in zip(f.mean(axis=0), f.std(axis=0, ddof=1))) + ' | |')
  ens, threshold = ensemble(seed_dirs, *setting)
  score = 'mean score' if fold_values else 'mean P(RDR)'
  rows.append(f'| ensemble of the {len(v)} seeds ({score}, threshold {threshold:.2f}) | ' +
              ' | '.join(f'{ens[k]:.3f}' for k in KEYS) + ' | |')
  head = '| run | ' + ' | '.join(HEADER) + ' | training (min) |\n|---|' + '---|' * (len(KEYS) + 1)
  return head + '\n' + '\n'.join(rows) + '\n'


def _replace_block(readme: str, tag: str, content: str) -> str:
  """README with the block between `tag`'s markers replaced; unchanged if it has none."""
  start, end = f'<!-- {tag}:start -->', f'<!-- {tag}:end -->'
  pattern = re.compile(re.escape(start) + '.*?' + re.escape(end), re.S)
  if not pattern.search(readme):
    print(f'README.md has no {start} ... {end} block: not shown there', file=sys.stderr)
    return readme
  return pattern.sub(lambda _: f'{start}\n{content}{end}', readme)


def localisation_table(experiment: str, root: str = ROOT) -> str | None:
  path = os.path.join(root, 'results', experiment, 'localisation.json')
  if not os.path.isfile(path):
    return None
  from visualization import localisation  # pylint: disable=g-import-not-at-top
  data = rd.read_json(path)
  if not isinstance(data, dict) or 'summary' not in data:
    raise ValueError(f'{path} has no summary; write it again with visualization.localisation')
  return localisation.format_table(data['summary']) + '\n'


# Validation metrics shown for grids over seeds (the rest stay in the CSV).
# A grid of 5-grade models shows their referable-DR metrics (evaluate.py's referable_<metric>).
SEEDED_METRICS = ('roc_auc', 'balanced_accuracy', 'sensitivity', 'specificity',
                  'referable_roc_auc', 'referable_balanced_accuracy', 'referable_sensitivity',
                  'referable_specificity')


def _mean_sd(values: list[float]) -> str:
  sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
  return f'{np.mean(values):.3f} +- {sd:.3f}'


def tune_markdown(rows: list[dict[str, str]]) -> str:
  """Markdown of tune.py's results rows.

  Columns whose names hold a dot are the grid's gin parameters. When `train.seed` is one
  of them, completed trials are grouped by the other parameters (in the order of their
  values) and each validation metric is shown as mean +- sample sd over the seeds.
  """
  columns = list(rows[0])
  params = [c for c in columns if '.' in c]
  metrics = [c for c in columns if c.startswith('val_') and c[len('val_'):] in SEEDED_METRICS]
  if 'train.seed' not in params:
    keep = [c for c in columns if c != 'error']
    lines = ['| ' + ' | '.join(keep) + ' |', '|' + '---|' * len(keep)]
    lines += ['| ' + ' | '.join(row[k] for k in keep) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'
  others = [p for p in params if p != 'train.seed']
  groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
  for row in rows:
    if row['status'] == 'completed':
      groups.setdefault(tuple(row[p] for p in others), []).append(row)

  def order(key):
    return tuple(float(v) if re.fullmatch(r'-?[0-9.eE+-]+', v) else float('inf')
                 for v in key) + key
  head = others + ['seeds'] + [f'{m} (mean +- sd)' for m in metrics] + ['seconds (mean)']
  head = [h.rsplit('.', 1)[-1] for h in head]  # parameter names without their configurable
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for key in sorted(groups, key=order):
    trials = groups[key]
    cells = list(key) + [str(len(trials))]
    cells += [_mean_sd([float(t[m]) for t in trials]) for m in metrics]
    cells.append(f'{np.mean([float(t["seconds"]) for t in trials]):.0f}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def tune_tables(experiment: str, root: str = ROOT) -> list[tuple[str, str]]:
  """(grid, markdown) of each results/<experiment>/tune_<grid>.csv (tune.py's results.csv)."""
  tables = []
  for path in sorted(glob.glob(os.path.join(root, 'results', experiment, 'tune_*.csv'))):
    with open(path) as f:
      rows = list(csv.DictReader(f))
    if rows:
      tables.append((os.path.basename(path)[len('tune_'):-len('.csv')], tune_markdown(rows)))
  return tables


def experiments(root: str = ROOT) -> list[str]:
  """Names of the folders of results/ that hold finished seed_* results."""
  return sorted({os.path.basename(os.path.dirname(os.path.dirname(m)))
                 for m in glob.glob(os.path.join(root, 'results', '*', 'seed_*', 'metrics.json'))})


def update_readme(readme: str, experiment: str, root: str = ROOT,
                  write: bool = True) -> tuple[str, bool]:
  """README with every block of `experiment` regenerated, and whether its table.md is current.

  With write=True, results/<experiment>/table.md is (re)written; with write=False nothing
  is written.
  """
  table = build_table(experiment, root=root)
  table_path = os.path.join(root, 'results', experiment, 'table.md')
  current = False
  if os.path.isfile(table_path):
    with open(table_path) as f:
      current = f.read() == table
  if write and not current:
    with open(table_path, 'w') as f:
      f.write(table)
  updated = _replace_block(readme, f'results:{experiment}', table)
  for grid, markdown in tune_tables(experiment, root=root):
    updated = _replace_block(updated, f'tune:{grid}', markdown)
  loc = localisation_table(experiment, root=root)
  if loc is not None:
    updated = _replace_block(updated, f'localisation:{experiment}', loc)
  print(f'{experiment}:\n{table}')
  return updated, current


def main(argv: list[str] | None = None, root: str = ROOT) -> int:
  """Regenerates the tables; with --check, writes nothing and returns 1 if any is stale."""
  argv = sys.argv[1:] if argv is None else argv
  unknown = [a for a in argv if a != '--check' and not a.startswith('--experiment=')]
  if unknown:  # a misspelt --check would otherwise rewrite the tables
    print(f'error: unknown argument {unknown[0]!r}; use [--experiment=NAME] [--check]',
          file=sys.stderr)
    return 1
  names = [a.split('=', 1)[1] for a in argv if a.startswith('--experiment=')]
  check = '--check' in argv
  readme_path = os.path.join(root, 'README.md')
  with open(readme_path) as f:
    readme = f.read()
  updated, stale = readme, []
  for experiment in names or experiments(root):
    try:
      updated, current = update_readme(updated, experiment, root=root, write=not check)
    except (OSError, ValueError) as e:  # e.g. seeds evaluated with different threshold rules
      print(f'error: results/{experiment}: {str(e).splitlines()[0]}', file=sys.stderr)
      return 1
    if not current:
      stale.append(os.path.join('results', experiment, 'table.md'))
  if updated != readme:
    stale.append('README.md')
  if check:
    if stale:
      print(f'out of date: {", ".join(stale)} (run python results/make_table.py)',
            file=sys.stderr)
      return 1
    print('up to date: README.md and every results/<experiment>/table.md')
    return 0
  if updated != readme:
    with open(readme_path, 'w') as f:
      f.write(updated)
  return 0


if __name__ == '__main__':
  sys.exit(main())
