"""``python -m accel --bind ADDRESS [--backend emulated] [--lease SECONDS]``: the daemon as its
own process."""
from __future__ import annotations

import argparse
import math
import os
import signal
import threading

from accel import backends
from accel.daemon import serve
from protocol.channel import LEASE_S


def seconds(text: str) -> float:
    """A number of seconds > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"a number of seconds > 0, e.g. 60; got {text!r}")
    return value


def exit_with_parent(poll_s: float = 0.5) -> None:
    """SIGTERM ourselves once the launching process is gone (a host killed with SIGKILL
    cannot stop us, and an orphaned daemon would hold its socket forever)."""
    parent = os.getppid()

    def loop() -> None:
        while os.getppid() == parent:
            threading.Event().wait(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m accel", description="Serve the cosim accelerator daemon.")
    parser.add_argument("--bind", default="tcp://127.0.0.1:5555",
                        help="tcp://HOST:PORT or ipc://PATH (default: loopback tcp port 5555)")
    parser.add_argument("--backend", default="emulated", choices=backends.names())
    parser.add_argument("--fpga", help="rtl backend: the board's Etherbone address udp://HOST:PORT")
    parser.add_argument("--count-ops", action="store_true",
                        help="emulated backend: report the operations it performs, counted one by one "
                             "(slower), instead of the analytic counts")
    parser.add_argument("--lease", type=seconds, default=LEASE_S, metavar="SECONDS",
                        help="seconds a host's session may be idle before another host's hello may "
                             f"take the daemon over (default {LEASE_S:g})")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started this one exits (cosim run uses this)")
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        exit_with_parent()
    try:
        options = {"counting": True} if args.count_ops else {}
        serve(args.bind, backend=args.backend, lease=args.lease,
              **({"fpga": args.fpga} if args.fpga else options))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
