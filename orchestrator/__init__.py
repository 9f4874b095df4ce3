import os

# The orchestrator runs one job at a time, its numpy work on one core while the stages use
# the other: a multi-threaded BLAS only spin-waits around its small solves and products
# (~0.15 core-s of a 6 s dub's ~5, with its decoder child, which inherits the setting). Set
# here, before anything imports numpy, so every way of starting it gets it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
