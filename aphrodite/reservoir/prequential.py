"""Prequential accuracy: score each prediction against the label that arrives after it.

A model trained online is judged on predictions it made *before* seeing each label (Dawid's
prequential principle), so the score is an honest out-of-sample estimate at every point in time,
without a held-out set. Kept over a sliding window so it follows drift.
"""

from __future__ import annotations

from collections import deque

import torch


class PrequentialAccuracy:
    """Sliding window of (prediction, label) pairs with skill, MSE and AUC.

    Parameters
    ----------
    window : int
        Most recent pairs kept.
    min_labels : int
        Pairs needed before :attr:`weight` may exceed 0; it ramps up linearly to this count.
    """

    def __init__(self, window: int = 500, min_labels: int = 50) -> None:
        if window < 2 or min_labels < 1:
            raise ValueError(f"need window >= 2 and min_labels >= 1, got {window}, {min_labels}")
        self.window, self.min_labels = window, min_labels
        self.pairs: deque[tuple[float, float]] = deque(maxlen=window)
        self.seen = 0

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """Record predictions made before ``labels`` were known (both (n,), values in [0, 1])."""
        self.pairs.extend(zip(predictions.tolist(), labels.tolist()))
        self.seen += len(labels)

    def _arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.tensor(list(self.pairs), dtype=torch.float64).reshape(-1, 2)
        return both[:, 0], both[:, 1]

    @property
    def mse(self) -> float:
        """Mean squared error of the window (nan when empty)."""
        pred, label = self._arrays()
        return float(((pred - label) ** 2).mean()) if len(label) else float("nan")

    @property
    def skill(self) -> float:
        """``1 - MSE / Var(label)`` over the window: 0 = no better than the window's mean label
        (a constant known only in hindsight), 1 = perfect; can be negative; nan if undefined."""
        pred, label = self._arrays()
        if len(label) < 2 or label.var() == 0:
            return float("nan")
        return float(1.0 - ((pred - label) ** 2).mean() / label.var(unbiased=False))

    @property
    def auc(self) -> float:
        """ROC AUC of the predictions for ``label >= 0.5`` (nan without both classes)."""
        pred, label = self._arrays()
        positive = label >= 0.5
        pos, neg = pred[positive], pred[~positive]
        if len(pos) == 0 or len(neg) == 0:
            return float("nan")
        # P(score of a positive > score of a negative), ties count half: O(window²), fine at 500
        greater = (pos[:, None] > neg[None, :]).double().mean()
        ties = (pos[:, None] == neg[None, :]).double().mean()
        return float(greater + 0.5 * ties)

    @property
    def weight(self) -> float:
        """Trust in [0, 1]: the window's skill clipped at 0, ramped in over ``min_labels`` labels."""
        skill = self.skill
        if skill != skill:  # nan: nothing measurable yet
            return 0.0
        return max(0.0, min(1.0, skill)) * min(1.0, len(self.pairs) / self.min_labels)

    def state_dict(self) -> dict[str, torch.Tensor]:
        pred, label = self._arrays()
        return {"predictions": pred, "labels": label, "seen": torch.tensor(self.seen)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.pairs.clear()
        self.pairs.extend(zip(state["predictions"].tolist(), state["labels"].tolist()))
        self.seen = int(state["seen"])
