"""The algorithms by where they run (a module of its own so the CLI can read it cheaply)."""

HOST_ALGORITHMS = ("sgd", "svrg")                    # float64, on the host
# The low-precision work on the accelerator: the inner loop, or (mixed) every minibatch gradient.
ACCELERATOR_ALGORITHMS = ("lpsgd", "lpsvrg", "halp", "mixed")
# Networks (host/deep.py): float64 weights here with the accelerator's low-precision gradients
# (mixed, networks only), LP-SGD with the weights on the accelerator (lpsgd, as for the linear
# models), or HALP with its offset there (halp).
NET_ACCELERATOR_ALGORITHMS = ("mixed", "lpsgd", "halp")
ALGORITHMS = HOST_ALGORITHMS + ACCELERATOR_ALGORITHMS
