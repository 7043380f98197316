"""Quality scoring: heuristic signals and model confidence, explicit feedback, and the learned (reservoir)
quality predictor."""
