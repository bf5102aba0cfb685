"""Configuration as dataclasses: the model's shape (GPTConfig) and a training run
(TrainConfig). Every TrainConfig field is a command-line flag of ``tinygpt train``
(``max_iters`` is ``--max-iters``)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from .errors import TinyGPTError

GPT2_VOCAB = 50257  # 50,000 BPE merges + 256 byte tokens + <|endoftext|>


def _from_dict(cls, d: dict):
    """``cls(**d)`` keeping only ``cls``'s fields (a saved config may hold fields of another version)."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class GPTConfig:
    """The shape of a GPT-2. The defaults are OpenAI's 124M model."""

    vocab_size: int = GPT2_VOCAB
    block_size: int = 1024   # context length (learned positions)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True        # biases in linear layers and LayerNorm, as GPT-2

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise TinyGPTError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise TinyGPTError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise TinyGPTError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def num_parameters(self) -> int:
        """Parameter count with the head tied to the token embedding (as Hugging Face counts)."""
        c, b = self.n_embd, 1 if self.bias else 0
        per_block = (2 * (c + c * b)                       # ln_1, ln_2
                     + 3 * c * c + 3 * c * b + c * c + c * b   # attention: c_attn, c_proj
                     + 4 * c * c + 4 * c * b + 4 * c * c + c * b)  # MLP: c_fc, c_proj
        return self.vocab_size * c + self.block_size * c + self.n_layer * per_block + c + c * b

    def to_dict(self) -> dict:
        return asdict(self)

    from_dict = classmethod(_from_dict)


# Named presets. OpenAI's four sizes (Radford et al. 2019, table 2, with the layer
# counts and widths of the released checkpoints), and small ones for CPUs and tests.
PRESETS = {
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),            # 124M
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),    # 350M
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),     # 774M
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),        # 1558M
    "mini": GPTConfig(n_layer=8, n_head=4, n_embd=768, block_size=512),
    "baby": GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=128),   # the CPU default
    "tiny": GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16),     # tests
}


def preset(name: str, **overrides) -> GPTConfig:
    """A copy of a named preset, with fields replaced by ``overrides`` (None = keep)."""
    if name not in PRESETS:
        raise TinyGPTError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class TrainConfig:
    """One training run. Defaults: the GPT-2 tokenizer on the bundled Shakespeare,
    the ``baby`` preset, sized to finish in a few minutes on a 2-core CPU."""

    data: str | None = field(default=None, metadata={"help": "a .txt file, or a folder of them (subfolders too, hidden ones left out) (default: the bundled Shakespeare)"})
    out: str | None = field(default=None, metadata={"help": "run folder (default: runs/<corpus name>)"})
    preset: str = field(default="baby", metadata={"help": "model size: " + ", ".join(PRESETS)})
    tokenizer: str = field(default="gpt2", metadata={"help": "gpt2 (BPE, 50257 tokens) or char (one token per character)"})
    init_from: str | None = field(default=None, metadata={"help": "fine-tune: start from GPT-2 weights (a name like gpt2, or a Hugging Face folder)"})
    n_layer: int | None = field(default=None, metadata={"help": "override the preset's layer count"})
    n_head: int | None = field(default=None, metadata={"help": "override the preset's head count"})
    n_embd: int | None = field(default=None, metadata={"help": "override the preset's width"})
    block_size: int | None = field(default=None, metadata={"help": "context length (default: the preset's)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout probability"})
    batch_size: int = field(default=12, metadata={"help": "sequences per micro-batch (per process under mpiexec)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_iters: int = field(default=300, metadata={"help": "optimizer steps"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate"})
    min_lr: float | None = field(default=None, metadata={"help": "final learning rate (default: lr / 10)"})
    warmup_iters: int = field(default=50, metadata={"help": "steps of linear warm-up"})
    lr_decay_iters: int | None = field(default=None, metadata={"help": "step where the cosine decay ends (default: max_iters; set it when you plan to --resume with a larger --max-iters, so the schedule does not change)"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW decay of >= 2-D weights"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.99, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the global gradient norm to this (0: off)"})
    eval_interval: int = field(default=100, metadata={"help": "evaluate, sample and save every N steps"})
    eval_iters: int = field(default=10, metadata={"help": "batches per loss estimate"})
    sample_tokens: int = field(default=80, metadata={"help": "tokens of the sample printed at each evaluation (0: none)"})
    seed: int = field(default=1337, metadata={"help": "random seed (weights, batches, dropout)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "float32, or float64 (slow; for exactness checks)"})
    bucket_mb: float = field(default=25.0, metadata={"help": "under mpiexec: gradients are all-reduced in buffers of about this many MB"})
    resume: bool = field(default=False, metadata={"help": "continue the run saved in --out"})
    overwrite: bool = field(default=False, metadata={"help": "replace the run already in --out (its checkpoints, log and plot are deleted once the new run saves its first checkpoint, and put back if it never does); without it, training into a folder that holds a run is refused"})
    profile: int = field(default=0, metadata={"metavar": "N", "help": "only measure: run N steps (after 2 warm-up steps), print where a step's time goes, kernel by kernel, and write nothing (0: train)"})
    progress: bool = field(default=True, metadata={"help": "the progress display: a bar on a terminal; when stderr is a file or a pipe, a plain line about every tenth of the run"})

    def __post_init__(self):
        # each value alone; the flags against each other when a run starts (Trainer: the flags
        # given; resumed_config: merged with a saved run's), so that a saved config that predates
        # a rule can be read, and fixed by a flag on --resume
        self.validate(relations=False)

    def validate(self, relations=None):
        """One clear TinyGPTError naming the flag, for a value no run can use. Called when the
        config is made and again by the trainer (a field may be set after construction).
        ``relations``: also check flags against each other (--min-lr against --lr, the decay's
        end against the warm-up's); by default not for a config that resumes a run, whose
        other values are the run's, known once merged (checkpoint.resumed_config checks then)."""
        for name in ("batch_size", "grad_accum", "eval_iters", "eval_interval"):
            if getattr(self, name) < 1:
                raise TinyGPTError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("max_iters", "warmup_iters", "sample_tokens", "profile", "seed"):
            if getattr(self, name) < 0:
                raise TinyGPTError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.block_size is not None and self.block_size < 1:
            raise TinyGPTError(f"--block-size must be at least 1, got {self.block_size}")
        # NaN passes every comparison below (nan < 0 is False), and inf reaches the weights
        for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip", "bucket_mb"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise TinyGPTError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if not self.lr > 0 or (self.min_lr is not None and self.min_lr < 0):
            raise TinyGPTError(f"--lr must be positive and --min-lr not negative (got {self.lr}, {self.min_lr})")
        if not self.resume if relations is None else relations:
            if self.min_lr is not None and self.min_lr > self.lr:
                raise TinyGPTError(f"--min-lr {self.min_lr} is above --lr {self.lr}: the rate decays from --lr to "
                                   "--min-lr")
            if self.lr_decay_iters is not None and self.lr_decay_iters < self.warmup_iters:
                raise TinyGPTError(f"--lr-decay-iters {self.lr_decay_iters} ends the decay before the warm-up ends "
                                   f"(--warmup-iters {self.warmup_iters}): give at least {self.warmup_iters}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise TinyGPTError(f"--beta1/--beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise TinyGPTError("--weight-decay and --grad-clip must not be negative")
        if self.tokenizer not in ("gpt2", "char"):
            raise TinyGPTError(f"unknown tokenizer {self.tokenizer!r}; choose gpt2 or char")
        if self.dtype not in ("float32", "float64"):
            raise TinyGPTError(f"--dtype must be float32 or float64, got {self.dtype!r}")
        if not self.bucket_mb > 0:
            raise TinyGPTError(f"--bucket-mb must be positive, got {self.bucket_mb}")

    def to_dict(self) -> dict:
        return asdict(self)

    from_dict = classmethod(_from_dict)
