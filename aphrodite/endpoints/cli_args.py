"""The server's command line, generated from the config dataclasses (one argument group per concern)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from aphrodite.common.config_cli import add_dataclass_args, dataclass_from_args
from aphrodite.continuous_learning.config import add_learning_cli_args, learning_config_from_args
from aphrodite.engine.config import CacheConfig, ModelLoadConfig
from aphrodite.engine.scheduler import SchedulerConfig


@dataclass
class ServerConfig:
    """The HTTP front end."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 2242
    """Port to listen on."""
    api_key: str | None = None
    """If set, every /v1 request must carry ``Authorization: Bearer <key>``."""
    log_level: str = "info"
    """uvicorn log level."""


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
        configs_from_args(args)
        learning_config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    return args


def configs_from_args(args: argparse.Namespace) -> tuple[ServerConfig, ModelLoadConfig, CacheConfig, SchedulerConfig]:
    return (dataclass_from_args(ServerConfig, args), dataclass_from_args(ModelLoadConfig, args),
            dataclass_from_args(CacheConfig, args), dataclass_from_args(SchedulerConfig, args))
