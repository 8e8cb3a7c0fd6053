"""Combines the fold runs of a k-fold cross-validation into one result.

    python -m evaluation.cross_validation --out=DIR FOLD_RUN_DIR...
    python -m evaluation.cross_validation --oof_only FOLD_RUN_DIR...

Each fold run was trained with `tfrecords.build_tfrecords.fold` set and evaluated by
evaluate.py, so its validation predictions are its held-out fold. Together the folds give
out-of-fold (OOF) predictions for every training photograph, each from the one model that
did not train on it.

Models trained from scratch on a few hundred photographs differ in where they put their
operating point (single-split IDRiD runs chose thresholds from 0.02 to 0.81), so the fold
models' scores are put on one scale before they are pooled: each model's logit of P(RDR)
is standardised by the mean and standard deviation of its logits on its own held-out fold
(labels unused), and the score reported as P(RDR) is the sigmoid of that standardised
logit (`--normalise=none` pools the raw P(RDR) instead). The combined result:
- threshold: chosen on the pooled OOF scores with the folds' threshold rule, so on all
  training photographs instead of one validation fold;
- val: OOF metrics at that threshold (in-sample for the threshold), plus `held_out`: each
  fold scored at the threshold chosen on the other folds' OOF scores, pooled, with the
  fold's own scores standardised by the statistics of the other half of the fold
  (cross-fitted), as test photographs are by statistics of photographs other than
  themselves; an estimate, on training data only, of how the operating point carries over.
  OOF figures still lean optimistic: each fold also chose its model's checkpoint (best
  validation AUC), so they are scored on photographs that helped select the model;
- test: the fold models as an ensemble (mean score per photograph) at that threshold;
- folds: each fold model alone on test at its own fold's threshold (the single-split
  protocol, once per fold).
DIR gets metrics.json, predictions_val.csv (OOF), predictions_test.csv (ensemble) and
run.json (seed; train_seconds summed over the folds), the files results/make_table.py reads.
`--oof_only` reads and prints the out-of-fold figures alone and writes nothing: a change
(test-time augmentation, another normalisation) can be judged on training photographs
before any test score of it is computed.
The fold runs must be folds 0..K-1 of one partition (same num_folds, split seed and seed,
read from their operative_config.gin). Files are written under temporary names and
renamed at the end, metrics.json last, so a failure leaves no new result.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

from absl import app
from absl import flags
import numpy as np

from evaluation import metrics as metrics_lib
from evaluation import predictions as predictions_file
from input_pipeline import idrid
from training import run_dir as rd
from utils import entry

CLASS_NAMES = list(idrid.CLASS_NAMES['binary'])
# The fold parameters as the operative config of a fold run records them.
_FOLD_PARAM = re.compile(r'^(?:\w+\.)*build_tfrecords\.(fold|num_folds|split_seed)\s*=\s*(\S+)\s*$',
                         re.M)

NORMALISATIONS = ('logit_z', 'none')
flags.DEFINE_string('out', None, 'Folder for the combined result.')
flags.DEFINE_bool('oof_only', False, 'Print the out-of-fold figures only; read no test '
                  'predictions and write nothing.')
flags.DEFINE_enum('normalise', 'logit_z', NORMALISATIONS,
                  "Scale of each fold model's scores before pooling (module docstring).")
FLAGS = flags.FLAGS


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found; train and evaluate the fold first')
  return rd.read_json(path)  # ValueError naming the file if it is not JSON


def fold_params(fold_dir: str) -> dict[str, str]:
  """{'fold', 'num_folds', 'split_seed'} of a fold run, from its operative config."""
  path = os.path.join(fold_dir, rd.OPERATIVE_CONFIG)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found; is {fold_dir} a trained run?')
  with open(path) as f:
    params = dict(_FOLD_PARAM.findall(f.read()))
  if params.get('fold', 'None') == 'None':
    raise ValueError(f'{fold_dir} was not trained on a fold (tfrecords.build_tfrecords.fold '
                     'is not set in its operative_config.gin)')
  return params


def _order_as_partition(fold_dirs: Sequence[str], runs: Sequence[dict[str, Any]]) -> list[int]:
  """Indices of the fold runs in fold order; raises unless they are folds 0..K-1 of one
  partition (same num_folds, split seed and seed)."""
  params = [fold_params(d) for d in fold_dirs]
  for key, values in (('num_folds', [p.get('num_folds') for p in params]),
                      ('split_seed', [p.get('split_seed') for p in params]),
                      ('seed', [str(r.get('seed')) for r in runs])):
    differing = [i for i, v in enumerate(values) if v != values[0]]
    if differing:
      i = differing[0]
      raise ValueError(f'the fold runs differ in {key}: {fold_dirs[0]} has {values[0]}, '
                       f'{fold_dirs[i]} has {values[i]}')
  k = int(params[0]['num_folds'])
  folds = [int(p['fold']) for p in params]
  if sorted(folds) != list(range(k)):
    missing = sorted(set(range(k)) - set(folds))
    raise ValueError(f'a {k}-fold partition needs folds 0..{k - 1} once each, got folds '
                     f'{sorted(folds)}' + (f' (missing {missing})' if missing else ''))
  return sorted(range(len(folds)), key=lambda i: folds[i])


def _logit(p: np.ndarray) -> np.ndarray:
  p = np.clip(p, 1e-6, 1 - 1e-6)  # the predictions files keep six decimals
  return np.log(p) - np.log1p(-p)


def normaliser(held_out_probs: np.ndarray, how: str):
  """Function putting one model's P(RDR) on the common scale, fixed by its held-out fold."""
  if how == 'none':
    return lambda p: np.asarray(p, dtype=float)
  if how != 'logit_z':
    raise ValueError(f'unknown normalisation {how!r}; choose one of {NORMALISATIONS}')
  z = _logit(held_out_probs)
  mean, sd = float(np.mean(z)), float(np.std(z))
  sd = sd if sd > 0 else 1.0
  return lambda p: 1 / (1 + np.exp(-(_logit(np.asarray(p, dtype=float)) - mean) / sd))


def combine(fold_dirs: Sequence[str], normalise: str = 'logit_z', oof_only: bool = False
            ) -> tuple[dict[str, Any], dict[str, Any], dict]:
  """(metrics, run info, {split: (names, labels, score)}) of the fold runs together.

  With `oof_only`, test predictions are not read and the result has no test split.
  """
  if len(fold_dirs) < 2:
    raise ValueError(f'cross-validation needs at least 2 fold runs, got {len(fold_dirs)}')
  runs = [_read_json(os.path.join(d, rd.RUN_INFO)) for d in fold_dirs]
  order = _order_as_partition(fold_dirs, runs)
  fold_dirs, runs = [fold_dirs[i] for i in order], [runs[i] for i in order]
  metrics = [_read_json(os.path.join(d, rd.METRICS)) for d in fold_dirs]
  rule, min_sensitivity = predictions_file.agreed_threshold_setting(
      [predictions_file.threshold_setting(m) for m in metrics], 'fold runs')
  if rule == 'argmax' and normalise != 'none':
    raise ValueError(f'the fold runs use the argmax rule (P(RDR) >= 0.5), which scores '
                     f'normalised with {normalise!r} do not keep; pass --normalise=none (to '
                     'results/run_seeds.py too)')
  raw_val = [predictions_file.read_referable(d, 'val') for d in fold_dirs]
  scales = [normaliser(probs, normalise) for _, _, probs in raw_val]
  val = [(n, l, f(p)) for f, (n, l, p) in zip(scales, raw_val)]

  owner: dict[str, str] = {}
  for d, (names, _, _) in zip(fold_dirs, val):
    for name in names:
      if name in owner:
        raise ValueError(f'photograph {name} is held out by both {owner[name]} and {d}: '
                         'the runs are not folds of one partition')
      owner[name] = d

  oof_labels = np.concatenate([labels for _, labels, _ in val])
  oof_probs = np.concatenate([probs for _, _, probs in val])
  threshold = metrics_lib.choose_threshold(oof_labels, oof_probs, rule, min_sensitivity)
  val_metrics = metrics_lib.binary_metrics(oof_labels, oof_probs, threshold)
  val_metrics['held_out'] = held_out(raw_val, [p for _, _, p in val], rule, normalise,
                                     min_sensitivity)
  if normalise != 'none':  # for comparison: the same without normalisation
    raw = [probs for _, _, probs in raw_val]
    val_metrics['without_normalisation'] = dict(
        roc_auc=metrics_lib.binary_metrics(oof_labels, np.concatenate(raw))['roc_auc'],
        held_out=held_out(raw_val, raw, rule, 'none', min_sensitivity))

  results = dict(
      cross_validation=dict(num_folds=len(fold_dirs), normalise=normalise,
                            fold_dirs=[os.path.abspath(d) for d in fold_dirs]),
      class_names=CLASS_NAMES, threshold=threshold, threshold_rule=rule,
      **({'min_sensitivity': min_sensitivity} if rule == 'sensitivity' else {}),
      splits=dict(val=val_metrics),
      folds=[dict(run_dir=m.get('run_dir'), checkpoint_epoch=m.get('checkpoint_epoch'),
                  threshold=m.get('threshold'), val_roc_auc=_val_auc(m))
             for m in metrics])
  run = dict(seed=runs[0].get('seed'),
             train_seconds=float(sum(r.get('train_seconds', float('nan')) for r in runs)),
             folds=[os.path.abspath(d) for d in fold_dirs])
  preds = dict(val=([n for names, _, _ in val for n in names], oof_labels, oof_probs))
  if oof_only:
    return results, run, preds

  test = [predictions_file.read_referable(d, 'test') for d in fold_dirs]
  test = [(n, l, f(p)) for f, (n, l, p) in zip(scales, test)]
  test_names, test_labels, test_probs = predictions_file.average_by_name(test, fold_dirs)
  results['splits']['test'] = metrics_lib.binary_metrics(test_labels, test_probs, threshold)
  for fold, m in zip(results['folds'], metrics):
    fold['test'] = _referable_test(m)
  preds['test'] = (test_names, test_labels, test_probs)
  return results, run, preds


def held_out(raw_val: Sequence[tuple[Any, np.ndarray, np.ndarray]],
             scaled: Sequence[np.ndarray], rule: str, normalise: str,
             min_sensitivity: float = 0.9) -> dict[str, Any]:
  """Metrics of each fold at the threshold chosen on the other folds, pooled.

  The threshold is chosen on the other folds' `scaled` scores (as in the combined
  result); the fold's own raw scores are cross-fitted (each half of the fold standardised
  by the other half), so no photograph is scaled by statistics it contributed to.
  """
  labels, decisions = [], []
  for k, (_, fold_labels, probs) in enumerate(raw_val):
    others = [j for j in range(len(raw_val)) if j != k]
    t = metrics_lib.choose_threshold(np.concatenate([raw_val[j][1] for j in others]),
                                     np.concatenate([scaled[j] for j in others]), rule,
                                     min_sensitivity)
    order = np.random.default_rng(k).permutation(len(probs))
    halves = (order[:len(order) // 2], order[len(order) // 2:])
    own = np.empty(len(probs))
    for half, rest in (halves, halves[::-1]):
      own[half] = normaliser(probs[rest], normalise)(probs[half])
    labels.append(fold_labels)
    decisions.append((own >= t).astype(float))
  m = metrics_lib.binary_metrics(np.concatenate(labels), np.concatenate(decisions), 0.5)
  del m['roc_auc'], m['threshold']  # scored on decisions at per-fold thresholds
  return m


def _val_auc(m: dict[str, Any]) -> float | None:
  val = m.get('splits', {}).get('val', {})
  return val.get('roc_auc', val.get('referable_roc_auc'))


def _referable_test(m: dict[str, Any]) -> dict[str, float]:
  """The referable-DR test metrics of one fold's metrics.json (binary or 5-grade run)."""
  test = m.get('splits', {}).get('test')
  if not test:
    raise ValueError(f'{m.get("run_dir")}: metrics.json has no test split; run evaluate.py')
  prefix = 'referable_' if 'referable_roc_auc' in test else ''
  return {k: test[prefix + k] for k in ('accuracy', 'balanced_accuracy', 'sensitivity',
                                        'specificity', 'f1', 'roc_auc')}


def write(out_dir: str, results: dict[str, Any], run: dict[str, Any], preds: dict) -> None:
  """Writes the predictions files, run.json and metrics.json (last); all or none."""
  os.makedirs(out_dir, exist_ok=True)
  finals = [predictions_file.path(out_dir, split) for split in preds]
  finals += [os.path.join(out_dir, rd.RUN_INFO), os.path.join(out_dir, rd.METRICS)]
  try:
    for final, (names, labels, probs) in zip(finals, preds.values()):
      predictions_file.write(final + '.tmp', names, labels,
                             np.stack([1 - probs, probs], axis=1), CLASS_NAMES)
    for final, content in zip(finals[-2:], (run, results)):
      with open(final + '.tmp', 'w') as f:
        json.dump(content, f, indent=2)
  except BaseException:
    for final in finals:
      if os.path.exists(final + '.tmp'):
        os.remove(final + '.tmp')
    raise
  if os.path.exists(finals[-1]):
    os.remove(finals[-1])  # no old metrics.json beside new predictions, even briefly
  for final in finals:
    os.replace(final + '.tmp', final)


def summary(results: dict[str, Any]) -> str:
  """A few lines for the log."""
  val, test = results['splits']['val'], results['splits'].get('test')
  folds = results['folds']
  cv = results['cross_validation']
  lines = [f'{len(folds)} folds, scores normalised: {cv["normalise"]}; threshold '
           f'{results["threshold"]:.4f} ({results["threshold_rule"]} rule on {val["n"]} '
           'out-of-fold photographs)',
           f'out-of-fold: AUC {val["roc_auc"]:.3f}, balanced accuracy '
           f'{val["balanced_accuracy"]:.3f} (threshold of the other folds: '
           f'{val["held_out"]["balanced_accuracy"]:.3f})']
  if test:
    lines.append(f'test, fold ensemble: balanced accuracy {test["balanced_accuracy"]:.3f}, '
                 f'sensitivity {test["sensitivity"]:.3f}, specificity '
                 f'{test["specificity"]:.3f}, AUC {test["roc_auc"]:.3f}')
  raw = val.get('without_normalisation')
  if raw:
    lines.insert(2, f'  without normalisation: AUC {raw["roc_auc"]:.3f}, balanced accuracy at '
                    f'the threshold of the other folds {raw["held_out"]["balanced_accuracy"]:.3f}')
  for k, f in enumerate(folds):  # in fold order
    line = f'  fold {k}: val AUC {f["val_roc_auc"]:.3f}, own threshold {f["threshold"]:.3f}'
    if 'test' in f:
      line += (f'; test balanced accuracy {f["test"]["balanced_accuracy"]:.3f}, '
               f'AUC {f["test"]["roc_auc"]:.3f}')
    lines.append(line)
  return '\n'.join(lines)


def main(argv):
  fold_dirs = argv[1:]
  if not fold_dirs or not (FLAGS.out or FLAGS.oof_only):
    raise app.UsageError('usage: python -m evaluation.cross_validation --out=DIR '
                         '[--oof_only] FOLD_RUN_DIR...')
  if FLAGS.out and FLAGS.oof_only:
    raise app.UsageError('--oof_only writes nothing; leave out --out')
  if FLAGS.out and os.path.abspath(FLAGS.out) in {os.path.abspath(d) for d in fold_dirs}:
    raise app.UsageError(f'--out={FLAGS.out} is one of the fold runs: its predictions would '
                         'be overwritten; choose another folder')
  results, run, preds = combine(fold_dirs, FLAGS.normalise, FLAGS.oof_only)
  if not FLAGS.oof_only:
    write(FLAGS.out, results, run, preds)
  print(summary(results))
  if not FLAGS.oof_only:
    print(f'wrote {os.path.join(FLAGS.out, "metrics.json")}')


if __name__ == '__main__':
  entry.run(main)
