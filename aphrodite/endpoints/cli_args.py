"""The server's command line, generated from the config dataclasses (one argument group per concern)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from aphrodite.common.config_cli import add_dataclass_args, dataclass_from_args
from aphrodite.continuous_learning.config import add_learning_cli_args, learning_config_from_args
from aphrodite.endpoints.keys import gather_keys
from aphrodite.engine.config import CacheConfig, ModelLoadConfig
from aphrodite.engine.scheduler import SchedulerConfig


@dataclass
class ServerConfig:
    """The HTTP front end."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 2242
    """Port to listen on."""
    log_level: str = "info"
    """uvicorn log level."""

    # -- access control, limits and shutdown (issue 8, "access"; see docs/security.md) --
    api_key: list[str] = field(default_factory=list)
    """A user key (repeatable): with any user key set, every route but /health needs ``Authorization: Bearer
    <key>``. A user key may run inference, read the learning reports and rate its own responses. Also read
    from $APHRODITE_API_KEYS (comma-separated) and --api-key-file, which keep keys out of ``ps``."""
    api_key_file: str | None = None
    """File of user keys, one per line (blank lines and lines starting with # are skipped)."""
    admin_key: str | None = None
    """The admin key: only it may call /v1/learning/manual, learn and control (and delete interactions).
    Also read from $APHRODITE_ADMIN_KEY and --admin-key-file. Without one, those routes answer only to
    loopback clients."""
    admin_key_file: str | None = None
    """File holding the admin key(s), one per line."""
    secret_file: str | None = None
    """Per-installation secret (32 random bytes, created 0600 on first use) that keys the stored key
    identities (HMAC-SHA256); default ``$XDG_CACHE_HOME/aphrodite/secret`` (``~/.cache/aphrodite/secret``)."""
    public_metrics: bool = False
    """Serve /metrics without a key even when keys are set (for a scraper on a trusted network)."""
    max_request_body_bytes: int = 1 << 20
    """Largest request body accepted (bytes); a larger one is refused with 413 before it is parsed."""
    max_prompt_chars_per_token: int = 16
    """A prompt (or the chat messages together) may hold at most max_model_len x this many characters; checked
    before tokenizing."""
    max_prompts_per_request: int = 64
    """Most prompts in one /v1/completions request."""
    max_choices_per_request: int = 128
    """Most choices (n x prompts) in one request."""
    max_stop_sequences: int = 16
    """Most ``stop`` strings in one request."""
    max_stop_sequence_chars: int = 256
    """Longest ``stop`` string (characters)."""
    max_stop_token_ids: int = 64
    """Most ``stop_token_ids`` in one request."""
    feedback_rate: float = 10.0
    """Feedback requests per second per caller (key identity, or client address without a key); 0 = no limit.
    The rate limits and quotas apply to every caller but the holder of the admin key."""
    feedback_burst: int = 20
    """Feedback requests a caller may send at once before the rate applies."""
    feedback_daily_quota: int = 10_000
    """Feedback requests per caller per UTC day; 0 = no quota."""
    examples_rate: float = 2.0
    """Requests per second per caller to /v1/learning/manual and /learn together; 0 = no limit."""
    examples_burst: int = 20
    """manual/learn requests a caller may send at once before the rate applies."""
    examples_daily_quota: int = 1_000
    """Examples (manual = 1, learn = its batch size) per caller per UTC day; 0 = no quota."""
    shutdown_timeout_s: float = 30.0
    """On SIGTERM, how long requests in flight may run before they are cancelled and the process exits."""

    # -- a learning front for another server (issue 12; see docs/scale_out.md) --
    upstream: str = ""
    """Forward /v1/completions and /v1/chat/completions to this OpenAI-compatible server (vLLM or another
    Aphrodite) instead of the local engine; with --enable-continuous-learning, learn from the forwarded traffic
    on the local copy of the base model (--model: the weights the upstream serves) and load every promoted
    version on the upstream with POST /v1/load_lora_adapter."""
    upstream_api_key: str | None = None
    """Bearer key sent to the upstream (its admin key: loading adapters is an admin route). Also read from
    $APHRODITE_UPSTREAM_API_KEY."""
    upstream_model: str = ""
    """Model name to send upstream while no learned version serves (default: the client's)."""

    def __post_init__(self) -> None:
        positive = ("max_request_body_bytes", "max_prompt_chars_per_token", "max_prompts_per_request",
                    "max_choices_per_request", "max_stop_sequences", "max_stop_sequence_chars",
                    "max_stop_token_ids", "feedback_burst", "examples_burst")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("feedback_rate", "feedback_daily_quota", "examples_rate", "examples_daily_quota",
                     "shutdown_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


def make_parser(prog: str = "aphrodite run", positional_model: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="OpenAI-compatible server whose model keeps learning.")
    if positional_model:
        parser.add_argument("model_tag", nargs="?", default=None, metavar="MODEL",
                            help="checkpoint directory to serve (default: the built-in model)")
    add_dataclass_args(parser, ServerConfig, title="Server")
    add_dataclass_args(parser, ModelLoadConfig, title="Model")
    add_dataclass_args(parser, CacheConfig, title="KV cache", flag_names={"kv_cache_space_gb": "--kv-cache-space"})
    add_dataclass_args(parser, SchedulerConfig, title="Scheduler")
    add_learning_cli_args(parser)
    return parser


def parse_args(argv: list[str] | None = None, positional_model: bool = False,
               prog: str = "aphrodite run") -> argparse.Namespace:
    parser = make_parser(prog, positional_model)
    args = parser.parse_args(argv)
    if getattr(args, "model_tag", None):
        if args.model is not None and args.model != args.model_tag:
            parser.error("give the model either as MODEL or as --model, not both")
        args.model = args.model_tag
    try:  # every config validates itself: report a bad value as a usage error, not a traceback
        server_cfg = configs_from_args(args)[0]
        gather_keys(server_cfg.api_key, server_cfg.api_key_file, server_cfg.admin_key, server_cfg.admin_key_file)
        learning_config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    return args


def configs_from_args(args: argparse.Namespace) -> tuple[ServerConfig, ModelLoadConfig, CacheConfig, SchedulerConfig]:
    return (dataclass_from_args(ServerConfig, args), dataclass_from_args(ModelLoadConfig, args),
            dataclass_from_args(CacheConfig, args), dataclass_from_args(SchedulerConfig, args))
