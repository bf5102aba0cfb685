"""Print the worst errors that the float64 finite-difference gradient check sees for
every op and kernel of the engine, on random inputs of a few shapes.

    python benchmarks/gradcheck_report.py

Each row: the largest absolute and relative difference between the hand-written
backward and central differences (eps = 1e-6) over every checked element of every
input (relative errors only where the numeric gradient is above 1e-5).
"""
import numpy as np
from autograd import Tensor, backend, gradcheck
from autograd import functional as F


def rand(*shape, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    data = rng.uniform(0.5, 2.0, shape) if positive else rng.standard_normal(shape)
    return Tensor(data, dtype="float64", requires_grad=True)


def cases():
    ids = np.array([[1, 1, 2, 7], [7, 1, 0, 1]])
    targets = np.array([0, 3, -1, 2, 4])
    cond = np.random.default_rng(3).random((3, 4)) > 0.5
    yield "add (broadcast)", lambda a, b: a + b, [rand(2, 3, 4), rand(3, 1, seed=1)]
    yield "sub (broadcast)", lambda a, b: a - b, [rand(2, 3, 4), rand(4, seed=1)]
    yield "mul (broadcast)", lambda a, b: a * b, [rand(3, 1), rand(1, 4, seed=1)]
    yield "div (broadcast)", lambda a, b: a / b, [rand(3, 4, positive=True), rand(4, seed=1, positive=True)]
    yield "neg", lambda a: -a, [rand(3, 4)]
    yield "pow", lambda a, b: a ** b, [rand(3, 4, positive=True), rand(3, 4, seed=1, positive=True)]
    yield "matmul (batched)", lambda a, b: a @ b, [rand(2, 3, 4), rand(4, 5, seed=1)]
    yield "sum/mean/max", lambda a: a.sum(axis=0) + a.mean(axis=1, keepdims=True) + a.max(axis=0), [rand(4, 4)]
    yield "reshape/permute", lambda a: a.permute(2, 0, 1).reshape(4, 6), [rand(2, 3, 4)]
    yield "getitem (repeats)", lambda a: a[np.array([0, 2, 0])], [rand(3, 4)]
    yield "cat/stack/split", lambda a, b: F.stack([F.cat([a, b], 1), F.cat(F.split(b, 1, 1) + [a], 1)]),\
        [rand(2, 3), rand(2, 3, seed=1)]
    yield "exp/log/sqrt/tanh", lambda a: a.exp() + a.log() + a.sqrt() + a.tanh(), [rand(3, 4, positive=True)]
    yield "where/masked_fill", lambda a, b: F.where(cond, a, b) + F.masked_fill(a, cond, 0.5), [rand(3, 4), rand(1, 4)]
    yield "softmax", lambda a: F.softmax(a, -1), [rand(3, 7)]
    yield "log_softmax", lambda a: F.log_softmax(a, 0), [rand(3, 7)]
    yield "linear", lambda x, w, b: F.linear(x, w, b), [rand(2, 4, 3), rand(5, 3, seed=1), rand(5, seed=2)]
    yield "embedding", lambda w: F.embedding(ids, w), [rand(8, 3)]
    yield "layer_norm", lambda x, w, b: F.layer_norm(x, w, b), [rand(4, 6), rand(6, seed=1), rand(6, seed=2)]
    yield "gelu", lambda x: F.gelu(x), [rand(4, 6)]
    yield "causal_attention", F.causal_attention, [rand(2, 2, 5, 3), rand(2, 2, 5, 3, seed=1), rand(2, 2, 5, 3, seed=2)]
    yield "cross_entropy", lambda z: F.cross_entropy(z, targets), [rand(5, 6)]
    yield "linear_cross_entropy", lambda x, w: F.linear_cross_entropy(x, w, targets), [rand(5, 4), rand(6, 4, seed=1)]

    def dropout(x):
        backend.seed(0)
        return F.dropout(x, 0.3)
    yield "dropout (fixed mask)", dropout, [rand(4, 5)]


def main():
    print(f"{'op / kernel':24} {'elements':>9} {'worst abs error':>16} {'worst rel error':>16}")
    for name, fn, inputs in cases():
        report = gradcheck(fn, inputs)
        print(f"{name:24} {sum(report.checked):9d} {report.worst_abs_error:16.2e} {report.worst_rel_error:16.2e}")


if __name__ == "__main__":
    main()
