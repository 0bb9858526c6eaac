"""accel: the accelerator side — the daemon (``accel.daemon``), its backends
(``accel.backends``), the arithmetic spec in code (``accel.numerics``) and the analytic
operation accounting (``accel.accounting``). Imports only ``protocol``.

    python -m accel --bind ipc:///tmp/a.sock      # or: cosim accel --bind ...
"""
