"""accel: the accelerator side — the daemon (``accel.daemon``), its backends
(``accel.backends``), kernel spec v2 (``accel.spec``: the backend interface, the accumulator
ALU, the bit-exact nonlinearity, operation counts) and the number formats' arithmetic
(``accel.numerics``). Imports only ``protocol``.

    python -m accel --bind ipc:///tmp/a.sock      # or: cosim accel --bind ...
"""
