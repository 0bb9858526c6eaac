"""Reading a TOML file a user gave (a run config, an energy model) with one clear error.

    >>> read_toml(Path("no-such.toml"), "config file")
    Traceback (most recent call last):
    ...
    ValueError: config file no-such.toml does not exist
"""
from __future__ import annotations

import tomllib
from pathlib import Path

__all__ = ["read_toml"]


def read_toml(path: Path, what: str) -> dict:
    """The parsed file; a ValueError naming ``what`` and the file for anything that goes wrong."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid TOML: {exc}") from None
