"""Optimisers, gradient clipping and the learning-rate schedule.

AdamW's update, with its formulas, is a kernel like the others: kernels/adamw.py (its
NumPy body, and its CUDA body chosen where the engine chooses every kernel's body).

Which parameters decay: ``decay_groups`` puts every parameter with two or more axes
(the weight matrices, and the token and position embeddings, as nanoGPT does) in a
group with weight decay, and every 1-D parameter (biases, LayerNorm gains and
shifts) in a group without. Decaying a LayerNorm gain towards 0 would shrink the
signal, not regularise it.

All updates are in place (``out=``-style), in the parameter's own dtype.
"""
from __future__ import annotations

import math

from . import backend
from .function import choose_body
from .kernels import adamw

__all__ = ["AdamW", "SGD", "clip_grad_norm", "decay_groups", "WarmupCosine"]


def _as_groups(params, defaults):
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    groups = params if isinstance(params[0], dict) else [{"params": params}]
    out = []
    for group in groups:
        full = dict(defaults)
        full.update(group)
        full["params"] = list(group["params"])
        out.append(full)
    return out


def decay_groups(named_parameters, weight_decay):
    """Two parameter groups: >= 2-D tensors decayed by ``weight_decay``, the rest not.
    Each group keeps its parameters' names, so that the optimizer's state is saved and
    restored by name (``state_dict``)."""
    named = list(named_parameters)
    decay = [(n, p) for n, p in named if p.ndim >= 2]
    no_decay = [(n, p) for n, p in named if p.ndim < 2]
    groups = [{"params": [p for _, p in decay], "names": [n for n, _ in decay], "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": [p for _, p in no_decay], "names": [n for n, _ in no_decay], "weight_decay": 0.0})
    return groups


class Optimizer:
    def __init__(self, params, defaults):
        self.param_groups = _as_groups(params, defaults)
        self.state = {}  # id(param) -> dict of arrays and the step count

    def _params(self):
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    def _keys(self):
        """(key, parameter) for every parameter: its name when the groups carry names
        (decay_groups), else its position, as a string."""
        index = 0
        for group in self.param_groups:
            names = group.get("names") or [None] * len(group["params"])
            for name, p in zip(names, group["params"]):
                yield (name if name is not None else str(index)), p
                index += 1

    def zero_grad(self):
        for _, p in self._params():
            p.grad = None

    def set_lr(self, lr):
        for group in self.param_groups:
            group["lr"] = lr

    def state_dict(self):
        """{"param_groups": the hyper-parameters of each group (JSON-able) and its size,
        "state": {key: {"step": int, and arrays such as "exp_avg"}}}, keyed by parameter name
        (or position). The arrays are the optimizer's own: copy them before changing them."""
        groups = [{k: v for k, v in g.items() if k not in ("params", "names")} | {"n_params": len(g["params"])}
                  for g in self.param_groups]
        state = {key: dict(self.state[id(p)]) for key, p in self._keys() if id(p) in self.state}
        return {"param_groups": groups, "state": state}

    def load_state_dict(self, state_dict):
        """Restore what ``state_dict`` gave (host or device arrays, converted to each
        parameter's dtype on the active backend). Refuses a state of another shape."""
        groups = state_dict["param_groups"]
        if any("n_params" in g for g in groups) and \
                [g.get("n_params") for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state does not match these parameters "
                             "(different number of groups or parameters)")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(groups)} parameter groups, this optimizer "
                             f"{len(self.param_groups)}")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k != "n_params"})
        self.state = {}
        for key, p in self._keys():
            saved = state_dict["state"].get(key)
            if saved is None:
                continue
            entry = {}
            for name, value in saved.items():
                if name == "step":
                    entry[name] = int(value)
                    continue
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(f"optimizer state {name} of {key} has shape {tuple(value.shape)}, "
                                     f"the parameter {tuple(p.shape)}")
                entry[name] = backend.asarray(value, dtype=p.dtype).copy()
            self.state[id(p)] = entry


class AdamW(Optimizer):
    """AdamW with decoupled weight decay and bias correction (see the module docstring)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"AdamW: bad hyper-parameters lr={lr} betas={betas} eps={eps} "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def step(self):
        xp = backend.xp()
        update = choose_body(adamw, "update")           # adamw.update, update_fast or update_cuda
        for group, p in self._params():
            g = p.grad
            if g is None:
                continue
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            state = self.state.get(id(p))
            if state is None:
                state = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
                self.state[id(p)] = state
            state["step"] += 1
            update(p.data, g, state["exp_avg"], state["exp_avg_sq"], lr, beta1, beta2, eps, wd, state["step"])


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum, as ``torch.optim.SGD``:

        d = g + wd * p;   b <- momentum * b + d  (b = d at the first step);   p <- p - lr * b
    """

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def step(self):
        for group, p in self._params():
            g = p.grad
            if g is None:
                continue
            d = g + group["weight_decay"] * p.data if group["weight_decay"] else g
            if group["momentum"]:
                state = self.state.get(id(p))
                if state is None:
                    state = {"step": 0, "momentum_buffer": d.copy()}
                    self.state[id(p)] = state
                else:
                    buf = state["momentum_buffer"]
                    buf *= group["momentum"]
                    buf += d
                state["step"] += 1
                d = state["momentum_buffer"]
            p.data -= group["lr"] * d


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    norm = sqrt(sum over every parameter and element of g^2); if norm > max_norm every
    gradient is multiplied by max_norm / (norm + 1e-6), as PyTorch's
    ``clip_grad_norm_`` does. Returns the norm before clipping as a 0-d array (call
    ``float()`` on it to read it; on CUDA that is the only copy to the host).
    """
    xp = backend.xp()
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return xp.asarray(0.0)
    total = xp.zeros((), dtype=xp.float64)
    for g in grads:
        flat = g.reshape(-1)
        total += xp.dot(flat, flat)                  # sum of squares, float32 dot into float64
    norm = xp.sqrt(total)
    coef = xp.minimum(max_norm / (norm + 1e-6), 1.0)  # min(coef, 1): no "if", so no read back from a GPU
    for g in grads:
        g *= coef.astype(g.dtype)
    return norm


class WarmupCosine:
    """Learning rate at a step (from 0): linear warm-up, then cosine decay to ``min_lr``.

        step <  warmup :  max_lr * (step + 1) / warmup
        step <= decay  :  min_lr + (max_lr - min_lr) * (1 + cos(pi * r)) / 2,
                          r = (step - warmup) / (decay - warmup)
        step >  decay  :  min_lr

    (the schedule of GPT-3's paper, Brown et al. 2020, sec. B, and nanoGPT.)
    """

    def __init__(self, max_lr, min_lr, warmup_steps, decay_steps):
        if decay_steps < warmup_steps:
            raise ValueError(f"the decay must end ({decay_steps}) after the warm-up ({warmup_steps})")
        self.max_lr, self.min_lr = max_lr, min_lr
        self.warmup, self.decay = warmup_steps, decay_steps

    def __call__(self, step):
        if step < self.warmup:
            return self.max_lr * (step + 1) / self.warmup
        if step > self.decay:
            return self.min_lr
        if self.decay == self.warmup:
            return self.max_lr
        ratio = (step - self.warmup) / (self.decay - self.warmup)
        return self.min_lr + (self.max_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * ratio))
