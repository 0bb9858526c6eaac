"""cosim: host–accelerator co-simulation for low-precision training."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cosim")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
