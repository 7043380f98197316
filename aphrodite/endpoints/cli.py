"""The ``aphrodite`` command: ``aphrodite run [MODEL] [flags]`` starts the OpenAI-compatible server;
``aphrodite learning COMMAND`` watches and steers a running server's learning (``cli_learning.py``)."""

from __future__ import annotations

import sys

USAGE = ("usage: aphrodite run [MODEL] [flags]   (aphrodite run --help lists the flags)\n"
         "       aphrodite learning {status,versions,rollback,trigger,pause,resume,export,feedback} ...   "
         "(aphrodite learning --help)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    if argv[0] == "learning":
        from aphrodite.endpoints.cli_learning import main as learning_main

        sys.exit(learning_main(argv[1:]))
    if argv[0] != "run":
        print(f"aphrodite: unknown command {argv[0]!r}; the commands are 'run' and 'learning'", file=sys.stderr)
        sys.exit(2)
    from aphrodite.engine.threads import prefer_passive_wait

    prefer_passive_wait()  # before anything imports torch: OpenMP reads it once, when it loads
    from aphrodite.endpoints.cli_args import parse_args
    from aphrodite.endpoints.openai.api_server import run_server

    run_server(parse_args(argv[1:], positional_model=True))


if __name__ == "__main__":
    main()
