"""The algorithms by where they run (a module of its own so the CLI can read it cheaply)."""

HOST_ALGORITHMS = ("sgd", "svrg")                    # float64, on the host
ACCELERATOR_ALGORITHMS = ("lpsgd", "lpsvrg", "halp")  # inner loop on the accelerator
ALGORITHMS = HOST_ALGORITHMS + ACCELERATOR_ALGORITHMS
