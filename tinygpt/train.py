"""The training loop: AdamW, warm-up + cosine schedule, clipping, accumulation,
evaluation, samples, checkpoints, logs and plots.

One optimizer step, as data (README.md, "One training step, file by file", follows it
through the code):

    x, y = data.get_batch("train")             (B, T) ids and next-token targets
    logits, loss = model(x, y)                  forward through every kernel
    loss.backward()                             each kernel's hand-written backward
    clip_grad_norm(params, grad_clip)           global L2 norm <= grad_clip
    optimizer.step(); optimizer.zero_grad()     AdamW, decoupled decay on >= 2-D weights

The loss and the gradient norm stay on the device and are read every ``READ_EVERY``
steps, all at once (on a GPU each read waits for the queued work: one wait per ten
steps, not one per step); under mpiexec the ranks agree on the loss at every step.

Every ``eval_interval`` steps: the mean loss over ``eval_iters`` fixed train and val
batches, a sample, a checkpoint (``latest``, and ``best`` when val improves), a line
in log.jsonl and loss.png redrawn in a background thread.

Robustness: Ctrl-C finishes the current step, saves ``latest`` and exits (press it
twice to stop at once); a loss or gradient that is not finite stops the run (at the next read) with
a message and leaves the last good checkpoint as it was; ``resume`` continues from
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
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from autograd import BackendUnavailable, backend, no_grad, optim, profiler
from autograd.nn import StateDictError
from autograd.kernels import linear_cross_entropy

from . import dist
from .checkpoint import (drop_set_aside, put_back_run, read_resume, recover_set_aside, refuse_to_replace,
                         resumed_config, save_checkpoint, set_aside_run)
from .config import GPTConfig, TrainConfig, preset
from .data import TokenData, corpus_name, load_corpus, stream_seed
from .errors import TinyGPTError, folder_to_write
from .model import GPT2
from .plots import plot_training, read_log
from .tokenizer import make_tokenizer, tokenizer_from_dict

READ_EVERY = 10   # steps between reads of the loss and gradient norm from the device


class TrainingDiverged(TinyGPTError):
    """The loss or the gradient norm stopped being a finite number."""


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
        self._write = out_stream or _tqdm_print
        self._output_closed = False
        self._ctrl_c = False          # a Ctrl-C arrived (the command then exits 130)
        self.print = self._print
        self._stop_requested = False
        self._replaced = None            # --overwrite: where the old run waits (checkpoint.set_aside_run)
        self.world = dist.LocalWorld()   # run() replaces it with the MPI world under mpiexec

    def _print(self, message):
        """Show a line. When its reader has gone (``tinygpt train | head``, and head has
        exited), the run stops as at a first Ctrl-C: the step finishes and the run saves,
        where the closed pipe's error used to end it at its next line, before its
        checkpoint, with exit status 0. Standard output (the default output) then goes to
        os.devnull, and standard error too when it was the same pipe (``2>&1 | head``)."""
        if self._output_closed:
            return
        try:
            self._write(message)
        except BrokenPipeError:
            self._output_closed = self._stop_requested = True
            if self._write is _tqdm_print:            # a stream of the caller's own is left alone
                _to_devnull(sys.stdout)
            _tell_stderr("tinygpt train: the output was closed: finishing this step and saving")

    def run(self):
        self.world = dist.init(self.cfg.bucket_mb)
        if not self.world.is_main:
            self.print = _silent
            dist.quiet_unless_main(self.world)
        try:
            # a diverging run overflows in NumPy (exp, the squares of the norm) on its way to a
            # NaN loss, which the loss check reports in one line: NumPy's warnings (a source
            # line each, from every rank) only get in its way
            with self.world.abort_on_error(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                try:
                    return self._profile() if self.cfg.profile else self._run()
                finally:   # before abort_on_error, whose MPI Abort ends the process
                    self._put_back_replaced_run()
        finally:
            linear_cross_entropy.release_buffers()   # the head's (N, V) buffer, kept between steps

    def _recover(self, out):
        """A run an earlier --overwrite set aside and never put back (its process was killed):
        back in ``out`` before anything reads or refuses it (checkpoint.recover_set_aside)."""
        if self.world.is_main and not self.cfg.profile and Path(out).is_dir():
            note = recover_set_aside(out)
            if note:
                self.print(note)

    def _put_back_replaced_run(self):
        """--overwrite, and the new run ended before its first checkpoint: the old run comes back."""
        if self._replaced is not None:
            put_back_run(self.out, self._replaced)
            self._replaced = None
            self.print(f"--overwrite: the run that was in {self.out} is back as it was (a new run replaces it "
                       "once it saves its first checkpoint)")

    # ------------------------------------------------------------------ the loop
    def _run(self):
        self._setup()
        cfg, model, opt, world = self.cfg, self.model, self.optimizer, self.world
        params, xp, several = model.parameters(), backend.xp(), world.size > 1
        self.report.banner(self)
        if cfg.max_iters > self.step and cfg.warmup_iters > cfg.max_iters:
            default = "" if "warmup_iters" in self.explicit else " (the default)"
            self.print(f"note: --warmup-iters {cfg.warmup_iters}{default} is more than --max-iters {cfg.max_iters}: the "
                       f"learning rate rises for the whole run and ends at {self.schedule(cfg.max_iters - 1):.2g} "
                       f"(--lr is {cfg.lr:g})")
        self.t0, losses, interrupted, first_step = time.time(), {}, False, self.step
        with self._ctrl_c_finishes_the_step(), self.report.progress(cfg, self.step):
            try:
                if self.last_good_step is None:                        # a new run (not one resumed at step 0)
                    losses = self._eval_and_save(final=cfg.max_iters == 0)   # --max-iters 0: the untrained model
                model.train()
                while self.step < cfg.max_iters:
                    started, lr = time.time(), self.schedule(self.step)
                    opt.set_lr(lr)
                    loss = 0.0
                    for _ in range(cfg.grad_accum):                      # micro-batches, gradients add up
                        x, y = self.data.get_batch("train", cfg.batch_size)
                        _, micro = model(x, y)                          # forward through every kernel
                        if cfg.grad_accum > 1:
                            micro = micro * (1.0 / cfg.grad_accum)
                        micro.backward()                                # every kernel's hand-written backward
                        loss = loss + xp.asarray(micro.data, dtype=xp.float64)   # on the device: not read here
                    loss, stop = world.average_gradients(params, loss, self._stop_requested)  # mean over ranks
                    norm = optim.clip_grad_norm(params, cfg.grad_clip) if cfg.grad_clip > 0 else None
                    opt.step()                                          # AdamW
                    opt.zero_grad()
                    self.step += 1
                    self.pending.append((self.step, lr, loss, norm, time.time() - started))
                    at_eval = self.step % cfg.eval_interval == 0 or self.step == cfg.max_iters
                    if at_eval or self.step % READ_EVERY == 0:
                        self._read_and_log()                            # one device-to-host read
                    self.report.step_done()
                    if at_eval:
                        losses = self._eval_and_save(final=self.step == cfg.max_iters)
                    # several ranks: the flag they agreed on; at the last step the run is complete anyway
                    if (stop if several else self._stop_requested) and self.step < cfg.max_iters:
                        self._read_and_log()
                        self._stop_requested = interrupted = True
                        break
            except KeyboardInterrupt:   # an interrupt not through the handler below (raised before it was set)
                interrupted, self._stop_requested = True, False
                self.print(self._stopped_message())
                if world.size > 1:
                    raise   # the ranks are at different points: abort_on_error ends them all
        if interrupted and self._stop_requested:
            self.save()
            message = (f"interrupted at step {self.step}: saved {self.out / 'latest'}; "
                       f"continue with: tinygpt train --resume --out {self.out}")
            if self._output_closed:
                _tell_stderr(message)
            else:
                self.print(message)
        elif not interrupted:
            self.report.plot(wait=True)
        return {"step": self.step, "train_loss": losses.get("train"), "val_loss": losses.get("val"),
                "best_val_loss": self.best_val, "out": str(self.out), "seconds": time.time() - self.t0,
                "first_step": first_step, "interrupted": interrupted, "ctrl_c": self._ctrl_c, "rank": world.rank, "world_size": world.size}

    def _profile(self):
        """--profile N: N training steps (after 2 warm-up steps) under autograd.profiler, then
        the table of where a step's time went. Nothing is written to the run folder."""
        self._setup()
        cfg, model, opt = self.cfg, self.model, self.optimizer
        params, n = model.parameters(), cfg.profile
        model.train()

        def one_step():
            x, y = self.data.get_batch("train", cfg.batch_size)
            _, loss = model(x, y)
            loss.backward()
            with profiler.section("clip_grad_norm"):
                optim.clip_grad_norm(params, cfg.grad_clip)
            with profiler.section("AdamW (kernels/adamw.py)"):
                opt.step()
            opt.zero_grad()
        for _ in range(2):
            one_step()
        with profiler.profiling() as prof:
            start = profiler.clock()
            for _ in range(n):
                one_step()
            seconds = profiler.clock() - start
        c = model.config
        table = prof.table(n, seconds, title=(
            f"where a training step's time goes: {n} steps after 2 warm-up steps; {c.n_layer} layers, "
            f"{c.n_embd} wide, context {c.block_size}, batch {cfg.batch_size}, vocabulary {c.vocab_size}; "
            f"{backend.device_info()}, {backend.host_threads()} threads"
            + ("" if backend.fast_kernels() else "; reference kernels only")))
        self.print(table)
        return {"profile": table, "step": 0, "interrupted": False, "val_loss": None, "out": str(self.out),
                "seconds": seconds, "steps": n}

    def _read_and_log(self):
        """Read the losses and norms of the steps since the last read in one transfer, log
        them, and stop the run if one is not finite."""
        if not self.pending:
            return
        values = backend.read_scalars([v for _, _, loss, norm, _ in self.pending for v in (loss, norm)])
        values = values.reshape(-1, 2)
        records = [{"kind": "train", "step": step, "loss": float(loss), "lr": lr,
                    "grad_norm": float(norm) if math.isfinite(norm) else None, "dt": dt}
                   for (step, lr, _, _, dt), (loss, norm) in zip(self.pending, values)]
        self.pending = []
        for record, (loss, norm) in zip(records, values):   # record["step"]: steps done, this one included
            if not math.isfinite(loss) or (self.cfg.grad_clip > 0 and not math.isfinite(norm)):
                where = (f"the last good checkpoint (step {self.last_good_step}) is kept in {self.out / 'latest'}"
                         if self.last_good_step is not None else "no checkpoint was written yet")
                raise TrainingDiverged(f"the loss became {loss} at step {record['step'] - 1}: training stopped; "
                                       f"{where}. Try a lower --lr or --grad-clip")
        tokens = self.cfg.batch_size * self.cfg.grad_accum * self.model.config.block_size * self.world.size
        self.report.train(records, tokens)

    # ------------------------------------------------------------------ set-up
    def _setup(self):
        cfg, world = self.cfg, self.world
        try:
            backend.use_backend(cfg.device)
        except BackendUnavailable as exc:
            raise TinyGPTError(str(exc)) from None
        except ValueError:
            raise TinyGPTError(f"unknown device {cfg.device!r}; choose cpu or cuda") from None
        world.bind_device()
        cfg.validate()
        resume, trained_on = None, None
        if cfg.resume:   # the saved run's settings, then its corpus: rank 0 reads, every rank receives
            out = Path(cfg.out) if cfg.out else Path("runs") / corpus_name(cfg.data)   # a pipe is read once, below
            self._recover(out)
            resume = read_resume(out, world)
            trained_on = resume["state"]["train_config"].get("data")
            cfg = self.cfg = resumed_config(cfg, self.explicit, resume["state"])
            cfg.out = str(out)
            if not _same_corpus(cfg.data, trained_on):
                self.print(f"note: this run trained on {trained_on or 'the bundled corpus'} and goes on with "
                           f"{cfg.data or 'the bundled corpus'}: its val loss from here is measured on the new "
                           "corpus (and best/ is kept by that measure)")
        if cfg.data is not None:   # saved absolute: a resume from another folder finds the same corpus
            # links kept (/dev/stdin resolved is a pipe's name, which no one can open again) and ".."
            # left to the system (after a link, "a/../b" is not "b")
            cfg.data = str(Path(cfg.data).expanduser().absolute())
            source = Path(cfg.data)
            if world.size > 1 and source.exists() and not (source.is_file() or source.is_dir()):
                raise TinyGPTError(f"--data {cfg.data} is not a file: with several processes each one reads "
                                   "the corpus, and a pipe is read once; save it to a file first")
        text, name = load_corpus(cfg.data)
        self.out = Path(cfg.out) if cfg.out else Path("runs") / name
        cfg.out = str(self.out)
        if world.is_main and not cfg.profile:
            folder_to_write(self.out, "--out")
            self._recover(self.out)
            refuse_to_replace(self.out, cfg)                     # never train over a run without being told to
        # the model's shape and tokenizer: rank 0 decides (it alone loads pretrained weights)
        self._pretrained = None
        shape = world.from_main(lambda: self._model_shape(cfg, text, resume))
        mcfg, tokenizer = GPTConfig.from_dict(shape[0]), tokenizer_from_dict(shape[1])
        backend.seed(cfg.seed)
        self.model = GPT2(mcfg, tokenizer=tokenizer, init=world.is_main and resume is None).to(cfg.dtype)
        if resume is not None:
            try:
                self.model.load_state_dict(resume["model"])
            except StateDictError as exc:   # weights replaced by another program's, say
                raise TinyGPTError(f"{Path(resume['folder']) / 'model.safetensors'} does not fit the model its "
                                   f"state.json describes: {str(exc).removeprefix('load_state_dict: ')}") from None
        elif self._pretrained is not None:
            self.model.load_state_dict(self._pretrained.state_dict())
        self._pretrained = None
        if not world.is_main:  # dropout: this rank's own stream, apart from every other rank's
            backend.seed(_int_seed(stream_seed(cfg.seed, world.rank)))
            world.barrier()  # rank 0 tokenizes first and writes the token cache, then the others read it
        self.data = TokenData(text, tokenizer, mcfg.block_size, seed=stream_seed(cfg.seed + 1, world.rank),
                              write_cache=world.is_main, say=self.print)
        if world.is_main:
            world.barrier()
        saved_sha = resume["state"].get("corpus_sha") if resume is not None else None
        if saved_sha not in (None, self.data.corpus_sha) and _same_corpus(cfg.data, trained_on):
            self.print(f"note: {cfg.data or 'the bundled corpus'} has changed since this run was saved: its val "
                       "loss from here is measured on the new text's last 10% (and best/ is kept by that measure)")
        eval_rng = np.random.default_rng(cfg.seed + 2)   # fixed evaluation batches, apart from training's
        self.eval_batches = {split: [self.data.get_batch(split, cfg.batch_size, rng=eval_rng)
                                     for _ in range(cfg.eval_iters)] for split in ("train", "val")}
        self.optimizer = optim.AdamW(optim.decay_groups(self.model.named_parameters(), cfg.weight_decay),
                                     lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.schedule = lr_schedule(cfg)
        self.step, self.best_val, self.last_good_step, self.pending = 0, math.inf, None, []
        self.report = Reporter(self.out, self.print) if world.is_main and not cfg.profile else NullReporter()
        if resume is not None:
            self._resume(resume)
        elif cfg.overwrite and world.is_main and not cfg.profile:
            # the whole old run goes (best/, latest/, log and plot are all the new run's), once the
            # new run has a checkpoint of its own: until then it waits in a hidden folder (save, run)
            self._replaced = set_aside_run(self.out)
        world.broadcast_arrays([p.data for p in self.model.parameters()])   # rank 0's weights everywhere

    def _model_shape(self, cfg, text, resume):
        """(model config, tokenizer) as dicts, on rank 0: the saved run's, the pretrained
        weights', or the preset's with the flags applied."""
        if resume is not None:
            return resume["state"]["model_config"], resume["state"]["tokenizer"]
        if cfg.init_from:
            self._pretrained = _pretrained(cfg, self.explicit)
            return self._pretrained.config.to_dict(), self._pretrained.tokenizer.to_dict()
        tokenizer = make_tokenizer(cfg.tokenizer, text)
        return (preset(cfg.preset, vocab_size=tokenizer.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                       n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout).to_dict(), tokenizer.to_dict())

    def _resume(self, resume):
        """The optimizer, the step, the best loss and the random streams of the saved run."""
        state, cfg = resume["state"], self.cfg
        self.optimizer.load_state_dict(resume["optimizer"])
        self.step = self.last_good_step = int(state["step"])
        self.best_val = float(state.get("best_val_loss", math.inf))
        self._restore_streams(state)
        val = state.get("val_loss")
        target = (f"towards --max-iters {cfg.max_iters}" if cfg.max_iters > self.step else
                  f"but --max-iters is {cfg.max_iters}: nothing to train (pass a larger --max-iters)")
        self.print(f"resuming {self.out} from step {self.step}"
                   + (f" (val loss {val:.4f})" if isinstance(val, float) else "") + f" {target}")
        was, now = lr_schedule(TrainConfig.from_dict(state["train_config"])), self.schedule
        if (was.decay != now.decay and "lr_decay_iters" not in self.explicit and cfg.max_iters > self.step
                and not math.isclose(now(self.step), was(self.step), rel_tol=1e-3)):
            keep = (f"; to keep the run's schedule, resume with --lr-decay-iters {was.decay}"
                    if now.warmup == was.warmup else "")         # else the warm-up moved too
            self.print(f"note: the learning rate's decay now ends at step {now.decay}, not at {was.decay} "
                       f"as this run's did, so from step {self.step} it is {now(self.step):.2g} where the run "
                       f"had it at {was(self.step):.2g}{keep}")
        self.report.truncate_log(self.step)   # drop lines written after the checkpoint (a run that died)

    def _restore_streams(self, state):
        """This rank's random generators (batches, dropout) as the checkpoint left them.

        Saved by as many ranks as there are now: each rank continues its own streams
        exactly. Saved by another number: every rank starts fresh streams seeded by
        (seed, rank, step); the run goes on from the same weights and moments, but the
        batches are not those an uninterrupted run would have drawn."""
        world, cfg = self.world, self.cfg
        saved_size = int(state.get("world_size", 1))
        if saved_size == world.size:
            mine = state["ranks"][world.rank] if world.size > 1 else state
            backend.set_rng_state(mine["rng"])
            self.data.set_rng_state(mine["data_rng"])
            return
        self.data.rng = np.random.default_rng(stream_seed(cfg.seed + 1, world.rank, self.step))
        backend.seed(_int_seed(stream_seed(cfg.seed, world.rank, self.step)))
        saved = state.get("train_config", {})
        before = saved_size * saved.get("batch_size", cfg.batch_size) * saved.get("grad_accum", cfg.grad_accum)
        now = world.size * cfg.batch_size * cfg.grad_accum       # --batch-size is per process
        self.print(f"note: this run was saved by {saved_size} process(es) and continues on {world.size}: "
                   "same weights and optimizer state, new random batch streams"
                   + (f"; a step now takes {now} sequences, where it took {before}" if now != before else ""))

    # ------------------------------------------------------------------ evaluation and saving
    @no_grad()
    def evaluate(self):
        """Mean loss over the fixed train and val batches; one read from the device."""
        self.model.eval()
        xp = backend.xp()
        totals = []
        for split, batches in self.eval_batches.items():
            total = 0.0
            for x, y in batches:
                total = total + xp.asarray(self.model(x, y)[1].data, dtype=xp.float64)
            totals.append(total)
        self.model.train()
        sums = backend.read_scalars(totals)
        return {split: float(s) / len(batches) for (split, batches), s in zip(self.eval_batches.items(), sums)}

    def _eval_and_save(self, final=False):
        """Rank 0 evaluates, logs, samples and plots; every rank takes part in the save."""
        losses, improved = {}, False
        if self.world.is_main:
            losses = self.evaluate()
            improved = losses["val"] < self.best_val
            if improved:
                self.best_val = losses["val"]
            self.report.evaluation(self.step, losses, improved, time.time() - self.t0)
        if self.step > 0 or final:
            self.save(losses.get("val"), best=improved)
        if self.step > 0:   # the untrained model's text is random tokens, which may spell anything
            self.report.sample(self.model, self.cfg)
        self.report.plot()
        return losses

    def save(self, val_loss=None, best=False):
        """Write ``latest`` (and ``best``). Under mpiexec every rank calls it: rank 0
        gathers the ranks' random generators and alone writes."""
        streams = self.world.gather_objects({"rng": backend.get_rng_state(), "data_rng": self.data.rng_state()})
        if self.world.is_main:
            state = {"step": self.step, "val_loss": val_loss, "best_val_loss": self.best_val,
                     "train_config": self.cfg.to_dict(), "rng": backend.get_rng_state(),
                     "data_rng": self.data.rng_state(), "time": time.time(), "world_size": self.world.size,
                     "corpus_sha": self.data.corpus_sha}
            if len(streams) > 1:
                state["ranks"] = streams   # every rank's generators, in rank order
            save_checkpoint(self.out / "latest", self.model, state, optimizer=self.optimizer)
            if best:
                save_checkpoint(self.out / "best", self.model, state)
            if self._replaced is not None:      # --overwrite: the new run has a checkpoint now
                aside, self._replaced = self._replaced, None   # first: a Ctrl-C meanwhile puts nothing back
                drop_set_aside(aside)
        self.last_good_step = self.step

    # ------------------------------------------------------------------ Ctrl-C
    def _stopped_message(self) -> str:
        if self.last_good_step is not None:
            return f"\nstopped; the last checkpoint (step {self.last_good_step}) is in {self.out / 'latest'}"
        return "\nstopped before the run's first checkpoint: nothing was saved; start it again with --overwrite"

    def _quit_at_once(self):
        """The second Ctrl-C: the old run back where --overwrite had set it aside, one line, and
        the process ends here, exit status 130. Not by raising KeyboardInterrupt: that lands
        wherever Python is, inside numba's compiler callbacks too, which it crashed (a traceback,
        once a segmentation fault). The weights may be half-updated: nothing more is saved."""
        self._put_back_replaced_run()
        self.print(self._stopped_message())
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):      # a closed pipe: nothing more to say there
                pass
        os._exit(130)

    @contextmanager
    def _ctrl_c_finishes_the_step(self):
        """The first Ctrl-C lets the step finish and the run save; a second stops at once."""
        def request_stop(signum, frame):
            self._ctrl_c = True
            if self._stop_requested:
                self._quit_at_once()
            self._stop_requested = True
            self.print("\nCtrl-C: finishing this step and saving (press again to quit at once)")
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def _pretrained(cfg, explicit):
    """GPT-2 weights to fine-tune, with the context cropped to --block-size if asked."""
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


class Reporter:
    """What rank 0 shows and writes besides checkpoints: the banner, the progress bar,
    log.jsonl, the evaluation lines, samples and loss.png."""

    def __init__(self, out: Path, print_fn):
        self.out, self.print, self.bar, self.plot_thread = out, print_fn, None, None
        self.log_path = out / "log.jsonl"
        out.mkdir(parents=True, exist_ok=True)

    def banner(self, trainer):
        model, world = trainer.model, trainer.world
        ranks = f"; {world.describe()}" if world.size > 1 else ""
        self.print(f"training {model.num_parameters():,} parameters ({model.config.n_layer} layers, "
                   f"{model.config.n_head} heads, {model.config.n_embd} wide, context {model.config.block_size}, "
                   f"{model.tokenizer.kind} tokens) on {len(trainer.data.tokens):,} tokens; "
                   f"{backend.device_info()}{ranks}; run folder {self.out}")
        self.title = f"{self.out.name}: {model.config.n_layer} layers, {model.config.n_embd} wide"

    @contextmanager
    def progress(self, cfg, start):
        self.bar = _progress(cfg, start)
        try:
            yield
        finally:
            if self.bar is not None:
                self.bar.close()
            if self.plot_thread is not None:
                self.plot_thread.join()

    def _log(self, records):
        with open(self.log_path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)

    def truncate_log(self, step):
        """Drop the records written after the checkpoint at ``step`` (a run that died after
        it). Every other record stays, of whatever kind; lines that are not JSON records at
        all (damage) go."""
        kept = []
        try:
            with open(self.log_path, "rb") as f:
                for line in f:
                    try:
                        record = json.loads(line.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        continue
                    at = record.get("step", 0) if isinstance(record, dict) else None
                    if isinstance(at, (int, float)) and not isinstance(at, bool) and at <= step:
                        kept.append(record)
        except FileNotFoundError:
            pass
        # written beside it and renamed over it: a Ctrl-C or a crash mid-write leaves the old log whole
        tmp = self.log_path.with_name(f"{self.log_path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.log_path)

    def train(self, records, tokens_per_step):
        self._log(records)
        if self.bar is not None:
            last = records[-1]
            self.bar.set_postfix_str(f"loss {last['loss']:.3f} lr {last['lr']:.2e} "
                                     f"{tokens_per_step * len(records) / sum(r['dt'] for r in records):,.0f} tok/s")

    def step_done(self):
        if self.bar is not None:
            self.bar.update(1)

    def evaluation(self, step, losses, improved, seconds):
        self._log([{"kind": "eval", "step": step, "train_loss": losses["train"], "val_loss": losses["val"],
                    "time": seconds}])
        self.print(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                   + (" (best)" if improved else ""))

    def sample(self, model, cfg):
        if cfg.sample_tokens <= 0:
            return
        from .generate import stream_text
        text = "".join(stream_text(model, "", max_new_tokens=cfg.sample_tokens, temperature=0.8, top_k=200,
                                   seed=cfg.seed))
        self.print("--- sample ---\n" + text.strip("\n") + "\n--------------")

    def plot(self, wait=False):
        """Redraw loss.png from the log: in a background thread during the run (skipped when
        the previous figure is still being drawn), in this thread at the end."""
        if wait:
            self._draw(read_log(self.log_path))
            return
        if self.plot_thread is not None and self.plot_thread.is_alive():
            return
        self.plot_thread = threading.Thread(target=self._draw, daemon=True, args=(read_log(self.log_path),))
        self.plot_thread.start()

    def _draw(self, records):
        """loss.png, or one note when the file system refuses it (a full disk): the run, its
        checkpoints and log go on; the figure is redrawn at the next evaluation."""
        try:
            plot_training(records, self.out / "loss.png", self.title)
        except OSError as exc:
            self.print(f"note: could not write {self.out / 'loss.png'}: {exc.strerror or exc}")


class NullReporter:
    """The other ranks' reporter: they show and write nothing."""

    def banner(self, trainer):
        pass

    @contextmanager
    def progress(self, cfg, start):
        yield

    def truncate_log(self, step):
        pass

    def train(self, records, tokens_per_step):
        pass

    def step_done(self):
        pass

    def evaluation(self, step, losses, improved, seconds):
        pass

    def sample(self, model, cfg):
        pass

    def plot(self, wait=False):
        pass


def _same_corpus(a, b) -> bool:
    """Whether two --data values name the same corpus (None: the bundled one)."""
    if a is None or b is None:
        return a is b
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _int_seed(sequence) -> int:
    """An int seed for backend.seed from a SeedSequence."""
    return int(sequence.generate_state(1)[0])


def _silent(*_):
    pass


class _ProgressLines:
    """The progress bar's stand-in when stderr is a file or a pipe: no carriage-return
    frames, a plain line about every tenth of the run (and at its last step), on a step
    whose loss was just read (a multiple of READ_EVERY), so that no line is blank or
    repeats the last one's figures."""

    def __init__(self, total, start, stream):
        self.total, self.step, self.stream = total, start, stream
        tenth = max(1, (total - start) // 10)
        self.every = READ_EVERY * max(1, int(tenth / READ_EVERY + 0.5))
        self.postfix = ""

    def set_postfix_str(self, text):
        self.postfix = text

    def update(self, n=1):
        self.step += n
        if self.step % self.every == 0 or self.step == self.total:
            self.stream.write(f"step {self.step}/{self.total}" + (f": {self.postfix}" if self.postfix else "") + "\n")
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


def _to_devnull(stream):
    """Point ``stream`` (sys.stdout or sys.stderr) at os.devnull: what is written to it later,
    and Python's flush of it at exit, no longer meet a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):   # no file descriptor (output captured in Python)
        if stream is sys.stdout:
            sys.stdout = open(os.devnull, "w")
        else:
            sys.stderr = open(os.devnull, "w")


def _tell_stderr(line):
    """One line on standard error, which may be the closed pipe too (``2>&1 | head``): then
    there is no one left to tell, and it goes to os.devnull."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except BrokenPipeError:
        _to_devnull(sys.stderr)


def _tqdm_print(message):
    from tqdm import tqdm
    tqdm.write(message)


def lr_schedule(cfg: TrainConfig) -> optim.WarmupCosine:
    """The learning rate at each step of a run of ``cfg``: warm-up, then a cosine to min_lr
    (lr / 10 by default) at lr_decay_iters (max_iters by default)."""
    min_lr = cfg.min_lr if cfg.min_lr is not None else cfg.lr / 10
    decay = cfg.lr_decay_iters if cfg.lr_decay_iters is not None else cfg.max_iters
    return optim.WarmupCosine(cfg.lr, min_lr, cfg.warmup_iters, max(decay, cfg.warmup_iters))


def train(cfg: TrainConfig | None = None, **overrides) -> dict:
    """Train from Python: ``train(TrainConfig(max_iters=100))`` or ``train(max_iters=100)``."""
    from dataclasses import fields, replace
    cfg = cfg or TrainConfig()
    unknown = sorted(set(overrides) - {f.name for f in fields(TrainConfig)})
    if unknown:   # a misspelt setting would otherwise be ignored, and the run made with the default
        raise TypeError(f"train() got unknown settings: {', '.join(unknown)} (TrainConfig's fields are the "
                        f"flags of tinygpt train --help, with _ for -)")
    full = replace(cfg, **overrides)
    # a setting passed here counts as given even at its default value: train(resume=True, lr=2e-3)
    # sets the resumed run's lr back to 2e-3 (only the fields that differ from the defaults tell so)
    return Trainer(full, explicit=explicit_fields(full) | set(overrides)).run()
