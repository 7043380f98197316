"""Wires access control, input limits, rate limits and graceful shutdown into an app (docs/security.md).

Middleware order, outermost first: drain (503 while shutting down), auth (401/403 before the body is read),
body size (413 before parsing), then the app.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from fastapi import FastAPI

from aphrodite.endpoints.auth import AccessPolicy, AuthMiddleware, is_loopback
from aphrodite.endpoints.cli_args import ServerConfig
from aphrodite.endpoints.keys import KeyRing
from aphrodite.endpoints.limits import BodyLimitMiddleware, InputLimits
from aphrodite.endpoints.rate_limit import LearningLimits, RateRule
from aphrodite.endpoints.shutdown import Drain, DrainMiddleware

logger = logging.getLogger("aphrodite.server")


def input_limits(cfg: ServerConfig) -> InputLimits:
    return InputLimits(max_prompt_chars_per_token=cfg.max_prompt_chars_per_token,
                       max_prompts_per_request=cfg.max_prompts_per_request,
                       max_choices_per_request=cfg.max_choices_per_request,
                       max_stop_sequences=cfg.max_stop_sequences,
                       max_stop_sequence_chars=cfg.max_stop_sequence_chars,
                       max_stop_token_ids=cfg.max_stop_token_ids)


def key_ring(cfg: ServerConfig, env: Mapping[str, str] = os.environ) -> KeyRing:
    return KeyRing.from_config(cfg.api_key, cfg.api_key_file, cfg.admin_key, cfg.admin_key_file, cfg.secret_file,
                               env)


def install_security(app: FastAPI, cfg: ServerConfig, *, learning: bool,
                     env: Mapping[str, str] = os.environ) -> AccessPolicy:
    """Add the security middleware to ``app`` (before it starts) and the learning rate limits to its state."""
    keys = key_ring(cfg, env)
    if learning and not keys.any and not is_loopback(cfg.host):
        logger.warning("continuous learning is on, the server listens on %s and no API key is set: anyone who can "
                       "reach it may run inference and rate responses; the routes that change the model answer "
                       "only to loopback clients. Set --api-key and --admin-key (or $APHRODITE_API_KEYS and "
                       "$APHRODITE_ADMIN_KEY).", cfg.host)
    app.state.learning_limits = LearningLimits(
        feedback=RateRule(cfg.feedback_rate, cfg.feedback_burst, cfg.feedback_daily_quota),
        examples=RateRule(cfg.examples_rate, cfg.examples_burst, cfg.examples_daily_quota))
    app.state.drain = Drain()
    policy = AccessPolicy(keys, public_metrics=cfg.public_metrics)
    app.state.access_policy = policy
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_request_body_bytes)  # added first = innermost
    app.add_middleware(AuthMiddleware, policy=policy)
    app.add_middleware(DrainMiddleware, drain=app.state.drain)
    return policy
