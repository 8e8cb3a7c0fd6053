"""Keras metrics for sparse labels and softmax outputs, logged every epoch.

Balanced accuracy, sensitivity and specificity are computed from one running confusion
matrix per metric, exactly as `sklearn.metrics` computes them at the end (argmax
decisions); AUC is Keras' own on the probability of the referable class.

Every metric also takes soft labels, class probabilities (batch, classes), which mixup
gives the training batches: they count as their most probable class (a tie as the lower
class).
"""

from __future__ import annotations

import keras
from keras import ops


def is_soft(y_true, num_classes: int) -> bool:
  """Whether labels are class probabilities (batch, classes) rather than class indices."""
  return len(y_true.shape) == 2 and y_true.shape[-1] == num_classes and num_classes > 1


def hard_labels(y_true, num_classes: int):
  """Class indices (batch,) from sparse labels or from class probabilities (batch, classes).

  A probability vector counts as its most probable class; a tie as the lower class.
  """
  if is_soft(y_true, num_classes):
    return ops.cast(ops.argmax(y_true, axis=-1), 'int32')
  return ops.cast(ops.reshape(y_true, (-1,)), 'int32')


class SoftSparseAccuracy(keras.metrics.SparseCategoricalAccuracy):
  """Keras' sparse categorical accuracy, also for class probabilities as labels."""

  def update_state(self, y_true, y_pred, sample_weight=None):
    super().update_state(hard_labels(y_true, y_pred.shape[-1]), y_pred, sample_weight)


class _ConfusionMetric(keras.metrics.Metric):
  """Accumulates a confusion matrix of argmax predictions against sparse or soft labels."""

  def __init__(self, num_classes: int = 2, name: str | None = None, **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes = num_classes
    self.matrix = self.add_variable(shape=(num_classes, num_classes), initializer='zeros',
                                    name='confusion_matrix', dtype='float32')

  def update_state(self, y_true, y_pred, sample_weight=None):
    labels = hard_labels(y_true, self.num_classes)
    preds = ops.cast(ops.argmax(ops.reshape(y_pred, (-1, self.num_classes)), axis=-1), 'int32')
    onehot_true = ops.one_hot(labels, self.num_classes)
    onehot_pred = ops.one_hot(preds, self.num_classes)
    if sample_weight is not None:
      onehot_true = onehot_true * ops.reshape(ops.cast(sample_weight, 'float32'), (-1, 1))
    self.matrix.assign_add(ops.matmul(ops.transpose(onehot_true), onehot_pred))

  def _recalls(self):
    support = ops.sum(self.matrix, axis=1)
    diag = ops.diagonal(self.matrix)
    return diag / ops.maximum(support, 1.0), support

  def reset_state(self):
    self.matrix.assign(ops.zeros((self.num_classes, self.num_classes)))

  def get_config(self):
    return {**super().get_config(), 'num_classes': self.num_classes}


class BalancedAccuracy(_ConfusionMetric):
  """Mean recall over the classes present in the labels."""

  def __init__(self, num_classes: int = 2, name: str = 'balanced_accuracy', **kwargs):
    super().__init__(num_classes=num_classes, name=name, **kwargs)

  def result(self):
    recalls, support = self._recalls()
    present = ops.cast(support > 0, 'float32')
    return ops.sum(recalls * present) / ops.maximum(ops.sum(present), 1.0)


class ClassRecall(_ConfusionMetric):
  """Recall of one class: sensitivity for class 1 (RDR), specificity for class 0."""

  def __init__(self, class_id: int = 1, num_classes: int = 2, name: str | None = None,
               **kwargs):
    super().__init__(num_classes=num_classes, name=name or f'recall_{class_id}', **kwargs)
    self.class_id = class_id

  def result(self):
    recalls, _ = self._recalls()
    return recalls[self.class_id]

  def get_config(self):
    return {**super().get_config(), 'class_id': self.class_id}


class PositiveClassAUC(keras.metrics.AUC):
  """ROC AUC of the probability of class 1 against sparse (or soft) binary labels.

  With `first_positive` = k, classes k and above are the positives: the score is the summed
  probability of those classes (for a 5-grade model, k = 2 gives the referable-DR AUC).
  """

  def __init__(self, name: str = 'auc', first_positive: int = 1, **kwargs):
    super().__init__(name=name, **kwargs)
    self.first_positive = first_positive

  def update_state(self, y_true, y_pred, sample_weight=None):
    labels = ops.cast(hard_labels(y_true, y_pred.shape[-1]) >= self.first_positive, 'float32')
    score = ops.sum(y_pred[:, self.first_positive:], axis=-1)
    super().update_state(labels, score, sample_weight=sample_weight)

  def get_config(self):
    return {**super().get_config(), 'first_positive': self.first_positive}


def training_metrics(num_classes: int) -> list[keras.metrics.Metric]:
  """The metrics compiled into every model."""
  metrics = [SoftSparseAccuracy(name='accuracy'),
             BalancedAccuracy(num_classes)]
  if num_classes == 2:
    metrics += [ClassRecall(1, 2, name='sensitivity'), ClassRecall(0, 2, name='specificity'),
                PositiveClassAUC()]
  elif num_classes == 5:  # grades 0-4: also the referable (grades 2-4) AUC
    metrics.append(PositiveClassAUC('referable_auc', first_positive=2))
  return metrics


CUSTOM_OBJECTS = {'SoftSparseAccuracy': SoftSparseAccuracy, 'BalancedAccuracy': BalancedAccuracy,
                  'ClassRecall': ClassRecall, 'PositiveClassAUC': PositiveClassAUC}
