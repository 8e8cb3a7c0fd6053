"""Classification metrics from sklearn.metrics, and the decision-threshold rules."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as sk

from utils import checks

THRESHOLD_RULES = ('argmax', 'youden', 'sensitivity')
# Names of the scalar metrics metrics.json can hold: of the binary task, of the five
# grades, and of the referable task of a five-grade model (which of them a run has depends
# on its labels). A grid search ranks and logs only these names.
BINARY_METRICS = ('accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'precision',
                  'f1', 'roc_auc')
GRADE_METRICS = ('accuracy', 'balanced_accuracy', 'quadratic_kappa', 'f1_macro')
SCALAR_METRICS = tuple(dict.fromkeys(BINARY_METRICS + GRADE_METRICS + tuple(
    f'referable_{k}' for k in BINARY_METRICS)))
# The binary metrics the results tables report, in column order.
REPORTED = ('accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'f1', 'roc_auc')


def check_threshold_rule(rule: str, min_sensitivity: float = 0.9,
                         prefix: str = 'evaluate.') -> None:
  """Checks a threshold rule and its target before any work.

  Raises:
    ValueError: For an unknown rule, or a 'sensitivity' target outside (0, 1]; the
      message names the gin parameter (`prefix` + name).
  """
  if rule not in THRESHOLD_RULES:
    raise ValueError(f'unknown {prefix}threshold_rule {rule!r}; choose one of {THRESHOLD_RULES}')
  if rule == 'sensitivity':
    checks.check_number(f'{prefix}min_sensitivity', min_sensitivity, low=0, high=1,
                        low_open=True)


def choose_threshold(labels: np.ndarray, probs: np.ndarray, rule: str = 'youden',
                     min_sensitivity: float = 0.9) -> float:
  """Decision threshold on P(RDR), chosen on validation data.

  Args:
    labels: Binary labels (1 = RDR).
    probs: P(RDR) per photograph.
    rule: 'argmax' (0.5, the softmax decision), 'youden' (maximises sensitivity +
      specificity, i.e. balanced accuracy), or 'sensitivity' (the highest threshold
      reaching `min_sensitivity`).
    min_sensitivity: Target of the 'sensitivity' rule, a fraction in (0, 1].

  Returns:
    A threshold t: photographs with P(RDR) >= t are called RDR.
  """
  check_threshold_rule(rule, min_sensitivity, prefix='')
  if rule == 'argmax':
    return 0.5
  if len(np.unique(labels)) < 2:
    raise ValueError(f'threshold rule {rule!r} needs both classes in the validation split')
  # Every distinct score is a candidate: the default thinning drops the points of straight
  # stretches of the curve, which can hold the highest threshold reaching a sensitivity
  # target and the middle of a range of tied Youden indices.
  fpr, tpr, thresholds = sk.roc_curve(labels, probs, drop_intermediate=False)
  finite = np.isfinite(thresholds)
  fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
  if rule == 'youden':
    # Youden's J = tpr - fpr, compared in whole counts (J * positives * negatives), so that
    # ties are ties: 2/3 - 1/3 and 1 - 2/3 differ in floating point.
    positives = int(np.sum(np.asarray(labels) == 1))
    negatives = len(labels) - positives
    j = np.rint(tpr * positives) * negatives - np.rint(fpr * negatives) * positives
    best = np.flatnonzero(j == np.max(j))
    # Among ties, the middle of the tied range is the least fragile choice.
    return float(thresholds[best[len(best) // 2]])
  reaching = np.flatnonzero(tpr >= min_sensitivity)
  return float(thresholds[reaching[0]])


def referable(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(labels, P(RDR)) of the referable task from a binary or a 5-grade classifier.

  Binary: the labels and P(class 1) as they are. Five grades: RDR is grades 2-4, so the
  labels are grade >= 2 and P(RDR) = P(grade 2) + P(grade 3) + P(grade 4).
  """
  labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
  if probs.shape[1] == 2:
    return labels, probs[:, 1]
  if probs.shape[1] == 5:
    return (labels >= 2).astype(int), probs[:, 2:].sum(axis=1)
  raise ValueError(f'no referable task for {probs.shape[1]} classes (2 or 5 expected)')


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5
                   ) -> dict[str, Any]:
  """Metrics of the binary NRDR (0) / RDR (1) task at one threshold."""
  labels = np.asarray(labels).astype(int)
  probs = np.asarray(probs, dtype=float)
  preds = (probs >= threshold).astype(int)
  both = len(np.unique(labels)) == 2
  return dict(
      n=int(len(labels)), threshold=float(threshold),
      accuracy=float(sk.accuracy_score(labels, preds)),
      balanced_accuracy=float(sk.balanced_accuracy_score(labels, preds)),
      sensitivity=float(sk.recall_score(labels, preds, pos_label=1, zero_division=0)),
      specificity=float(sk.recall_score(labels, preds, pos_label=0, zero_division=0)),
      precision=float(sk.precision_score(labels, preds, pos_label=1, zero_division=0)),
      f1=float(sk.f1_score(labels, preds, pos_label=1, zero_division=0)),
      roc_auc=float(sk.roc_auc_score(labels, probs)) if both else float('nan'),
      confusion_matrix=sk.confusion_matrix(labels, preds, labels=[0, 1]).tolist())


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
  """Metrics of the 5-grade task (argmax decisions)."""
  labels = np.asarray(labels).astype(int)
  preds = np.argmax(probs, axis=1)
  k = probs.shape[1]
  return dict(
      n=int(len(labels)),
      accuracy=float(sk.accuracy_score(labels, preds)),
      balanced_accuracy=float(sk.balanced_accuracy_score(labels, preds)),
      quadratic_kappa=float(sk.cohen_kappa_score(labels, preds, weights='quadratic')),
      f1_macro=float(sk.f1_score(labels, preds, average='macro', zero_division=0)),
      confusion_matrix=sk.confusion_matrix(labels, preds, labels=list(range(k))).tolist())
