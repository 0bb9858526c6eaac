"""``python -m accel --bind ADDRESS [--backend emulated] [--lease SECONDS] [--keys DIR --allow DIR
| --insecure]``: the daemon as its own process."""
from __future__ import annotations

import argparse
import math
import os
import signal
import threading

from accel import backends
from accel.daemon import serve
from protocol.channel import LEASE_S
from protocol.keys import server_keys


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
                        help="tcp://HOST:PORT (port 0: a free one, named in the line saying it serves) "
                             "or ipc://PATH (default: loopback tcp port 5555)")
    parser.add_argument("--backend", default="emulated", choices=backends.names())
    parser.add_argument("--fpga", help="rtl backend: the board's Etherbone address udp://HOST:PORT")
    parser.add_argument("--count-ops", action="store_true",
                        help="emulated backend: report the operations it performs, counted one by one "
                             "(slower), instead of the analytic counts")
    parser.add_argument("--lease", type=seconds, default=LEASE_S, metavar="SECONDS",
                        help="seconds a host's session may be idle before another host's hello may "
                             f"take the daemon over (default {LEASE_S:g})")
    parser.add_argument("--keys", metavar="DIR",
                        help="serve with CurveZMQ: the daemon's key pair (DIR/NAME.key_secret, from "
                             "`cosim keys new`); needs --allow")
    parser.add_argument("--allow", metavar="DIR", help="with --keys: serve only the hosts whose "
                                                       "public keys (NAME.key) are in DIR")
    parser.add_argument("--insecure", action="store_true",
                        help="serve a non-loopback tcp address without keys")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started this one exits (cosim run uses this)")
    args = parser.parse_args(argv)
    if (args.keys is None) != (args.allow is None):
        parser.error("--keys and --allow go together: the daemon's key pair and its clients' public keys")
    if args.keys and args.insecure:
        parser.error("--insecure is for serving without keys; drop it or --keys/--allow")
    try:
        curve = server_keys(args.keys, args.allow) if args.keys else None
    except ValueError as exc:
        parser.error(str(exc))
    if args.exit_with_parent:
        exit_with_parent()
    try:
        options = {"counting": True} if args.count_ops else {}
        serve(args.bind, backend=args.backend, lease=args.lease, curve=curve, insecure=args.insecure,
              **({"fpga": args.fpga} if args.fpga else options))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as exc:   # the address: malformed, in use, or exposed without keys
        parser.exit(2, f"python -m accel: cannot serve on {args.bind}: {exc}\n")


if __name__ == "__main__":
    main()
