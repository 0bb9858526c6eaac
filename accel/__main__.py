"""``python -m accel --bind ADDRESS [--backend emulated]``: the daemon as its own process."""
from __future__ import annotations

import argparse

from accel.daemon import BACKENDS, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m accel", description="Serve the cosim accelerator daemon.")
    parser.add_argument("--bind", default="tcp://127.0.0.1:5555",
                        help="tcp://HOST:PORT or ipc://PATH (default: loopback tcp port 5555)")
    parser.add_argument("--backend", default="emulated", choices=sorted(BACKENDS))
    args = parser.parse_args(argv)
    try:
        serve(args.bind, backend=args.backend)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
