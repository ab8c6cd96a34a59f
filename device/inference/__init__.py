"""On-device activity inference: TFLite classifier, signed model bundles and model slots.

- ``classifier``: ``ActivityClassifier(model_path).predict(window, rate_hz) -> Prediction``,
  ``factory_classifier()`` for the shipped model, ``CLASSES``.
- ``runtime``: the single TFLite import (ai_edge_litert, else tflite_runtime) and
  ``ModelRuntimeMissing``.
- ``bundle``: verify + atomic install of signed bundles (format in ``shared.bundles``).
- ``slots``: ``ModelSlots`` (active / shadow / previous, promote, rollback) and ``ShadowStats``.
- ``datasets``: WISDM and simulated-collar windows for training and the benchmark (dev use).
"""

from device.inference.classifier import (
    CLASSES,
    ActivityClassifier,
    InvalidWindow,
    ModelIntegrityError,
    Prediction,
    ScoreModel,
    factory_classifier,
)
from device.inference.runtime import ModelRuntimeMissing

__all__ = ["CLASSES", "ActivityClassifier", "InvalidWindow", "ModelIntegrityError",
           "ModelRuntimeMissing", "Prediction", "ScoreModel", "factory_classifier"]
