"""Figures written to files with matplotlib's Agg backend (never a window, never
``plt.show()``): the figure objects are made directly, without pyplot's global state,
so drawing from a background thread is safe."""
from __future__ import annotations

import json
import os
from pathlib import Path

# what each kind of record must hold (numbers; a diverged step's loss may be NaN, a grad
# norm None): the plot, the explorer and a resume read these fields
_FIELDS = {"train": ("step", "loss", "lr"), "eval": ("step", "train_loss", "val_loss")}


def _usable(record) -> bool:
    if not isinstance(record, dict) or record.get("kind") not in _FIELDS:
        return False
    return all(isinstance(record.get(name), (int, float)) and not isinstance(record.get(name), bool)
               for name in _FIELDS[record["kind"]])


def read_log(path) -> list[dict]:
    """The train and eval records of a run's log.jsonl. Lines that are not such a record
    are skipped: a half-written last line, and whatever an editor or a damaged disk left
    (text that is not UTF-8, JSON that is not a record, a record without its numbers),
    which would otherwise stop a plot, the explorer or a --resume."""
    records = []
    try:
        with open(path, "rb") as f:
            for line in f:
                try:
                    record = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if _usable(record):
                    records.append(record)
    except FileNotFoundError:
        pass
    return records


def plot_training(records, out_path, title="training"):
    """loss.png: train and val loss against step; below it the learning rate, and the
    gradient norm before clipping (log scale) where the log has it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    norms = [(r["step"], r["grad_norm"]) for r in records if r.get("kind") == "train" and r.get("grad_norm")]
    fig = Figure(figsize=(8, 7.5 if norms else 6), dpi=100)
    FigureCanvasAgg(fig)
    if norms:
        ax, ax_lr, ax_norm = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1, 1]})
    else:
        ax, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if train:
        ax.plot(*zip(*train), color="tab:blue", alpha=0.35, linewidth=1, label="train (per step)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", color="tab:blue",
                label="train (eval)")
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange",
                label="val (eval)")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend(loc="upper right")
    lrs = [(r["step"], r["lr"]) for r in records if r.get("kind") == "train" and "lr" in r]
    if lrs:
        ax_lr.plot(*zip(*lrs), color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    bottom = ax_lr
    if norms:
        ax_norm.plot(*zip(*norms), color="tab:purple", linewidth=1)
        ax_norm.set_yscale("log")
        ax_norm.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))     # 1, 2, 5, 10, 20, ...
        ax_norm.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax_norm.yaxis.set_minor_formatter(NullFormatter())
        ax_norm.set_ylabel("gradient norm\n(before clipping)")
        ax_norm.grid(alpha=0.3)
        bottom = ax_norm
    bottom.set_xlabel("step")
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, out_path)
    except BaseException:            # a full disk, say: no half-written figure left beside the old one
        tmp.unlink(missing_ok=True)
        raise
    return out_path
