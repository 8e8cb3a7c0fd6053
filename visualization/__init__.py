"""Explanations of the classifier: attribution heatmaps, overlays, galleries, scores.

  from visualization.grad_cam import grad_cam
  heatmaps = grad_cam(model, images)                                 # (batch, H, W)
  heatmaps = visualization.attribute('grad_cam', model, images)      # the same
  heatmaps = visualization.attribute('integrated_gradients', model, images, steps=16)
  visualization.available_methods()  # ['grad_cam', 'guided_grad_cam', ...]

Importing this package imports every attribution module, so their methods are registered.
"""

from visualization import attributions  # pylint: disable=unused-import  (registers methods)
from visualization.registry import attribute
from visualization.registry import available as available_methods
from visualization.registry import register

__all__ = ['attribute', 'available_methods', 'register']
