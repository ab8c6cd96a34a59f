"""Retraining rules (precision, new confirmed cases, drift) evaluated on a schedule, the dataset
export of each request, and detector-parameter candidates tuned on such a dataset."""

from cloud.regression.evidence import Labelled, labelled
from cloud.retrain.config import (
    DriftRule,
    NewCasesRule,
    PrecisionRule,
    RetrainConfig,
    Rule,
    load_retrain_config,
    parse_config,
)
from cloud.retrain.dataset import export_dataset, read_dataset
from cloud.retrain.detector import DetectorTuning, train_detector_candidate, tune_detector
from cloud.retrain.drift import ks_pvalue, psi
from cloud.retrain.errors import DatasetError, RetrainError
from cloud.retrain.rules import (
    RetrainRequest,
    current_model_version,
    evaluate_retrain_rules,
    evaluations,
    list_requests,
)

__all__ = [
    "DatasetError", "DetectorTuning", "DriftRule", "Labelled", "NewCasesRule", "PrecisionRule",
    "RetrainConfig", "RetrainError", "RetrainRequest", "Rule", "current_model_version",
    "evaluate_retrain_rules", "evaluations",
    "export_dataset", "ks_pvalue", "labelled", "list_requests", "load_retrain_config",
    "parse_config", "psi", "read_dataset", "train_detector_candidate", "tune_detector",
]
