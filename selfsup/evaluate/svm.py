"""TS2Vec's classification protocol: an RBF-kernel SVM on frozen series features.

Yue et al. 2022 (arXiv:2106.10466), section 4.1 and its ``fit_svm``: ``SVC(kernel="rbf",
gamma="scale")`` with C picked by 5-fold cross-validation on the training split from
{1e-4, ..., 1e4, inf}; when the split is too small to cross-validate (fewer than 5 samples in
some class, or fewer than 50 in all) C is infinite (a hard margin). Features are used as
they are, unscaled, as in the paper.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, math.inf)
"""The paper's grid of SVM penalties."""
MAX_TRAIN = 10000
"""Cross-validation runs on a stratified sample of at most this many (the paper's cap)."""


def svm_accuracy(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0
) -> dict[str, float | str]:
    """Test accuracy (a fraction, as the probes give it) of the RBF SVM and the C it chose
    (``"inf"`` for a hard margin, which JSON cannot write as a number)."""
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.svm import SVC

    x, y = train_x.double().numpy(), train_y.numpy()
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if counts.min() < 5 or len(y) < 50:
        svm = SVC(C=math.inf, gamma="scale").fit(x, y)
        chosen = math.inf
    else:
        if len(y) > MAX_TRAIN:
            x, _, y, _ = train_test_split(x, y, train_size=MAX_TRAIN, stratify=y, random_state=seed)
        search = GridSearchCV(SVC(gamma="scale"), {"C": list(C_GRID)}, cv=5, n_jobs=1)
        svm = search.fit(x, y).best_estimator_
        chosen = float(search.best_params_["C"])
    accuracy = float((svm.predict(test_x.double().numpy()) == test_y.numpy()).mean())
    return {"accuracy": accuracy, "C": chosen if math.isfinite(chosen) else "inf"}
