"""A run is a function of its config and seed, bit for bit, whatever the machine's BLAS thread count."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

RUN = """
import hashlib
from host.train import TrainConfig, train
r = train(TrainConfig(dataset="synthetic_linear", model="linear", samples=20000, features=200,
                     algorithms=("svrg",), epochs=2), connect=None)
print(hashlib.sha256(b"".join(w.tobytes() for w in r.weights.values())).hexdigest(), r.reference.loss.hex())
"""


def test_float64_weights_do_not_depend_on_the_blas_thread_count():
    """A problem large enough for OpenBLAS to split its products between threads: left to the
    thread count, the SVRG weights of 1 and 2 threads differ in their last bits."""
    digests = set()
    for threads in ("1", "2", "4"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests
