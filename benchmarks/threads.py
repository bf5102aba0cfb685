"""Fix the thread count of every math library before any of them starts.

Import this first (before numpy or torch): ``--threads N`` on the command line, or all
cores, becomes OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS, so that
NumPy's BLAS and PyTorch use the same number of threads.
"""
import os
import sys


def _threads_from_argv():
    if "--threads" in sys.argv:
        return int(sys.argv[sys.argv.index("--threads") + 1])
    return os.cpu_count() or 1


THREADS = _threads_from_argv()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)
