"""Classification metrics in numpy: confusion matrix, per-class precision/recall/F1, calibration.

Plain arrays in, plain arrays out, so they are tested against brute-force loops and used by the
report without a model in sight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """Counts of (true, predicted) pairs.

    Args:
        y_true: (N,) integer labels in ``0..n_classes-1``.
        y_pred: (N,) integer predictions, same range.
        n_classes: the matrix's side.

    Returns:
        (n_classes, n_classes) int64: row = true class, column = predicted class. It sums to N
        and its trace is the number of correct predictions.
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    for name, y in (("labels", y_true), ("predictions", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} must lie in 0..{n_classes - 1}")
    # One bincount over the flattened (row, column) index: O(N), no Python loop.
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


@dataclass(frozen=True)
class ClassScores:
    """Per-class scores from a confusion matrix; each field is (K,) float64 except support."""

    precision: np.ndarray  # of the images predicted as k, the share that are k (0 if none)
    recall: np.ndarray  # of the images that are k, the share predicted as k (0 if none)
    f1: np.ndarray  # harmonic mean of the two (0 where both are 0)
    support: np.ndarray  # (K,) int64: images that are k

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())


def class_scores(cm: np.ndarray) -> ClassScores:
    """Precision, recall, F1 and support per class, from :func:`confusion_matrix`.

    A class never predicted (or never present) scores 0 rather than NaN, as scikit-learn's
    ``zero_division=0`` does, so tables and means stay numbers.
    """
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return ClassScores(precision, recall, f1, support)


@dataclass(frozen=True)
class Calibration:
    """A reliability diagram's numbers: equal-width confidence bins over [0, 1]."""

    edges: np.ndarray  # (B+1,) bin edges; bin b holds confidences in (edges[b], edges[b+1]]
    confidence: np.ndarray  # (B,) mean top-class probability per bin (NaN if empty)
    accuracy: np.ndarray  # (B,) share of correct predictions per bin (NaN if empty)
    counts: np.ndarray  # (B,) int64 predictions per bin
    ece: float  # expected calibration error: sum_b n_b/N * |accuracy_b - confidence_b|


def calibration(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> Calibration:
    """Bin predictions by confidence (the top probability) and compare with accuracy.

    The expected calibration error (ECE) is the count-weighted mean gap between a bin's accuracy
    and its mean confidence (Guo et al. 2017, "On Calibration of Modern Neural Networks", with
    their 15 equal-width bins). 0 is perfect; a model that says 99 % and is right 97 % of the
    time has ECE 0.02.

    Args:
        probabilities: (N, K) rows summing to 1 (softmax output).
        labels: (N,) true classes.
        n_bins: equal-width bins over [0, 1].
    """
    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if p.ndim != 2 or len(p) != len(labels):
        raise ValueError(f"probabilities must be (N, K) with N = {len(labels)}, got {p.shape}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins (edges[b], edges[b+1]]; a confidence of exactly 0 joins the first bin.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    correct_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sum / counts, np.nan)
        mean_acc = np.where(counts > 0, correct_sum / counts, np.nan)
    ece = float(np.abs(correct_sum - conf_sum).sum() / max(len(labels), 1))
    return Calibration(edges, mean_conf, mean_acc, counts, ece)
