"""Evaluation as pure functions over frozen features: kNN, linear probe, collapse
metrics, the label-efficiency protocol and the HTML report; fine-tuning, the TF-IDF
baseline, perplexity and sampling for masked and language models."""

from selfsup.evaluate.collapse import effective_rank, embedding_std
from selfsup.evaluate.features import map_batches
from selfsup.evaluate.finetune import (
    Finetune,
    FinetuneConfig,
    finetune,
    finetune_param_groups,
    image_finetune_augment,
)
from selfsup.evaluate.generate import generate
from selfsup.evaluate.knn import knn_accuracy, knn_predict
from selfsup.evaluate.linear import fit_linear_classifier, linear_probe
from selfsup.evaluate.protocol import (
    FeatureSet,
    class_balanced_subset,
    evaluate_features,
    read_eval_json,
    rows_table,
    write_eval_json,
)
from selfsup.evaluate.report import read_metrics_csv, write_report
from selfsup.evaluate.text import (
    perplexity,
    tfidf_features,
    tfidf_label_efficiency,
    tfidf_logistic_regression,
)

__all__ = [
    "FeatureSet",
    "Finetune",
    "FinetuneConfig",
    "class_balanced_subset",
    "effective_rank",
    "embedding_std",
    "evaluate_features",
    "finetune",
    "finetune_param_groups",
    "generate",
    "image_finetune_augment",
    "fit_linear_classifier",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "map_batches",
    "perplexity",
    "read_eval_json",
    "read_metrics_csv",
    "rows_table",
    "tfidf_features",
    "tfidf_label_efficiency",
    "tfidf_logistic_regression",
    "write_eval_json",
    "write_report",
]
