"""Checkpoints: safetensors for arrays, JSON for everything else. Never a pickle.

A run folder written by ``tinygpt train``::

    runs/shakespeare/
        latest/   model.safetensors  optimizer.safetensors  state.json    (resume from here)
        best/     model.safetensors  state.json                            (lowest val loss)
        log.jsonl loss.png

``state.json`` holds the model config, the tokenizer (the alphabet, for characters),
the training config, the step, the losses and the random generators' states.

Each checkpoint folder is written whole into a temporary sibling and then renamed into
place, so an interruption (Ctrl-C, a full disk, a crash) leaves the previous
checkpoint intact: a reader sees the old folder or the new one, never half of one.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.numpy import save_file

import numpy as np

from autograd import backend
from autograd.nn import StateDictError

from .config import GPTConfig, TrainConfig
from .errors import TinyGPTError
from .model import GPT2
from .tokenizer import tokenizer_from_dict

FORMAT = "tinygpt-checkpoint-1"
MODEL_FILE, OPTIMIZER_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "state.json"


def _host(array):
    return np.ascontiguousarray(backend.to_numpy(array))


def _fsync(path: Path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_atomically(target: Path, write):
    """Call ``write(folder)`` on a fresh temporary folder, then swap it in for ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f"{target.name}.old")
    for left in target.parent.glob(f"{glob.escape(target.name)}.tmp-*"):   # this process's, and dead ones'
        if left == tmp or not _pid_alive(left.name.rpartition("-")[2]):
            shutil.rmtree(left, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        for f in tmp.iterdir():
            _fsync(f)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: str) -> bool:
    """Whether a process with this id runs (a save killed midway leaves latest.tmp-<its pid>;
    one still running must keep its folder). Not a number: not a folder of ours, kept."""
    if not pid.isdigit() or os.name == "nt":   # on Windows, os.kill(pid, 0) would send it Ctrl-C
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):       # another user's process, or no way to ask: keep it
        return True
    return True


def _write_json(path: Path, obj):
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))


def save_arrays(arrays: dict, path, metadata: dict) -> None:
    """``safetensors`` ``save_file``, then the file's mode set to what ``open`` gives a new
    file here (0644 under the usual umask): save_file writes a private temporary file and
    renames it, so its files were 0600 where every other file of a run is 0644."""
    path = Path(path)
    probe = path.with_name(path.name + ".mode")
    probe.touch()
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    save_file(arrays, str(path), metadata=metadata)
    try:
        os.chmod(path, mode)
    except OSError:                               # a file system without modes: the file is written
        pass


def save_checkpoint(folder, model, state: dict, optimizer=None):
    """Write the weights (and the optimizer's moments, if given) and ``state`` (JSON)."""
    def write(tmp: Path):
        weights = {name: _host(p.data) for name, p in model.named_parameters()}
        save_arrays(weights, tmp / MODEL_FILE, metadata={"format": FORMAT})
        full = dict(state, format=FORMAT, model_config=model.config.to_dict())
        if model.tokenizer is not None:
            full["tokenizer"] = model.tokenizer.to_dict()
        if optimizer is not None:   # the moments as "exp_avg/<name>" arrays, the rest in state.json
            saved = optimizer.state_dict()
            arrays = {f"{key}/{name}": _host(value) for name, entry in saved["state"].items()
                      for key, value in entry.items() if key != "step"}
            save_arrays(arrays, tmp / OPTIMIZER_FILE, metadata={"format": FORMAT})
            full["optimizer"] = {"param_groups": saved["param_groups"],
                                 "steps": {name: entry["step"] for name, entry in saved["state"].items()}}
        _write_json(tmp / STATE_FILE, full)
    write_atomically(Path(folder), write)


def has_hf_weights(folder: Path) -> bool:
    """Whether ``folder`` holds a Hugging Face model: config.json and its weights (hf.py reads
    them; here, so that a checkpoint's path that is one gets a pointer to --pretrained)."""
    return (folder / "config.json").is_file() and any(
        (folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))


def _holds_text(folder: Path) -> bool:
    """Whether ``folder`` is a corpus tinygpt train --data would read (its .txt files)."""
    from .data import text_files
    try:
        return bool(text_files(folder))
    except (TinyGPTError, OSError):
        return False


def resolve_checkpoint(path, prefer=("best", "latest")) -> Path:
    """The checkpoint folder for ``path``: itself if it holds one, else its
    ``best``/``latest`` subfolder (or a leftover ``.old`` copy of one)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise TinyGPTError(f"no checkpoint at {path}: the folder does not exist; "
                           f"train one first with: tinygpt train --out {path}")
    if p.is_file():
        try:
            resolve_checkpoint(p.parent, prefer)              # the folder it is in: a run or a checkpoint?
            hint = f" ({p.parent})"
        except TinyGPTError:
            hint = " (a run folder written by tinygpt train)"
        raise TinyGPTError(f"{path} is a file: give the folder of the checkpoint" + hint)
    if (p / MODEL_FILE).exists() and (p / STATE_FILE).exists():
        return p
    for name in prefer:
        # best.old: a save cut short; .replaced-run/best: the run an --overwrite killed before its
        # first checkpoint had set aside (the next tinygpt train there puts it back)
        for candidate in (p / name, p / f"{name}.old", p / SET_ASIDE / name):
            if (candidate / MODEL_FILE).exists() and (candidate / STATE_FILE).exists():
                return candidate
    if has_hf_weights(p):
        raise TinyGPTError(f"{path} holds a Hugging Face model (already transformers' format), not a tinygpt "
                           f"checkpoint: give it as --pretrained {path} (generate, chat, explore) or --init-from "
                           f"{path} (train)")
    if describe_run(p) == LOG_ONLY:
        raise TinyGPTError(f"no checkpoint in {path}: its run stopped before saving one; start it afresh "
                           "with the same tinygpt train command and --overwrite")
    if p.is_dir() and _holds_text(p):            # a corpus, not a run: do not train into it
        raise TinyGPTError(f"no checkpoint in {path}, which holds text: train on it with: tinygpt train --data {path}")
    raise TinyGPTError(f"no checkpoint in {path}: train one first with: tinygpt train --out {path}")


def read_state(folder) -> dict:
    folder = Path(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:           # ValueError: not JSON, or not UTF-8
        raise TinyGPTError(f"cannot read {folder / STATE_FILE}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else f"a JSON {type(state).__name__}"
        raise TinyGPTError(f"{folder} is not a tinygpt checkpoint (format {found!r})")
    if not isinstance(state.get("model_config"), dict):
        raise TinyGPTError(f"{folder / STATE_FILE} is damaged: it has no model_config (the model's shape)")
    return state


def read_arrays(path) -> dict:
    """name -> NumPy array from a safetensors file (memory-mapped by safetensors)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # a truncated or foreign file
        raise TinyGPTError(f"cannot read {path}: {exc}") from None


def load_model(path, device=None, prefer=("best", "latest")):
    """A GPT2 with the weights, config and tokenizer of a checkpoint."""

    if device is not None:
        backend.use_backend(device)
    folder = resolve_checkpoint(path, prefer)
    state = read_state(folder)
    try:
        tokenizer = tokenizer_from_dict(state["tokenizer"]) if "tokenizer" in state else None
        config = GPTConfig.from_dict(state["model_config"])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:   # edited or damaged by hand
        raise TinyGPTError(f"{folder / STATE_FILE} is damaged: {type(exc).__name__}: {exc}") from None
    model = GPT2(config, tokenizer=tokenizer, init=False)
    arrays = read_arrays(folder / MODEL_FILE)
    stored = getattr(arrays.get("transformer.wte.weight"), "dtype", None)
    if stored in (np.float32, np.float64) and stored != model.transformer.wte.weight.dtype:
        # a float64 run's weights stay float64 (load_state_dict casts to the model's); the arrays cast
        # here are uninitialised (init=False), about to be overwritten: NumPy's warnings on them mean nothing
        with np.errstate(invalid="ignore", over="ignore"):
            model.to(str(stored))
    try:
        model.load_state_dict(arrays)
    except StateDictError as exc:   # e.g. overwritten by another program's weights of the same names
        raise TinyGPTError(f"{folder / MODEL_FILE} does not fit the model {folder / STATE_FILE} describes: "
                           f"{str(exc).removeprefix('load_state_dict: ')}") from None
    model.checkpoint_state = state
    model.eval()
    return model


def read_optimizer_state(folder, state: dict) -> dict:
    """The optimizer's state_dict saved with the checkpoint in ``folder`` (host arrays):
    ``Optimizer.load_state_dict`` takes it."""
    saved = state["optimizer"]
    entries = {name: {"step": int(step)} for name, step in saved["steps"].items()}
    for key, array in read_arrays(Path(folder) / OPTIMIZER_FILE).items():
        moment, name = key.split("/", 1)                 # "exp_avg/transformer.h.0.ln_1.weight"
        entries.setdefault(name, {})[moment] = array
    return {"param_groups": saved["param_groups"], "state": entries}


# ----------------------------------------------------------------------------- resuming
# flags that shape the model: a resumed run keeps its saved model, so they cannot apply
MODEL_FLAGS = ("preset", "n_layer", "n_head", "n_embd", "block_size", "tokenizer", "dropout", "init_from")


def read_resume(out, world) -> dict:
    """What resuming the run in ``out`` needs, read by rank 0 and received by every rank:
    {"state": latest/state.json, "model": name -> weights, "optimizer": a state_dict}."""
    def read():
        latest = resolve_checkpoint(out, prefer=("latest",))
        state = read_state(latest)
        return {"state": state, "model": read_arrays(latest / MODEL_FILE),
                "optimizer": read_optimizer_state(latest, state), "folder": str(latest)}
    return world.from_main(read)


def resumed_config(cfg: TrainConfig, explicit: set, state: dict) -> TrainConfig:
    """The saved run's TrainConfig, with the flags given now (``explicit``) applied; a flag
    that would change the saved model is refused (the same value as the run's is fine: the
    original command with --resume added works)."""
    saved = TrainConfig.from_dict(state["train_config"])
    shape = state.get("model_config", {})

    def runs(name):   # the run's value; None (the preset's) as the model was built
        value = getattr(saved, name)
        return shape.get(name, value) if value is None else value
    if cfg.overwrite:
        raise TinyGPTError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    changed = [f"--{name.replace('_', '-')} {getattr(cfg, name)} (the run has {runs(name)})"
               for name in MODEL_FLAGS if name in explicit and getattr(cfg, name) != runs(name)]
    if changed:
        raise TinyGPTError(f"--resume continues the saved model as it is, so {', '.join(changed)} cannot change it; "
                           "drop them, or start a new run in another folder with --out DIR")
    for name in explicit:
        setattr(saved, name, getattr(cfg, name))
    saved.resume = True
    saved.validate(relations=True)
    return saved


def refuse_to_replace(out: Path, cfg: TrainConfig) -> None:
    """Training into a folder that holds a run: refused unless --resume or --overwrite.
    Refused always where it holds files of the user's under a run's names, where it is a
    checkpoint folder (GPT2.save's), or where a later save would delete it (a run's best/)."""
    conflict = checkpoint_conflict(out)
    if conflict:
        raise TinyGPTError(f"--out {out} {conflict}: train into another folder")
    if (out / STATE_FILE).exists() and (out / MODEL_FILE).exists() and describe_run(out) is None:
        raise TinyGPTError(f"--out {out} holds a saved model (a checkpoint folder), not a run: train into "
                           "another folder")
    foreign = foreign_entries(out)
    if foreign:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in foreign)
        raise TinyGPTError(f"{out} holds {names}, which tinygpt did not write and a run would replace: "
                           "train into another folder with --out DIR")
    held = describe_run(out)
    if held == LOG_ONLY and not cfg.overwrite:
        raise TinyGPTError(f"{out} holds the log of a run that saved no checkpoint (it stopped before its "
                           "first); start afresh there with the same command and --overwrite, or train into "
                           "another folder with --out DIR")
    if held is not None and not cfg.resume and not cfg.overwrite:
        raise TinyGPTError(
            f"{out} already holds a run ({held}); continue it with --resume (and a larger "
            f"--max-iters to train further), train into another folder with --out DIR, or replace "
            f"it with --overwrite")


# ----------------------------------------------------------------------------- run folders
RUN_ENTRIES = ("latest", "best", "log.jsonl", "loss.png")   # what tinygpt train writes in a run folder


CHECKPOINT_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)   # what a checkpoint folder holds


_RUN_NAME = re.compile(r"^(latest|best)(\.old|\.tmp-\d+)?$|^log\.jsonl(\.tmp-\d+)?$|^loss\.png(\.tmp\d+\.png)?$")


def named_like_a_run(p: Path) -> bool:
    """latest, best, log.jsonl, loss.png, and the names their interrupted writes leave
    (latest.tmp-<pid>, best.old, log.jsonl.tmp-<pid>, loss.png.tmp<pid>.png); not a user's best.txt."""
    return _RUN_NAME.match(p.name) is not None


def _written_by_tinygpt(p: Path) -> bool:
    """Whether ``p``, named like a part of a run, is one. A checkpoint folder (latest,
    best) counts when it is empty or holds a checkpoint file, whatever else (a save cut
    short leaves safetensors' own temporary file; a file browser, its .DS_Store); the
    leftovers of interrupted writes (.tmp-<pid>, .old) always; the log when it starts as
    JSON does (its first line may be cut). A user's own best/ folder of photos does not,
    and --overwrite must not delete it."""
    if p.is_dir():
        if p.name not in ("latest", "best"):
            return True
        names = {f.name for f in p.iterdir()}
        return not names or bool(names & set(CHECKPOINT_FILES))
    if p.name == "log.jsonl":
        try:
            with open(p, "rb") as f:
                first = f.read(64).lstrip()
        except OSError:
            return False
        return not first or first.startswith(b"{")
    return True                                   # loss.png: the name is all there is to go by


def _run_paths(out: Path):
    """Every path of ``out`` that belongs to a run, leftovers of interrupted writes included."""
    if not out.is_dir():
        return []
    return [p for p in out.iterdir() if named_like_a_run(p) and _written_by_tinygpt(p)]


def foreign_entries(out: Path):
    """Paths of ``out`` named as a run's parts are (best/, latest/, log.jsonl) that tinygpt
    did not write: training there would replace them."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if named_like_a_run(p) and not _written_by_tinygpt(p))


LOG_ONLY = "a log but no checkpoint"   # describe_run of a run stopped before its first checkpoint


def describe_run(out) -> str | None:
    """How far the run in folder ``out`` got ("step 300, val loss 5.6777"), or None when
    the folder holds no run (it does not exist, is empty, or holds other files only)."""
    out = Path(out)
    if not _run_paths(out):
        return None
    for name in ("latest", "latest.old", "best", "best.old"):
        try:
            state = json.loads((out / name / STATE_FILE).read_text())
        except (OSError, ValueError):
            continue
        val = state.get("val_loss")
        return f"step {state.get('step', '?')}" + (f", val loss {val:.4f}" if isinstance(val, float) else "")
    return LOG_ONLY


def clear_run(out) -> None:
    """Delete the run in ``out`` (checkpoints, log, plot); other files stay."""
    for p in _run_paths(Path(out)):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


SET_ASIDE = ".replaced-run"   # where --overwrite keeps the old run until the new one saves


def set_aside_run(out) -> Path | None:
    """--overwrite: move the run in ``out`` (checkpoints, log, plot) into ``out/.replaced-run``,
    where it stays until the new run's first checkpoint is written (then ``drop_set_aside``
    deletes it), or comes back if the new run ends before that (``put_back_run``): a new run
    that fails, diverges or is stopped early loses nothing. Renames only, no copies. A
    process killed before either leaves it there: ``recover_set_aside``, which the trainer
    calls first, settles that. None: no run to move."""
    out = Path(out)
    aside = out / SET_ASIDE
    if aside.is_dir():   # recover_set_aside left it: its owner runs
        raise TinyGPTError(f"another tinygpt train (process {_owner(aside)}) is replacing the run in {out}; let "
                           "it finish, or train into another folder with --out DIR")
    paths = _run_paths(out)
    if not paths:
        return None
    aside.mkdir()
    (aside / OWNER).write_text(str(os.getpid()))
    for p in paths:
        os.replace(p, aside / p.name)
    return aside


OWNER = ".owner"   # in .replaced-run: the process id of the run that set it aside


def _owner(aside: Path) -> str:
    try:
        return (aside / OWNER).read_text().strip()
    except OSError:
        return "?"


def recover_set_aside(out) -> str | None:
    """An --overwrite whose process ended before its first checkpoint without putting the old
    run back (killed; under mpiexec, another rank failing) left it in ``out/.replaced-run``.
    Where ``out`` holds no checkpoint of a newer run, it comes back (the ended attempt's log and
    plot go): what to tell the user. Where it does (the process ended between the new run's
    first save and the deletion), the old run was replaced as asked, and goes. None: nothing
    was set aside, or nothing to say."""
    out = Path(out)
    aside = out / SET_ASIDE
    if not aside.is_dir():
        return None
    owner = _owner(aside)
    if owner != str(os.getpid()) and _pid_alive(owner) and owner != "?":
        return None       # another process's --overwrite, still running: its own to settle
    if describe_run(out) not in (None, LOG_ONLY):
        drop_set_aside(aside)
        return None
    put_back_run(out, aside)
    held = describe_run(out)
    return (f"note: an --overwrite in {out} ended before its first checkpoint; the run it was replacing "
            f"({held}) is back") if held else None


def drop_set_aside(aside: Path) -> None:
    shutil.rmtree(aside, ignore_errors=True)


def put_back_run(out, aside: Path) -> None:
    """The new run's files (log, plot, a checkpoint's leftovers) go; the set-aside run comes back."""
    out = Path(out)
    if not aside.is_dir():   # settled meanwhile (by another process's recover_set_aside)
        return
    clear_run(out)
    for p in aside.iterdir():
        if p.name == OWNER:
            p.unlink()
        else:
            os.replace(p, out / p.name)
    aside.rmdir()


def check_model_folder(folder) -> Path:
    """``folder`` as a Path, refused in one line where saving a model there (a checkpoint
    folder, written whole and swapped in for the old one) would delete what it holds: a
    file; a folder with anything but a checkpoint's own files (a run, a user's notes); a
    folder inside a checkpoint; a run's own best/ or latest/, which its training replaces
    (and its latest/ must keep the optimizer's moments for --resume)."""
    p = Path(folder).expanduser()
    if p.exists() and not p.is_dir():
        raise TinyGPTError(f"{folder} is a file: give a folder to save the model in")
    if p.is_dir():
        names = sorted(e.name for e in p.iterdir())
        if names and not ((p / STATE_FILE).exists() and set(names) <= set(CHECKPOINT_FILES)):
            held = describe_run(p)
            what = f"a tinygpt run ({held})" if held else ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise TinyGPTError(f"{folder} holds {what}, which saving a model there would delete (the folder is "
                               "replaced whole): save into a new or empty folder, or one GPT2.save wrote")
    conflict = checkpoint_conflict(p)
    if conflict:
        raise TinyGPTError(f"{folder} {conflict}: save into another folder")
    return p


def checkpoint_conflict(folder) -> str | None:
    """Why a folder written at ``folder`` would be deleted by a later save of a checkpoint
    (which replaces its folder whole), or None: it lies inside a checkpoint, or it is named
    like a part of the run in the folder above (best/, latest/, latest.old, ...)."""
    p = Path(folder)
    for above in p.absolute().parents:
        if (above / STATE_FILE).exists() and (above / MODEL_FILE).exists():   # not any project's state.json
            return f"is inside the tinygpt checkpoint {above}, which is replaced whole when it is saved again"
    if named_like_a_run(p) and describe_run(p.absolute().parent) is not None:
        return f"is named like a checkpoint of the run in {p.parent}, which its next save replaces"
    return None


def save_model(model, folder):
    """Just the weights, config and tokenizer (what ``GPT2.load`` needs), in ``folder``,
    which must be new, empty or a checkpoint folder of its own (check_model_folder)."""
    save_checkpoint(check_model_folder(folder), model,
                    {"step": getattr(model, "checkpoint_state", {}).get("step", 0)})

