"""Learned response-quality predictor: a DeepTreeESN over generated tokens' hidden states + RLS.

Each response is a sequence of projected final hidden states, one (D,) vector per generated token.
The tree reservoir turns every response into a fixed-size feature (its final state and its mean
state over the response), an RLS readout maps features to a quality in [0, 1] and learns online
from labels as they arrive, and a prequential score of its own predictions sets how much the
server should trust it (:attr:`ReservoirQualityPredictor.weight`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from aphrodite.reservoir.checkpoint import Checkpointable
from aphrodite.reservoir.deep_tree import DeepTreeESN
from aphrodite.reservoir.prequential import PrequentialAccuracy
from aphrodite.reservoir.rls import RLS
from aphrodite.reservoir.sequences import as_batch


@dataclass
class QualityPredictorConfig:
    """Settings of :class:`ReservoirQualityPredictor`."""

    input_dim: int
    """D: size of each token's projected hidden state."""
    units: int = 64
    """Units per sub-reservoir (<= 128 keeps each one in a GPU block's registers)."""
    depth: int = 2
    """Levels of the reservoir tree."""
    branching: int = 2
    """Children per sub-reservoir."""
    lr: float = 0.5
    """Leak rate: below 1 the state integrates over many tokens."""
    sr: float = 0.9
    """Spectral radius of every sub-reservoir."""
    input_connectivity: float = 0.1
    """Density of the input weights."""
    input_scaling: float | None = None
    """Input gain; None: 1 / sqrt(input_connectivity * input_dim), so each unit's drive has unit
    variance after the per-token RMS normalisation."""
    alpha: float = 1.0
    """RLS prior precision (ridge strength) on the readout weights."""
    forgetting: float = 0.999
    """RLS forgetting factor: memory of about 1 / (1 - forgetting) labels."""
    accuracy_window: int = 500
    """Labelled predictions kept to measure accuracy."""
    min_labels: int = 50
    """Labels before the weight may reach its full value."""
    seed: int = 0
    """Seed of the reservoir matrices."""
    device: str = "cpu"
    """Where the reservoir runs (the Triton kernel on CUDA)."""

    def __post_init__(self) -> None:
        if self.input_dim < 1 or self.units < 1:
            raise ValueError(f"input_dim and units must be >= 1, got {self.input_dim}, {self.units}")
        if not 0 < self.forgetting <= 1 or self.alpha <= 0:
            raise ValueError(f"need forgetting in (0, 1] and alpha > 0, got {self.forgetting}, {self.alpha}")


class ReservoirQualityPredictor(Checkpointable):
    """Predicts response quality in [0, 1] from per-token hidden states; learns from labels online.

    Not thread-safe (``partial_fit`` updates the readout in place): call it from one thread.

    Examples
    --------
    >>> qp = ReservoirQualityPredictor(QualityPredictorConfig(input_dim=16))
    >>> seqs = [torch.randn(12, 16), torch.randn(30, 16)]
    >>> qp.partial_fit(seqs, [1.0, 0.0])
    >>> qp.predict(seqs).shape, qp.weight  # weight stays 0 until its predictions prove useful
    (torch.Size([2]), 0.0)
    """

    def __init__(self, config: QualityPredictorConfig) -> None:
        self.cfg = config
        scaling = config.input_scaling or (config.input_connectivity * config.input_dim) ** -0.5
        self.esn = DeepTreeESN(
            units=config.units, depth=config.depth, branching=config.branching, lr=config.lr, sr=config.sr,
            input_scaling=scaling, input_connectivity=config.input_connectivity, seed=config.seed,
            input_dim=config.input_dim, device=config.device,
        )  # fmt: skip
        self.readout = RLS(alpha=config.alpha, forgetting=config.forgetting)
        self.accuracy = PrequentialAccuracy(config.accuracy_window, config.min_labels)

    @property
    def feature_dim(self) -> int:
        return 2 * self.esn.output_dim

    def features(self, seqs: Sequence[torch.Tensor]) -> torch.Tensor:
        """(n, 2F) float64: [final state, mean state] of every response, all in one ragged run."""
        batch = as_batch(list(seqs), torch.float32, self.cfg.device)
        if batch.data.shape[-1] != self.cfg.input_dim:
            raise ValueError(f"hidden states have {batch.data.shape[-1]} features, expected {self.cfg.input_dim}")
        # per-token RMS normalisation: hidden-state scale varies across models and layers
        tokens = batch.data * torch.rsqrt(batch.data.pow(2).mean(-1, keepdim=True) + 1e-6)  # (B, T, D)
        zeros = torch.zeros(self.esn.output_dim, device=self.cfg.device)
        states = self.esn.run(tokens, lengths=batch.lengths, x0=zeros)  # (B, T, F), zero past each length
        final = self.esn.state  # (B, F)
        self.esn.reset()  # responses are independent: no state carries over to the next call
        mean = states.sum(1) / batch.lengths.to(states.device).clamp(min=1)[:, None]
        return torch.cat([final, mean], dim=1).double()

    def predict_features(self, feats: torch.Tensor) -> torch.Tensor | None:
        """(n,) float64 qualities in [0, 1] from :meth:`features` rows; None while the readout is untrained."""
        if self.readout.W is None:
            return None
        return self.readout.run(feats)[:, 0].cpu().clamp(0.0, 1.0)

    def partial_fit_features(self, feats: torch.Tensor, labels: Sequence[float] | torch.Tensor) -> None:
        """Score the current predictions for these feature rows against ``labels``, then learn them."""
        y = torch.as_tensor(labels, dtype=torch.float64).reshape(-1)
        if len(y) != feats.shape[0] or not bool(((y >= 0) & (y <= 1)).all()):
            raise ValueError("need one label in [0, 1] per response")
        prior = self.predict_features(feats)
        if prior is not None:  # an untrained readout has made no prediction to score
            self.accuracy.update(prior, y)
        self.readout.partial_fit(feats.double(), y[:, None].to(feats.device))

    def predict(self, seqs: Sequence[torch.Tensor]) -> torch.Tensor:
        """(n,) float32 predicted qualities in [0, 1] (0.5, no opinion, while untrained)."""
        pred = self.predict_features(self.features(seqs))
        return torch.full((len(seqs),), 0.5) if pred is None else pred.float()

    def partial_fit(self, seqs: Sequence[torch.Tensor], labels: Sequence[float] | torch.Tensor) -> None:
        """Score the current predictions for these responses against ``labels``, then learn them."""
        self.partial_fit_features(self.features(seqs), labels)

    @property
    def weight(self) -> float:
        """How much to trust :meth:`predict`, in [0, 1]: grows with the measured skill."""
        return self.accuracy.weight

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ReservoirQualityPredictor":
        return cls(QualityPredictorConfig(**config))

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"esn.{k}": v for k, v in self.esn.state_dict().items()}
        out.update({f"readout.{k}": v for k, v in self.readout.state_dict().items()})
        out.update({f"accuracy.{k}": v for k, v in self.accuracy.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        part = lambda prefix: {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
        self.esn.load_state_dict(part("esn."))
        self.readout.load_state_dict(part("readout."))
        self.accuracy.load_state_dict(part("accuracy."))
