"""The training loop: AdamW, warm-up + cosine schedule, clipping, accumulation,
evaluation, samples, checkpoints, logs and plots.

One optimizer step, as data (see DESIGN's "one training step"):

    x, y = data.get_batch("train")             (B, T) ids and next-token targets
    logits, loss = model(x, y)                  forward through every kernel
    loss.backward()                             each kernel's hand-written backward
    clip_grad_norm(params, grad_clip)           global L2 norm <= grad_clip
    optimizer.step(); optimizer.zero_grad()     AdamW, decoupled decay on >= 2-D weights

Every ``eval_interval`` steps: the mean loss over ``eval_iters`` fixed train and val
batches, a sample, a checkpoint (``latest``, and ``best`` when val improves), a line
in log.jsonl and loss.png redrawn in a background thread.

Robustness: Ctrl-C finishes the current step, saves ``latest`` and exits (press it
twice to stop at once); a loss or gradient that is not finite stops the run with a
message and leaves the last good checkpoint as it was; ``resume`` continues from
``latest`` exactly: N steps then N more give the same weights, bit for bit, as 2N in
one go (the weights, AdamW's moments and both random generators are restored).

Several processes (``mpiexec -n N tinygpt train``, see tinygpt/dist.py): rank 0's
initial weights are broadcast; every rank draws its own batches of ``batch_size``
(seeded by (seed, rank)); after the backward pass the gradients, the loss and the
Ctrl-C flag are averaged over the ranks, so clipping and AdamW make the same update
everywhere. Rank 0 alone evaluates, samples, prints, logs, plots and writes
checkpoints; the others never write a file. A checkpoint holds every rank's random
streams: resuming on the same number of ranks continues exactly; on another number,
each rank starts a fresh stream seeded by (seed, rank, step), and the weights and
AdamW's moments (identical on every rank) carry over unchanged. A rank that raises ends
the whole job (MPI Abort) with its error shown. Ctrl-C under mpiexec reaches every
rank; they agree at the next all-reduce to stop after that step, and rank 0 saves.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

from autograd import BackendUnavailable, backend, no_grad, optim

from . import dist
from .checkpoint import (clear_run, describe_run, load_optimizer, read_arrays, read_state, resolve_checkpoint,
                         save_checkpoint)
from .config import GPTConfig, TrainConfig, preset
from .data import TokenData, load_corpus, stream_seed
from .errors import TinyGPTError
from .model import GPT2
from .plots import plot_training, read_log
from .tokenizer import make_tokenizer, tokenizer_from_dict

np = backend.np


class TrainingDiverged(TinyGPTError):
    """The loss or the gradient norm stopped being a finite number."""


def _validate(cfg: TrainConfig):
    positive = ["batch_size", "grad_accum", "eval_iters", "eval_interval"]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise TinyGPTError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    for name in ("max_iters", "warmup_iters", "sample_tokens"):
        if getattr(cfg, name) < 0:
            raise TinyGPTError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(cfg, name)}")
    if cfg.block_size is not None and cfg.block_size < 1:
        raise TinyGPTError(f"--block-size must be at least 1, got {cfg.block_size}")
    if not cfg.lr > 0 or (cfg.min_lr is not None and cfg.min_lr < 0):
        raise TinyGPTError(f"--lr must be positive and --min-lr not negative (got {cfg.lr}, {cfg.min_lr})")
    if not (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1):
        raise TinyGPTError(f"--beta1/--beta2 must be in [0, 1), got {cfg.beta1}, {cfg.beta2}")
    if cfg.weight_decay < 0 or cfg.grad_clip < 0:
        raise TinyGPTError("--weight-decay and --grad-clip must not be negative")
    if cfg.tokenizer not in ("gpt2", "char"):
        raise TinyGPTError(f"unknown tokenizer {cfg.tokenizer!r}; choose gpt2 or char")
    if cfg.dtype not in ("float32", "float64"):
        raise TinyGPTError(f"--dtype must be float32 or float64, got {cfg.dtype!r}")
    if not cfg.bucket_mb > 0:
        raise TinyGPTError(f"--bucket-mb must be positive, got {cfg.bucket_mb}")


# flags that shape the model: a resumed run keeps its saved model, so they cannot apply
_MODEL_FLAGS = ("preset", "n_layer", "n_head", "n_embd", "block_size", "tokenizer", "dropout", "init_from")


def _refuse_changes_on_resume(cfg: TrainConfig, explicit: set, saved: TrainConfig):
    """--resume keeps the saved model: a flag that would change it is refused (the same
    value as the saved run's is fine: the original command with --resume added works)."""
    if cfg.overwrite:
        raise TinyGPTError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    changed = [f"--{name.replace('_', '-')} {getattr(cfg, name)} (the run has {getattr(saved, name)})"
               for name in _MODEL_FLAGS if name in explicit and getattr(cfg, name) != getattr(saved, name)]
    if changed:
        raise TinyGPTError(f"--resume continues the saved model as it is, so {', '.join(changed)} cannot change it; "
                           "drop them, or start a new run in another folder with --out DIR")


def explicit_fields(cfg: TrainConfig) -> set:
    """The fields of ``cfg`` that differ from TrainConfig's defaults."""
    default = TrainConfig()
    return {f.name for f in fields(TrainConfig) if getattr(cfg, f.name) != getattr(default, f.name)}


class Trainer:
    """Runs one training job. ``Trainer(cfg).run()`` returns a summary dict.

    With ``cfg.resume`` the run continues from ``<out>/latest``: the model shape and
    tokenizer come from the checkpoint, the other settings from the saved run unless
    ``explicit`` (default: the fields of ``cfg`` that differ from the defaults)
    overrides them, e.g. a larger ``max_iters`` to train further.
    """

    def __init__(self, cfg: TrainConfig, explicit=None, out_stream=None):
        self.explicit = explicit_fields(cfg) if explicit is None else set(explicit)
        self.cfg = cfg
        self.print = out_stream or _tqdm_print
        self._stop_requested = False
        self._plot_thread = None
        self.world = dist.LocalWorld()   # run() replaces it with the MPI world under mpiexec

    # ------------------------------------------------------------------ set-up
    def _setup(self):
        cfg, world = self.cfg, self.world
        main = world.is_main
        try:
            backend.use_backend(cfg.device)
        except BackendUnavailable as exc:
            raise TinyGPTError(str(exc)) from None
        except ValueError:
            raise TinyGPTError(f"unknown device {cfg.device!r}; choose cpu or cuda") from None
        world.bind_device()
        resume_state = None
        if cfg.resume:
            out = Path(cfg.out) if cfg.out else None
            if out is None:  # the default folder depends on the corpus name
                _, name = load_corpus(cfg.data)
                out = Path("runs") / name
            # rank 0 reads the checkpoint; the others receive what it read (no shared disk needed)
            if main:
                self.latest = resolve_checkpoint(out, prefer=("latest",))
                resume_state = read_state(self.latest)
            resume_state = world.broadcast_object(resume_state)
            saved = TrainConfig.from_dict(resume_state["train_config"])
            _refuse_changes_on_resume(cfg, self.explicit, saved)
            for name in self.explicit:
                setattr(saved, name, getattr(cfg, name))
            saved.resume, saved.out = True, str(out)
            cfg = self.cfg = saved
        _validate(cfg)
        text, name = load_corpus(cfg.data)
        self.out = Path(cfg.out) if cfg.out else Path("runs") / name
        cfg.out = str(self.out)
        if main and not cfg.resume:   # never train over a run without being told to
            held = describe_run(self.out)
            if held is not None and not cfg.overwrite:
                raise TinyGPTError(
                    f"{self.out} already holds a run ({held}); continue it with --resume (and a larger "
                    f"--max-iters to train further), train into another folder with --out DIR, or replace "
                    f"it with --overwrite")
        pretrained = None
        if main:  # the other ranks receive the model's shape and tokenizer from rank 0, just below
            if resume_state is not None:
                tokenizer = tokenizer_from_dict(resume_state["tokenizer"])
                mcfg = GPTConfig.from_dict(resume_state["model_config"])
            elif cfg.init_from:
                pretrained = self._pretrained(cfg, self.explicit)
                tokenizer, mcfg = pretrained.tokenizer, pretrained.config
            else:
                tokenizer = make_tokenizer(cfg.tokenizer, text)
                mcfg = preset(cfg.preset, vocab_size=tokenizer.vocab_size, block_size=cfg.block_size,
                              n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout)
        if world.size > 1:
            shape = world.broadcast_object((mcfg.to_dict(), tokenizer.to_dict()) if main else None)
            mcfg, tokenizer = GPTConfig.from_dict(shape[0]), tokenizer_from_dict(shape[1])
        backend.seed(cfg.seed)
        # rank 0 draws the initial weights (or loads them); the other ranks receive them below
        self.model = GPT2(mcfg, tokenizer=tokenizer, init=main and resume_state is None)
        self.model.to(cfg.dtype)
        if pretrained is not None and resume_state is None:
            self.model.load_state_dict(pretrained.state_dict())
            del pretrained
        if not main:  # dropout: this rank's own stream, apart from every other rank's
            backend.seed(_int_seed(stream_seed(cfg.seed, world.rank)))
            world.barrier()  # rank 0 tokenizes first and writes the token cache, then the others read it
        self.data = TokenData(text, tokenizer, mcfg.block_size, seed=stream_seed(cfg.seed + 1, world.rank),
                              write_cache=main)
        if main:
            world.barrier()
        self.eval_batches = {}
        if main:
            eval_rng = np.random.default_rng(cfg.seed + 2)   # fixed evaluation batches, apart from training's
            self.eval_batches = {split: [self.data.get_batch(split, cfg.batch_size, rng=eval_rng)
                                         for _ in range(cfg.eval_iters)] for split in ("train", "val")}
        self.optimizer = optim.AdamW(optim.decay_groups(self.model.named_parameters(), cfg.weight_decay),
                                     lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        min_lr = cfg.min_lr if cfg.min_lr is not None else cfg.lr / 10
        decay = cfg.lr_decay_iters if cfg.lr_decay_iters is not None else cfg.max_iters
        self.schedule = optim.WarmupCosine(cfg.lr, min_lr, cfg.warmup_iters, max(decay, cfg.warmup_iters))
        self.step, self.best_val = 0, math.inf
        self.log_path = self.out / "log.jsonl"
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        if resume_state is not None:
            if main:
                self.model.load_state_dict(read_arrays(self.latest / "model.safetensors"))
                load_optimizer(self.latest, self.model, self.optimizer, resume_state)
            self._share_optimizer_state(resume_state)
            self.step = int(resume_state["step"])
            self.best_val = float(resume_state.get("best_val_loss", math.inf))
            self._restore_streams(resume_state)
            val = resume_state.get("val_loss")
            target = (f"towards --max-iters {cfg.max_iters}" if cfg.max_iters > self.step else
                      f"but --max-iters is {cfg.max_iters}: nothing to train (pass a larger --max-iters)")
            self.print(f"resuming {self.out} from step {self.step}"
                       + (f" (val loss {val:.4f})" if isinstance(val, float) else "") + f" {target}")
            if main:  # drop log lines written after the checkpoint (a run that went on and died)
                kept = [r for r in read_log(self.log_path) if r.get("step", 0) <= self.step]
                self.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif main and cfg.overwrite:
            clear_run(self.out)    # the whole old run goes: best/, latest/, log and plot are all the new run's
        world.broadcast_arrays([p.data for p in self.model.parameters()])   # rank 0's weights everywhere
        self.last_good_step = self.step if resume_state is not None else None

    def _share_optimizer_state(self, resume_state):
        """Under mpiexec: rank 0 has read AdamW's moments from the checkpoint; the other
        ranks make arrays of the same shapes and receive its values by broadcast."""
        world = self.world
        if world.size == 1:
            return
        named = dict(self.model.named_parameters())
        keys = None
        if world.is_main:
            keys = [f"{key}/{name}" for name, p in named.items()
                    for key in sorted(self.optimizer.state.get(id(p), {})) if key != "step"]
        keys = world.broadcast_object(keys)
        if not world.is_main:
            zeros = {k: np.zeros(named[k.split("/", 1)[1]].shape) for k in keys}
            load_optimizer(None, self.model, self.optimizer, resume_state, arrays=zeros)
        world.broadcast_arrays([self.optimizer.state[id(named[k.split("/", 1)[1]])][k.split("/", 1)[0]]
                                for k in keys])

    def _restore_streams(self, resume_state):
        """This rank's random generators (batches, dropout) as the checkpoint left them.

        Saved by as many ranks as there are now: each rank continues its own streams
        exactly. Saved by another number: every rank starts fresh streams seeded by
        (seed, rank, step); the run goes on from the same weights and moments, but the
        batches are not those an uninterrupted run would have drawn."""
        world, cfg = self.world, self.cfg
        saved_size = int(resume_state.get("world_size", 1))
        if saved_size == world.size:
            mine = resume_state["ranks"][world.rank] if world.size > 1 else resume_state
            backend.set_rng_state(mine["rng"])
            self.data.set_rng_state(mine["data_rng"])
            return
        self.data.rng = np.random.default_rng(stream_seed(cfg.seed + 1, world.rank, self.step))
        backend.seed(_int_seed(stream_seed(cfg.seed, world.rank, self.step)))
        self.print(f"note: this run was saved by {saved_size} process(es) and continues on {world.size}: "
                   "same weights and optimizer state, new random batch streams")

    @staticmethod
    def _pretrained(cfg, explicit):
        """GPT-2 weights to fine-tune, with the context cropped to --block-size if asked."""
        from dataclasses import replace

        from .hf import from_pretrained
        if cfg.tokenizer != "gpt2":
            raise TinyGPTError("--init-from needs GPT-2's tokenizer (--tokenizer gpt2): the weights are "
                               "tied to its 50257 token ids")
        if cfg.n_layer or cfg.n_head or cfg.n_embd or "preset" in explicit:
            raise TinyGPTError("--init-from takes the model's shape from the weights; drop "
                               "--preset/--n-layer/--n-head/--n-embd")
        pretrained = from_pretrained(cfg.init_from)
        if pretrained.tokenizer is None:
            raise TinyGPTError(f"{cfg.init_from} has a vocabulary of {pretrained.config.vocab_size}, not GPT-2's "
                               "50257: it cannot be fine-tuned with GPT-2's tokenizer")
        block = cfg.block_size or pretrained.config.block_size
        if block > pretrained.config.block_size:
            raise TinyGPTError(f"--block-size {block} is longer than the pretrained context "
                               f"({pretrained.config.block_size})")
        wpe = pretrained.transformer.wpe.weight
        wpe.data = wpe.data[:block].copy()                      # keep the first positions
        pretrained.config = replace(pretrained.config, block_size=block, dropout=cfg.dropout)
        return pretrained

    # ------------------------------------------------------------------ pieces
    def _log(self, record):
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    @no_grad()
    def evaluate(self):
        self.model.eval()
        losses = {}
        for split, batches in self.eval_batches.items():
            total = 0.0
            for x, y in batches:
                _, loss = self.model(x, y)
                total += float(loss.data)
            losses[split] = total / len(batches)
        self.model.train()
        return losses

    def _state(self, val_loss, streams=None):
        state = {"step": self.step, "val_loss": val_loss, "best_val_loss": self.best_val,
                 "train_config": self.cfg.to_dict(), "rng": backend.get_rng_state(),
                 "data_rng": self.data.rng_state(), "time": time.time(), "world_size": self.world.size}
        if streams is not None and len(streams) > 1:
            state["ranks"] = streams   # every rank's generators, in rank order
        return state

    def save(self, val_loss=None, best=False):
        """Write ``latest`` (and ``best``). Under mpiexec every rank calls it: rank 0
        gathers the ranks' random generators and alone writes."""
        streams = self.world.gather_objects({"rng": backend.get_rng_state(), "data_rng": self.data.rng_state()})
        if self.world.is_main:
            state = self._state(val_loss, streams)
            save_checkpoint(self.out / "latest", self.model, state, optimizer=self.optimizer)
            if best:
                save_checkpoint(self.out / "best", self.model, state)
        self.last_good_step = self.step

    def _plot_in_background(self):
        if self._plot_thread is not None and self._plot_thread.is_alive():
            return  # the previous figure is still being drawn; the next eval redraws anyway
        records = read_log(self.log_path)
        title = f"{self.out.name}: {self.model.config.n_layer} layers, {self.model.config.n_embd} wide"
        self._plot_thread = threading.Thread(target=plot_training, args=(records, self.out / "loss.png", title),
                                             daemon=True)
        self._plot_thread.start()

    def _sample(self):
        if self.cfg.sample_tokens <= 0:
            return
        from .generate import stream_text
        text = "".join(stream_text(self.model, "", max_new_tokens=self.cfg.sample_tokens,
                                   temperature=0.8, top_k=200, seed=self.cfg.seed))
        self.print("--- sample ---\n" + text.strip("\n") + "\n--------------")

    def _eval_and_save(self, final=False):
        """Rank 0 evaluates, logs, samples and plots; every rank takes part in the save."""
        losses, improved = {}, False
        if self.world.is_main:
            losses = self.evaluate()
            improved = losses["val"] < self.best_val
            if improved:
                self.best_val = losses["val"]
            record = {"kind": "eval", "step": self.step, "train_loss": losses["train"], "val_loss": losses["val"],
                      "time": time.time() - self.t0}
            self._log(record)
            self.print(f"step {self.step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                       + (" (best)" if improved else ""))
        if self.step > 0 or final:
            self.save(losses.get("val"), best=improved)
        if self.world.is_main:
            self._sample()
            self._plot_in_background()
        return losses

    def _request_stop(self, signum, frame):
        if self._stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_requested = True
        self.print("\nCtrl-C: finishing this step and saving (press again to quit at once)")

    # ------------------------------------------------------------------ the loop
    def run(self):
        self.world = dist.init(self.cfg.bucket_mb)
        if not self.world.is_main:
            self.print = _silent
            dist.quiet_unless_main(self.world)
        with self.world.abort_on_error():   # one process: exceptions go on up, unchanged
            return self._run()

    def _run(self):
        self._setup()
        cfg, model, opt, world = self.cfg, self.model, self.optimizer, self.world
        main = world.is_main
        params = model.parameters()
        tokens_per_step = cfg.batch_size * cfg.grad_accum * model.config.block_size * world.size
        ranks = f"; {world.describe()}" if world.size > 1 else ""
        self.print(f"training {model.num_parameters():,} parameters ({model.config.n_layer} layers, "
                   f"{model.config.n_head} heads, {model.config.n_embd} wide, context {model.config.block_size}, "
                   f"{model.tokenizer.kind} tokens) on {len(self.data.tokens):,} tokens; "
                   f"{backend.device_info()}{ranks}; run folder {self.out}")
        self.t0 = time.time()
        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(signal.SIGINT, self._request_stop)
        bar = _progress(cfg, self.step) if main else None
        losses = {}
        interrupted = False
        try:
            if self.step == 0:
                losses = self._eval_and_save()
            model.train()
            while self.step < cfg.max_iters:
                t_step = time.time()
                lr = self.schedule(self.step)
                opt.set_lr(lr)
                loss_value = 0.0
                for _ in range(cfg.grad_accum):
                    x, y = self.data.get_batch("train", cfg.batch_size)
                    _, loss = model(x, y)
                    if cfg.grad_accum > 1:
                        loss = loss * (1.0 / cfg.grad_accum)
                    loss.backward()
                    loss_value += float(loss.data)
                # several ranks: every gradient becomes its mean over the ranks (and so do the
                # loss and the Ctrl-C flag); one process: nothing changes
                loss_value, stop = world.average_gradients(params, loss_value, self._stop_requested)
                norm = float(optim.clip_grad_norm(params, cfg.grad_clip)) if cfg.grad_clip > 0 else math.nan
                if not math.isfinite(loss_value) or (cfg.grad_clip > 0 and not math.isfinite(norm)):
                    where = (f"the last good checkpoint (step {self.last_good_step}) is kept in {self.out / 'latest'}"
                             if self.last_good_step is not None else "no checkpoint was written yet")
                    raise TrainingDiverged(f"the loss became {loss_value} at step {self.step}: training stopped; "
                                           f"{where}. Try a lower --lr or --grad-clip")
                opt.step()
                opt.zero_grad()
                self.step += 1
                dt = time.time() - t_step
                if main:
                    self._log({"kind": "train", "step": self.step, "loss": loss_value, "lr": lr,
                               "grad_norm": norm if math.isfinite(norm) else None, "dt": dt})
                if bar is not None:
                    bar.set_postfix_str(f"loss {loss_value:.3f} lr {lr:.2e} {tokens_per_step / dt:,.0f} tok/s")
                    bar.update(1)
                if self.step % cfg.eval_interval == 0 or self.step == cfg.max_iters:
                    losses = self._eval_and_save(final=self.step == cfg.max_iters)
                # one process stops on its own flag (which Ctrl-C may also set during the
                # evaluation); several ranks stop on the flag they agreed on at the all-reduce,
                # so that all of them stop after the same step (one rank stopping alone would
                # leave the others waiting in their next all-reduce)
                if self._stop_requested if world.size == 1 else stop:
                    self._stop_requested = True
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True  # a second Ctrl-C mid-step: the weights may be half-updated, do not save them
            self._stop_requested = False
            self.print(f"\nstopped; the last checkpoint (step {self.last_good_step}) is in {self.out / 'latest'}")
            if world.size > 1:
                raise   # the ranks are at different points: abort_on_error ends them all
        finally:
            if bar is not None:
                bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            if self._plot_thread is not None:
                self._plot_thread.join()
        if interrupted and self._stop_requested:
            self.save()
            self.print(f"interrupted at step {self.step}: saved {self.out / 'latest'}; "
                       f"continue with: tinygpt train --resume --out {self.out}")
        elif not interrupted and main:
            plot_training(read_log(self.log_path), self.out / "loss.png",
                          f"{self.out.name}: {model.config.n_layer} layers, {model.config.n_embd} wide")
        return {"step": self.step, "train_loss": losses.get("train"), "val_loss": losses.get("val"),
                "best_val_loss": self.best_val, "out": str(self.out), "seconds": time.time() - self.t0,
                "interrupted": interrupted, "rank": world.rank, "world_size": world.size}


def _int_seed(sequence) -> int:
    """An int seed for backend.seed from a SeedSequence."""
    return int(sequence.generate_state(1)[0])


def _silent(*_):
    pass


class _ProgressLines:
    """The progress bar's stand-in when stderr is a file or a pipe: no carriage-return
    frames, a plain line every tenth of the run (and at its last step)."""

    def __init__(self, total, start, stream):
        self.total, self.step, self.stream = total, start, stream
        self.every = max(1, (total - start) // 10)
        self.postfix = ""

    def set_postfix_str(self, text):
        self.postfix = text

    def update(self, n=1):
        self.step += n
        if self.step % self.every == 0 or self.step == self.total:
            self.stream.write(f"step {self.step}/{self.total}: {self.postfix}\n")
            self.stream.flush()

    def close(self):
        pass


def _progress(cfg, start):
    """A tqdm bar on a terminal; plain periodic lines when stderr goes to a file or a pipe."""
    if not cfg.progress:
        return None
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return _ProgressLines(cfg.max_iters, start, sys.stderr)
    from tqdm import tqdm
    return tqdm(total=cfg.max_iters, initial=start, unit="step", dynamic_ncols=True, leave=True)


def _tqdm_print(message):
    from tqdm import tqdm
    tqdm.write(message)


def train(cfg: TrainConfig | None = None, **overrides) -> dict:
    """Train from Python: ``train(TrainConfig(max_iters=100))`` or ``train(max_iters=100)``."""
    cfg = cfg or TrainConfig()
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return Trainer(cfg).run()
