"""The ``ticklake`` command's entry point: process-wide choices that must precede every heavy import."""

from __future__ import annotations


def main() -> int:
    from stream_workers.memory import choose_allocators

    choose_allocators()  # before pyarrow loads (stream_workers.cli imports it)
    from stream_workers.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":  # python -m stream_workers.entry …, as the ``ticklake`` script does
    raise SystemExit(main())
