"""``LearnedQualityPredictor``: the reservoir quality predictor behind the scorer's ``QualityPredictor`` seam.

A captured response carries its first choice's projected hidden states (T, d) to the store writer. There
``observe`` runs each writer batch through the DeepTreeESN in one ragged run, keeps one fixed-size feature per
response (bounded, oldest forgotten first) and drops the raw states, so memory never holds (T, d) per
interaction. The RLS readout's prediction enters the quality score with weight
``predictor_max_weight * weight``, where ``weight`` is the readout's prequential skill on explicit labels
(see ``aphrodite.reservoir.prequential``): zero until its predictions prove better than the mean label.
Explicit feedback on a response whose feature is still held trains the readout once (``learn``).

Everything except the ``report`` reads runs on the writer thread (the predictor is not thread-safe), with one
torch intra-op thread: the reservoir's ops are tiny, and more threads only add waits on a busy host.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

import torch

from aphrodite.common.cores import intra_op_threads
from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.interaction import Interaction
from aphrodite.continuous_learning.scoring.scorer import explicit_signal
from aphrodite.continuous_learning.store.private import private_dir, restrict
from aphrodite.reservoir.quality import QualityPredictorConfig, ReservoirQualityPredictor

logger = logging.getLogger(__name__)
FILE_NAME = "quality_predictor.safetensors"
# Bytes per held feature beyond its float32 data: the tensor object, its storage, the dict entry and key.
_HELD_OVERHEAD_BYTES = 400


class LearnedQualityPredictor:
    """Reservoir features per captured response, an online readout trained from explicit feedback, and trust."""

    kind = "reservoir"

    def __init__(self, config: ServerSideConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = device
        """Where the reservoir and readout run: the engine's device (on CUDA, the fused Triton scan)."""
        self.path = os.path.join(os.path.expanduser(config.learning_dir), FILE_NAME)
        self.model: ReservoirQualityPredictor | None = None
        """Built from the first hidden states seen (their size is the engine's ``--hidden-state-dim``)."""
        self._held: OrderedDict[str, tuple[torch.Tensor, float | None]] = OrderedDict()
        """Response id -> (feature (2F,) float32, prediction made at capture) until labelled or evicted."""
        self._labels_since_save = 0
        # Cached on the writer thread after every change, so the event loop reads plain numbers only.
        self._weight = 0.0
        self._labels_seen = 0
        self._auc: float | None = None
        self.labels_unmatched = 0
        """Explicit labels that found no held feature (no hidden states, or evicted before the label came)."""

    # -- the QualityPredictor seam (writer thread) ---------------------------------------------------------------

    @property
    def accuracy(self) -> float:
        """The readout's measured skill in [0, 1] (its prequential ``weight``)."""
        return self._weight

    def predict(self, interaction: Interaction) -> float | None:
        """The prediction made when the response was captured; None without a feature or a trained readout."""
        held = self._held.get(interaction.id)
        return None if held is None else held[1]

    # -- writer thread -----------------------------------------------------------------------------------------

    def observe(self, batch: list[Interaction]) -> None:
        """Turn the batch's hidden states into held features and predictions, in one reservoir run."""
        taken = [(i.id, i.hidden_states) for i in batch if i.hidden_states is not None]
        for interaction in batch:
            interaction.hidden_states = None  # the raw (T, d) states never outlive the writer batch
        taken = [(rid, hs) for rid, hs in taken if hs.ndim == 2 and hs.shape[0] > 0]
        if not taken:
            return
        model = self._model_for(int(taken[0][1].shape[1]))
        taken = [(rid, hs) for rid, hs in taken if hs.shape[1] == model.cfg.input_dim]
        with intra_op_threads(1):
            feats = model.features([hs for _, hs in taken])  # (n, 2F) float64
            pred = model.predict_features(feats)
            preds = pred.tolist() if pred is not None else [None] * len(taken)
        for (rid, _), feat, pred in zip(taken, feats.float().cpu(), preds):  # held in host memory
            self._held[rid] = (feat.clone(), pred)  # a row of its own: a view would pin the whole batch
            self._held.move_to_end(rid)
        while len(self._held) > self.config.quality_predictor_max_held:
            self._held.popitem(last=False)

    def learn(self, interaction: Interaction) -> bool:
        """Train the readout once on this response's explicit label; False when there is no label or feature.

        The readout's prediction from before the label is scored first (prequential), so ``accuracy`` only
        ever measures predictions made without knowing the answer.
        """
        label = explicit_signal(interaction)
        if label is None:
            return False
        held = self._held.pop(interaction.id, None)
        if held is None or self.model is None:
            self.labels_unmatched += 1
            return False
        model = self.model
        with intra_op_threads(1):  # scores the prediction made before the label, then learns it
            model.partial_fit_features(held[0].double()[None].to(model.cfg.device), [label])
        self._refresh()
        self._labels_since_save += 1
        if self._labels_since_save >= self.config.quality_predictor_save_every:
            self.save()
        return True

    def forget(self, response_id: str) -> None:
        """Drop the feature held for a deleted response."""
        self._held.pop(response_id, None)

    def save(self) -> None:
        """Write reservoir, readout and accuracy window to the learning dir (atomically: a crash keeps the
        previous file)."""
        if self.model is None:
            return
        private_dir(os.path.dirname(self.path))
        tmp = self.path + ".tmp"
        self.model.save(tmp)
        restrict(tmp)  # 0600, like everything in the learning dir
        os.replace(tmp, self.path)
        self._labels_since_save = 0

    def load(self) -> bool:
        """Restore the saved predictor, if any; an unreadable file is logged and a fresh predictor learns anew."""
        if not os.path.exists(self.path):
            return False
        try:
            model = ReservoirQualityPredictor.load(self.path, device=self.device)
        except Exception:  # a damaged file must not keep the server from starting
            logger.exception("could not restore the quality predictor from %s; starting a fresh one", self.path)
            return False
        if (model.cfg.units, model.cfg.depth) != (self.config.quality_predictor_units,
                                                  self.config.quality_predictor_depth):
            logger.warning("the saved quality predictor has units=%d depth=%d, the flags ask for %d and %d; "
                           "starting a fresh one", model.cfg.units, model.cfg.depth,
                           self.config.quality_predictor_units, self.config.quality_predictor_depth)
            return False
        self.model = model
        self._refresh()
        return True

    # -- anywhere ----------------------------------------------------------------------------------------------

    @property
    def labels_seen(self) -> int:
        """Explicit labels the readout has learned from (restored ones included)."""
        return self._labels_seen

    @property
    def held(self) -> int:
        """Responses whose features wait for a label."""
        return len(self._held)

    @property
    def approx_bytes(self) -> int:
        """Estimated bytes of the held features (the model's own matrices are fixed and not counted)."""
        feature_bytes = 4 * self.model.feature_dim if self.model is not None else 0
        return len(self._held) * (feature_bytes + _HELD_OVERHEAD_BYTES)

    def report(self) -> dict[str, Any]:
        """What /v1/learning/metrics shows; plain cached numbers, safe to read off the writer thread."""
        return {"kind": self.kind, "weight": self._weight, "labels_seen": self._labels_seen, "auc": self._auc,
                "held_features": self.held, "labels_unmatched": self.labels_unmatched,
                "input_dim": None if self.model is None else self.model.cfg.input_dim}

    # -- internals ---------------------------------------------------------------------------------------------

    def _model_for(self, input_dim: int) -> ReservoirQualityPredictor:
        if self.model is not None and self.model.cfg.input_dim != input_dim:
            # another projection (--hidden-state-dim) makes the learned readout meaningless
            logger.warning("hidden states now have %d features, the quality predictor was built for %d; "
                           "starting a fresh one", input_dim, self.model.cfg.input_dim)
            self.model = None
            self._held.clear()
        if self.model is None:
            self.model = ReservoirQualityPredictor(QualityPredictorConfig(
                input_dim=input_dim, units=self.config.quality_predictor_units,
                depth=self.config.quality_predictor_depth, device=self.device))
            self._refresh()
        return self.model

    def _refresh(self) -> None:
        assert self.model is not None
        accuracy = self.model.accuracy
        self._weight = accuracy.weight
        self._labels_seen = self.model.readout.samples
        auc = accuracy.auc
        self._auc = None if auc != auc else auc
