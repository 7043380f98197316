"""Reservoir computing in reservoirpy's vocabulary, batched in torch with a Triton scan on CUDA.

Nodes: :class:`Reservoir`, :class:`DeepTreeESN` (states), :class:`Ridge`, :class:`RLS`
(readouts). Each has ``run``; readouts have ``fit`` (offline, resets), ``partial_fit`` (online,
keeps weights) and ``reset``; all save and load safetensors files. :class:`ReservoirQualityPredictor`
puts them together to score generated responses from their tokens' hidden states.
"""

from aphrodite.reservoir.deep_tree import DeepTreeESN
from aphrodite.reservoir.matrices import (
    EchoStatePropertyWarning,
    check_echo_state_property,
    effective_spectral_radius,
    spectral_radius,
)
from aphrodite.reservoir.prequential import PrequentialAccuracy
from aphrodite.reservoir.quality import QualityPredictorConfig, ReservoirQualityPredictor
from aphrodite.reservoir.reservoir import Reservoir
from aphrodite.reservoir.ridge import Ridge
from aphrodite.reservoir.rls import RLS

__all__ = [
    "DeepTreeESN",
    "EchoStatePropertyWarning",
    "PrequentialAccuracy",
    "QualityPredictorConfig",
    "RLS",
    "Reservoir",
    "ReservoirQualityPredictor",
    "Ridge",
    "check_echo_state_property",
    "effective_spectral_radius",
    "spectral_radius",
]
