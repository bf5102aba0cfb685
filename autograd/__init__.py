"""autograd: the small reverse-mode autodiff engine under tinygpt.

    from autograd import Tensor, no_grad, nn, optim, F
    x = Tensor([[1.0, 2.0]], requires_grad=True)
    y = F.gelu(x).sum()
    y.backward()
    print(x.grad)

Arrays live in NumPy (CPU) or CuPy (CUDA); ``use_backend`` (or ``TINYGPT_DEVICE``)
chooses, and ``autograd/backend.py`` is the only module that imports either.
"""
from . import backend
from .backend import BackendUnavailable, use_backend
from .tensor import Tensor, tensor
from .function import Function, enable_grad, is_grad_enabled, no_grad
from . import functional, ops
from . import functional as F
from . import nn, optim, profiler
from .gradcheck import GradcheckError, gradcheck
from .trace import trace

# Tensor's operators and methods (x + y, x @ w, x.sum(), ...) come from ops and the kernels,
# which sit above tensor.py: attached here, once everything is loaded.
functional.attach_tensor_methods(Tensor)

# tinygpt checks this marker to tell its own engine from other packages named "autograd"
# (HIPS autograd is on PyPI under that name).
TINYGPT_ENGINE = True

__all__ = ["Tensor", "tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "use_backend",
           "BackendUnavailable", "backend", "gradcheck", "GradcheckError", "nn", "optim", "F",
           "functional", "ops", "profiler", "trace", "TINYGPT_ENGINE"]
