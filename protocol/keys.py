"""CurveZMQ keys for a daemon served off loopback: key files, and the rule that asks for them.

Usage::

    new_keys("keys/accel", "accel")                      # keys/accel/accel.key (public), .key_secret
    server = Server("tcp://0.0.0.0:5555", curve=server_keys("keys/accel", allow="keys/clients"))
    client = Client("tcp://accel-box:5555", curve=client_keys("keys/host", server_key="accel.key"))

Key files are ZeroMQ certificates as ``zmq.auth.create_certificates`` writes them: ``NAME.key``
holds the public key (hand it out: a daemon's ``--allow`` directory lists its clients' ones,
a host's ``--server-key`` is the daemon's one), ``NAME.key_secret`` the key pair (keep it; it
is written readable by its owner only). A keys directory holds exactly one ``.key_secret``.

CURVE encrypts and authenticates every message both ways: the host knows it talks to the
daemon whose public key it holds, the daemon serves only hosts whose public keys it lists.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

__all__ = ["ClientKeys", "KeyFileError", "ServerKeys", "check_exposure", "client_keys",
           "is_loopback", "new_keys", "server_keys"]

KEY_BYTES = 32   # a Curve25519 key; 40 characters in Z85


class KeyFileError(ValueError):
    """A key file or directory is missing, ambiguous or does not hold a valid key."""


@dataclass(frozen=True)
class ServerKeys:
    """The daemon's key pair (Z85) and the public keys (Z85) of the clients it serves."""

    public: bytes
    secret: bytes
    allowed: frozenset[bytes]


@dataclass(frozen=True)
class ClientKeys:
    """The host's key pair and the daemon's public key (Z85 each)."""

    public: bytes
    secret: bytes
    server: bytes


def new_keys(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` into ``directory`` (created if need be);
    returns (public, secret) paths. Refuses to overwrite either file."""
    if not name or name != Path(name).name or name.startswith("."):
        raise KeyFileError(f"a key name is a plain file name such as 'accel' or 'host'; got {name!r}")
    if not zmq.has("curve"):
        raise KeyFileError("this libzmq was built without CURVE support")
    directory = Path(directory)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing:
        raise KeyFileError(f"{' and '.join(existing)} already exist(s); pick another --name or "
                           "directory (a key pair is never overwritten: hosts may hold its public key)")
    directory.mkdir(parents=True, exist_ok=True)
    # The secret file exists, empty and private, before the key is written into it.
    secret.touch(mode=0o600)
    zmq.auth.create_certificates(directory, name)
    return public, secret


def _key(path: Path, field: str, value: bytes | None) -> bytes:
    if value is None:
        raise KeyFileError(f"{path} has no {field} key: expected a ZeroMQ certificate "
                           "as `cosim keys new` writes")
    try:
        if len(z85.decode(value)) == KEY_BYTES:
            return value
    except (ValueError, KeyError, TypeError):
        pass
    raise KeyFileError(f"{path}: its {field} key {value[:40]!r} is not a {KEY_BYTES}-byte Z85 key")


def _load(path: Path) -> tuple[bytes | None, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc}") from None
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}; expected a ZeroMQ certificate as `cosim keys new` "
                           "writes") from None


def public_key(path: str | os.PathLike) -> bytes:
    """The public key in a ``.key`` (or ``.key_secret``) file."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"no key file {path}")
    return _key(path, "public", _load(path)[0])


def _key_pair(directory: str | os.PathLike) -> tuple[bytes, bytes]:
    directory = Path(directory)
    if not directory.is_dir():
        raise KeyFileError(f"no keys directory {directory}; make one with `cosim keys new {directory}`")
    found = sorted(directory.glob("*.key_secret"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise KeyFileError(f"{directory} must hold exactly one NAME.key_secret (found: {names})")
    public, secret = _load(found[0])
    return _key(found[0], "public", public), _key(found[0], "secret", secret)


def server_keys(directory: str | os.PathLike, allow: str | os.PathLike) -> ServerKeys:
    """The daemon's keys from ``directory`` and the clients it serves: every ``*.key`` in ``allow``."""
    allow = Path(allow)
    if not allow.is_dir():
        raise KeyFileError(f"no directory {allow} of allowed clients' public keys (NAME.key files)")
    allowed = frozenset(public_key(p) for p in sorted(allow.glob("*.key")))
    if not allowed:
        raise KeyFileError(f"{allow} holds no NAME.key file: no client could connect; copy the "
                           "hosts' public keys there")
    return ServerKeys(*_key_pair(directory), allowed)


def client_keys(directory: str | os.PathLike, server_key: str | os.PathLike) -> ClientKeys:
    """The host's keys from ``directory`` and the daemon's public key from ``server_key``."""
    return ClientKeys(*_key_pair(directory), public_key(server_key))


def is_loopback(address: str) -> bool:
    """Whether only this machine can reach ``address``: ipc, inproc, and tcp on 127.x, ::1 or
    localhost. A wildcard, an interface name or any other host is reachable from outside."""
    if not address.startswith("tcp://"):
        return True
    host = address[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(address: str, keyed: bool, insecure: bool) -> None:
    """Refuse to serve an address other machines can reach without keys, unless ``insecure``:
    anyone reaching it could drive the accelerator and read the data and weights."""
    # An address without a port is malformed: bind refuses it, naming the accepted forms.
    malformed = address.startswith("tcp://") and ":" not in address[len("tcp://"):]
    if not (keyed or insecure or malformed or is_loopback(address)):
        raise ValueError("not a loopback address, and without keys anyone who reaches it can drive "
                         "the accelerator and read the traffic: serve with keys (--keys DIR --allow "
                         "CLIENTS_DIR; `cosim keys new` makes them) or, on a network you trust, "
                         "pass --insecure")
