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
    """AdamW with decoupled weight decay and bias correction (see the module docstring).

    ``foreach``: update each parameter group in one launch over flat buffers (True), or
    each parameter on its own (False); None, the default, chooses True where the kernels
    run on CUDA, as PyTorch's ``torch.optim.AdamW(foreach=None)`` does. Why: a numba-cuda
    launch costs the host about 110 µs (an empty kernel of four arrays, measured on an
    H200 by benchmarks/bench_launch.py; one of CuPy's costs 9), so GPT-2's 148 parameters,
    one launch each, took 25 ms of a 209 ms profiled step, for arithmetic that takes under
    1 ms at the memory's bandwidth. The update of every element is the same either way
    (``_FlatGroup``)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, foreach=None):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"AdamW: bad hyper-parameters lr={lr} betas={betas} eps={eps} "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self.foreach = foreach
        self._flat = {}    # group index -> _FlatGroup, made at the group's first flat step

    def step(self):
        update = choose_body(adamw, "update")           # adamw.update, update_fast or update_cuda
        foreach = choose_body(adamw, "one_call_per_group") if self.foreach is None else self.foreach
        for index, group in enumerate(self.param_groups):
            if not (foreach and self._step_flat(index, group, update)):
                self._step_each(group, update)

    def _hyper(self, group):
        return group["lr"], *group["betas"], group["eps"], group["weight_decay"]

    def _step_each(self, group, update):
        """One update per parameter (with a gradient)."""
        xp = backend.xp()
        lr, beta1, beta2, eps, wd = self._hyper(group)
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            state = self.state.get(id(p))
            if state is None:
                state = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
                self.state[id(p)] = state
            state["step"] += 1
            update(p.data, g, state["exp_avg"], state["exp_avg_sq"], lr, beta1, beta2, eps, wd, state["step"])

    def _step_flat(self, index, group, update):
        """The group's update as one call over flat buffers; False (nothing done) where the
        group does not allow it: no parameters, a parameter without a gradient, more than
        one dtype, a parameter listed twice, or parameters at different step counts."""
        xp = backend.xp()
        params = group["params"]
        grads = [p.grad for p in params]
        if not params or any(g is None for g in grads) or len({id(p) for p in params}) != len(params):
            return False
        dtype = params[0].data.dtype
        if any(p.data.dtype != dtype or g.dtype != dtype for p, g in zip(params, grads)):
            return False
        steps = {self.state[id(p)]["step"] if id(p) in self.state else 0 for p in params}
        if len(steps) != 1:
            return False
        flat = self._flat.get(index)
        if flat is None or not flat.holds(params, self.state):
            flat = self._flat[index] = _FlatGroup(params, self.state)
        g = xp.concatenate([g.reshape(-1) for g in grads])   # one copy, one launch: the 148 launches it saves cost more
        t = steps.pop() + 1
        for p in params:
            self.state[id(p)]["step"] = t
        update(flat.p, g, flat.m, flat.v, *self._hyper(group), t)
        return True


class _FlatGroup:
    """A parameter group's weights and moments in three flat buffers, p, m and v, in the
    group's order; each parameter's ``data`` and its two moments in ``state`` become views
    of them (reshaped), so that one update over the buffers updates every parameter.

    Made at a group's first flat step, from the values there (moments of a parameter
    never stepped start at 0). ``holds`` says whether the views are still in place: code
    that gives a parameter a new array (``Module.to``), or ``load_state_dict``, which makes
    new moment arrays, breaks them, and the next step makes the buffers again from the
    values then. Writing into a parameter (``p.data[...] = w``) keeps them."""

    def __init__(self, params, state):
        xp = backend.xp()
        dtype = params[0].data.dtype
        total = sum(int(p.data.size) for p in params)
        self.p = xp.empty(total, dtype=dtype)
        self.m = xp.zeros(total, dtype=dtype)
        self.v = xp.zeros(total, dtype=dtype)
        self.views = []    # (parameter, its data, exp_avg, exp_avg_sq): the views as made
        offset = 0
        for p in params:
            n, shape = int(p.data.size), p.data.shape
            views = [buffer[offset:offset + n].reshape(shape) for buffer in (self.p, self.m, self.v)]
            offset += n
            views[0][...] = p.data
            old = state.get(id(p))
            if old is not None:
                views[1][...] = old["exp_avg"]
                views[2][...] = old["exp_avg_sq"]
            p.data = views[0]
            state[id(p)] = {"step": old["step"] if old is not None else 0,
                            "exp_avg": views[1], "exp_avg_sq": views[2]}
            self.views.append((p, *views))

    def holds(self, params, state):
        """Whether ``params`` are this group's, in order, each still on its views."""
        if len(params) != len(self.views):
            return False
        for p, (q, data, m, v) in zip(params, self.views):
            entry = state.get(id(p))
            if p is not q or p.data is not data or entry is None \
                    or entry["exp_avg"] is not m or entry["exp_avg_sq"] is not v:
                return False
        return True


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


def clip_grad_norm(params, max_norm, foreach=None):
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    norm = sqrt(sum over every parameter and element of g^2); every gradient is multiplied
    by min(1, max_norm / (norm + 1e-6)), as PyTorch's ``clip_grad_norm_`` does (so a norm
    within 1e-6 of max_norm is scaled by a hair too). Returns the norm before clipping as a
    0-d array (call ``float()`` on it to read it; on CUDA that is the only copy to the host).

    ``foreach`` (None: True where the kernels run on CUDA, as AdamW's): the gradients are
    copied into one flat buffer, one product gives the sum of squares and one operation
    scales them, and each parameter's ``grad`` becomes its view of that buffer (a new
    array, not the old one scaled). Per parameter (False) it takes four operations each
    (dot, add, cast, scale): about 600 launches for GPT-2's 148 parameters, 11 ms of a 209 ms profiled step on an H200. The sum
    of squares then adds in another order (flat: every square in float64; per parameter:
    each parameter's float32 sum, added in float64): equal up to rounding.
    """
    xp = backend.xp()
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return xp.asarray(0.0)
    grads = [p.grad for p in with_grad]
    if foreach is None:
        foreach = choose_body(adamw, "one_call_per_group")
    if foreach and len({g.dtype for g in grads}) == 1 and len({id(p) for p in with_grad}) == len(with_grad):
        flat = xp.concatenate([g.reshape(-1) for g in grads])
        offset = 0
        for p, g in zip(with_grad, grads):
            p.grad = flat[offset:offset + g.size].reshape(g.shape)
            offset += g.size
        # squares in float64, as the per-parameter path adds its parts: a float32 sum of
        # every square would overflow where the parts do not (a norm above 1.8e19)
        wide = flat.astype(xp.float64)
        norm = xp.sqrt(xp.dot(wide, wide))
        del wide
        flat *= xp.minimum(max_norm / (norm + 1e-6), 1.0).astype(flat.dtype)
        return norm
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

    (the schedule of GPT-3's paper, Brown et al. 2020, sec. B, with the warm-up of Karpathy's
    build-nanogpt: max_lr from step warmup - 1; nanoGPT's train.py divides by warmup + 1.)
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
