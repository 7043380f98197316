"""ReservoirQualityPredictor: learns quality online from hidden-state sequences, knows when it is right."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aphrodite.reservoir import PrequentialAccuracy, QualityPredictorConfig, ReservoirQualityPredictor

D = 16


def _responses(n: int, seed: int, informative: bool = True) -> tuple[list[torch.Tensor], list[float]]:
    """Ragged (T_i, D) hidden-state sequences; in "good" responses 30 % of tokens lean towards one
    direction, a pattern only visible over the whole sequence. Labels are 1 / 0 (or coin flips)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(D, generator=torch.Generator().manual_seed(99))
    seqs, labels = [], []
    for _ in range(n):
        length = int(torch.randint(5, 40, (1,), generator=g))
        good = bool(torch.rand(1, generator=g) < 0.5)
        x = torch.randn(length, D, generator=g) * 2 + 3.0
        lean = torch.rand(length, generator=g) < (0.3 if good else 0.0)
        x[lean] += 2 * direction
        seqs.append(x)
        labels.append(float(good) if informative else float(torch.rand(1, generator=g) < 0.5))
    return seqs, labels


def _trained(informative: bool = True) -> ReservoirQualityPredictor:
    qp = ReservoirQualityPredictor(QualityPredictorConfig(input_dim=D))
    seqs, labels = _responses(600, seed=0, informative=informative)
    for i in range(0, 600, 20):  # labels arrive 20 at a time
        qp.partial_fit(seqs[i : i + 20], labels[i : i + 20])
    return qp


@pytest.fixture(scope="module")
def trained() -> ReservoirQualityPredictor:
    return _trained()


def test_learns_online_and_predicts_unseen_responses(trained: ReservoirQualityPredictor) -> None:
    seqs, labels = _responses(200, seed=1)
    pred = trained.predict(seqs)
    assert pred.shape == (200,) and pred.dtype == torch.float32
    assert bool(((pred >= 0) & (pred <= 1)).all())
    held_out = PrequentialAccuracy(window=200)
    held_out.update(pred.double(), torch.tensor(labels))
    assert held_out.auc > 0.95


def test_weight_grows_with_measured_accuracy(trained: ReservoirQualityPredictor) -> None:
    assert trained.accuracy.seen == 580  # every label after the first batch scored a prior prediction
    assert trained.accuracy.auc > 0.9 and trained.weight > 0.5
    assert ReservoirQualityPredictor(QualityPredictorConfig(input_dim=D)).weight == 0.0


def test_weight_stays_near_zero_when_labels_carry_no_signal() -> None:
    noise = _trained(informative=False)
    assert noise.weight < 0.1
    assert 0.35 < noise.accuracy.auc < 0.65


def test_one_ragged_batch_equals_one_response_at_a_time(trained: ReservoirQualityPredictor) -> None:
    seqs, _ = _responses(5, seed=2)
    seqs.append(torch.zeros(0, D))  # an empty response is allowed
    together = trained.predict(seqs)
    alone = torch.cat([trained.predict([s]) for s in seqs])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_bad_inputs_are_rejected(trained: ReservoirQualityPredictor) -> None:
    seqs, _ = _responses(2, seed=3)
    with pytest.raises(ValueError, match=r"label in \[0, 1\]"):
        trained.partial_fit(seqs, [0.5, 1.5])
    with pytest.raises(ValueError, match="expected 16"):
        trained.predict([torch.randn(4, 8)])


def test_save_and_load_keep_predictions_weight_and_learning(trained: ReservoirQualityPredictor, tmp_path: Path) -> None:
    trained.save(tmp_path / "quality.safetensors")
    loaded = ReservoirQualityPredictor.load(tmp_path / "quality.safetensors")
    seqs, labels = _responses(40, seed=4)
    torch.testing.assert_close(loaded.predict(seqs), trained.predict(seqs))
    assert loaded.weight == trained.weight and loaded.accuracy.seen == trained.accuracy.seen
    loaded.partial_fit(seqs, labels)  # learning resumes where it stopped
    assert loaded.readout.samples == trained.readout.samples + 40
