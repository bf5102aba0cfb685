"""The recorded graph, listed in the order ``backward`` visits it.

    from autograd import trace
    _, loss = model(x, y)
    trace(loss, names=dict(model.named_parameters()))

prints one line per node, from the loss down to the first operations of the forward
pass: the Function, the shape of what it computed, and its inputs (a parameter by its
name, another node by its number in this list, a constant by its shape). It is the
list that llm.c's ``gpt2_backward`` writes out by hand, one kernel call per line; here
the tape (tensor.backward_order) produces it from the graph. Nothing is computed and
the graph is left as it was, so ``loss.backward()`` can follow.
"""
from __future__ import annotations

from .tensor import backward_order

__all__ = ["trace"]


def _shape(tensor) -> str:
    return "(" + ", ".join(str(n) for n in tensor.shape) + ")"


def trace(root, names=None, file=None, show=True) -> list[str]:
    """The lines describing ``root``'s graph in backward order (the first is ``root``'s
    own node); printed to ``file`` (standard output) unless ``show`` is False.

    ``names`` maps names to tensors (``dict(model.named_parameters())``) so that leaves are
    shown by name; without it a leaf shows its ``name`` attribute, or "leaf"."""
    label = {id(t): n for n, t in (names or {}).items()}
    nodes = [t for t in backward_order(root) if t._ctx is not None and hasattr(t._ctx, "fn")]   # not released
    number = {id(t): i for i, t in enumerate(nodes, 1)}

    def describe(inp):
        if id(inp) in number:
            return f"#{number[id(inp)]} {_shape(inp)}"
        name = label.get(id(inp)) or inp.name or ("leaf" if inp.requires_grad else "constant")
        return f"{name} {_shape(inp)}"

    width = max((len(t._ctx.fn.__name__) for t in nodes), default=8)
    if not nodes:
        lines = ["no recorded graph: call trace before backward (which frees the graph), "
                 "outside no_grad, on a result that requires grad"]
        if show:
            print(lines[0], file=file)
        return lines
    lines = [f"backward visits {len(nodes)} nodes, from the output to the first operations:"]
    for i, t in enumerate(nodes, 1):
        ins = [describe(inp) for inp in t._ctx.inputs if inp is not None and inp.requires_grad]
        lines.append(f"{i:4d}  {t._ctx.fn.__name__:<{width}}  -> {_shape(t):<16} <- " + ", ".join(ins))
    if show:
        print("\n".join(lines), file=file)
    return lines
