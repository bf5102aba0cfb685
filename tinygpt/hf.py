"""Real GPT-2 weights: load OpenAI's GPT-2 from the Hugging Face format, export back.

Where the weights come from (``from_pretrained(name_or_path)`` tries in this order):
  1. a local folder in Hugging Face layout: ``config.json`` and ``model.safetensors``
     (or ``pytorch_model.bin``, read with ``torch.load(weights_only=True)`` when PyTorch
     is installed: never an unrestricted pickle);
  2. a folder of the Hugging Face cache layout (``models--gpt2`` with ``refs/`` and
     ``snapshots/<revision>/``);
  3. a name (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``, ``distilgpt2``, or any
     ``owner/name``) found in the cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or
     ``~/.cache/huggingface/hub``);
  4. the same name downloaded with ``huggingface_hub`` (the optional extra ``hf``), when
     that package is installed and the network answers.

Layout: Hugging Face's GPT-2 stores the attention and MLP weights in "Conv1D" modules,
(in_features, out_features): the transpose of tinygpt's (out, in). The output head
``lm_head.weight`` is the token embedding (tied), so it is never loaded twice. The
original OpenAI checkpoints name their tensors without the ``transformer.`` prefix.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from autograd import backend
from autograd.install import install_hint

from .checkpoint import has_hf_weights
from .config import GPT2_VOCAB, GPTConfig
from .errors import TinyGPTError
from .model import GPT2


HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
KNOWN_NAMES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
               "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl",
               "distilgpt2": "distilbert/distilgpt2"}


# ----------------------------------------------------------------------------- names and layout
def _tinygpt_name(hf_name: str):
    """tinygpt's parameter name for a Hugging Face tensor name, or None to skip it."""
    if hf_name == "lm_head.weight" or hf_name.endswith((".attn.bias", ".attn.masked_bias")):
        return None  # the tied head; the old causal-mask buffers
    return hf_name if hf_name.startswith("transformer.") else "transformer." + hf_name


def from_hf_state_dict(hf_state: dict) -> dict:
    """Hugging Face GPT-2 arrays (host NumPy) -> tinygpt parameter arrays."""
    out = {}
    for hf_name, value in hf_state.items():
        name = _tinygpt_name(hf_name)
        if name is not None:
            out[name] = np.ascontiguousarray(value.T) if name.endswith(HF_TRANSPOSED) else value
    return out


def to_hf_state_dict(state: dict, with_head=True) -> dict:
    """tinygpt parameter arrays -> Hugging Face GPT2LMHeadModel arrays."""
    out = {}
    for name, value in state.items():
        value = backend.to_numpy(value)
        out[name] = np.ascontiguousarray(value.T) if name.endswith(HF_TRANSPOSED) else np.ascontiguousarray(value)
    if with_head:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


# config.json fields that change what a GPT-2 computes, with the values of OpenAI's GPT-2 (and
# transformers' defaults), which tinygpt implements; a model with another value is refused
# rather than run with other logits
GPT2_ONLY = {"layer_norm_epsilon": 1e-5, "tie_word_embeddings": True, "scale_attn_weights": True,
             "scale_attn_by_inverse_layer_idx": False}


def config_from_hf(hf: dict, where="config.json") -> GPTConfig:
    """GPTConfig from a Hugging Face GPT-2 config.json (``where`` names it in errors)."""
    if not isinstance(hf, dict):
        raise TinyGPTError(f"{where} does not hold a Hugging Face config (a JSON object)")
    if hf.get("model_type", "gpt2") != "gpt2":
        raise TinyGPTError(f"not a GPT-2 model (model_type {hf.get('model_type')!r})")
    sizes = {}
    for key in ("vocab_size", "n_layer", "n_head", "n_embd"):
        value = hf.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TinyGPTError(f"{where}: {key} is {'missing' if value is None else repr(value)}, "
                               "expected a positive integer")
        sizes[key] = value
    block = hf.get("n_positions", hf.get("n_ctx", 1024))
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise TinyGPTError(f"{where}: n_positions is {block!r}, expected a positive integer")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise TinyGPTError(f"this model uses the activation {act!r}; tinygpt implements GPT-2's tanh GELU only")
    if hf.get("n_inner") not in (None, 4 * sizes["n_embd"]):
        raise TinyGPTError(f"this model's MLP width n_inner={hf['n_inner']} is not 4 x n_embd")
    for key, gpt2 in GPT2_ONLY.items():
        value = hf.get(key, gpt2)
        if value != gpt2 and not (isinstance(gpt2, float) and isinstance(value, (int, float))
                                  and math.isclose(value, gpt2, rel_tol=1e-6)):
            raise TinyGPTError(f"this model sets {key}={value!r}; tinygpt implements GPT-2's {key}={gpt2!r} only")
    return GPTConfig(vocab_size=sizes["vocab_size"], block_size=block, n_layer=sizes["n_layer"],
                     n_head=sizes["n_head"], n_embd=sizes["n_embd"], dropout=0.0, bias=True)


def config_to_hf(cfg: GPTConfig, gpt2_tokens: bool = True) -> dict:
    """A Hugging Face GPT-2 config.json for a GPTConfig. ``gpt2_tokens``: the ids are GPT-2's
    BPE tokens, so <|endoftext|> (50256) is the first and last token; otherwise (a character
    model) there is none, and transformers warns about an id outside a smaller vocabulary."""
    eot = GPT2_VOCAB - 1 if gpt2_tokens and cfg.vocab_size >= GPT2_VOCAB else None
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": cfg.vocab_size,
            "n_positions": cfg.block_size, "n_ctx": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
            "n_head": cfg.n_head, "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": cfg.dropout,
            "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout, "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
            "bos_token_id": eot, "eos_token_id": eot, "tie_word_embeddings": True}


# ----------------------------------------------------------------------------- finding the files
def _hub_cache_dirs():
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return dirs


def _snapshot(repo_folder: Path):
    """The snapshot folder of a cache entry ``models--owner--name``: refs/main's, else the newest."""
    snapshots = repo_folder / "snapshots"
    ref = repo_folder / "refs" / "main"
    if ref.is_file():
        candidate = snapshots / ref.read_text().strip()
        if has_hf_weights(candidate):
            return candidate
        if candidate.is_dir():   # main's own snapshot, without weights here (a config or tokenizer cached
            return None          # alone, or shards): not an older snapshot in its place

    if snapshots.is_dir():
        found = sorted((p for p in snapshots.iterdir() if has_hf_weights(p)), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


def _weights_found(folder: Path) -> str:
    """What a folder that cannot be read as a GPT-2 holds instead, as the end of a sentence."""
    if any(folder.glob("*.index.json")):
        return ("its weights in shards (*.index.json), which tinygpt does not read; save the model in one file "
                "(save_pretrained(..., max_shard_size='100GB'))")
    return "no config.json with model.safetensors or pytorch_model.bin"


def _repo_ids(name: str):
    ids = [name]
    if name in KNOWN_NAMES:
        ids.append(KNOWN_NAMES[name])
    return ids


def resolve(name_or_path) -> Path:
    """The folder holding config.json and the weights for ``name_or_path``."""
    path = Path(str(name_or_path)).expanduser()
    if path.exists():
        if has_hf_weights(path):
            return path
        snap = _snapshot(path)
        if snap is not None:
            return snap
        ref = path / "refs" / "main"
        if ref.is_file() and (path / "snapshots" / ref.read_text().strip()).is_dir():
            main = path / "snapshots" / ref.read_text().strip()
            raise TinyGPTError(f"{main} (the snapshot refs/main names) has {_weights_found(main)}")
        raise TinyGPTError(f"{path} has {_weights_found(path)}")
    name = str(name_or_path)
    for cache in _hub_cache_dirs():
        for repo_id in _repo_ids(name):
            snap = _snapshot(cache / ("models--" + repo_id.replace("/", "--")))
            if snap is not None:
                return snap
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        snapshot_download = None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")   # as huggingface_hub reads it
    if snapshot_download is not None and not offline:
        last_error = None
        for repo_id in _repo_ids(name)[::-1]:
            try:
                got = Path(snapshot_download(repo_id, allow_patterns=["config.json", "model.safetensors"]))
            except Exception as exc:  # no network, unknown name, ...
                last_error = exc
                continue
            if not has_hf_weights(got):   # a repository with .bin or sharded weights only
                raise TinyGPTError(f"{repo_id} has no single model.safetensors, the only weights tinygpt downloads; "
                                   "download the model yourself and pass its folder")
            return got
        reason = f"the download failed ({type(last_error).__name__})"
    elif snapshot_download is None:
        reason = f"huggingface_hub, which downloads, is not installed ({install_hint('hf')})"
    else:
        reason = "HF_HUB_OFFLINE is set, so nothing is downloaded"
    cache = _hub_cache_dirs()[-1]
    raise TinyGPTError(f"no weights for {name!r}: not a folder, not in the Hugging Face cache, and {reason}; put "
                       f"config.json and model.safetensors in a folder and pass its path, or place the cache "
                       f"under {cache}/models--{_repo_ids(name)[-1].replace('/', '--')}")


# ----------------------------------------------------------------------------- loading and saving
def _read_weights(folder: Path):
    """Yield (hf_name, host array) one tensor at a time (safetensors reads are memory-mapped)."""
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors import safe_open
        def damaged(exc):   # safetensors' own error type: a truncated or foreign file
            return TinyGPTError(f"cannot read {st}: {exc}")
        try:
            f = safe_open(str(st), framework="numpy")
        except Exception as exc:  # noqa: BLE001
            raise damaged(exc) from None
        with f:
            for key in f.keys():  # noqa: SIM118  (a safe_open handle, not a dict)
                try:
                    value = f.get_tensor(key)
                except Exception as exc:  # noqa: BLE001
                    if "bfloat16" in str(exc):   # NumPy has no bfloat16: a sound file, a type it cannot hold
                        raise TinyGPTError(f"{st} holds bfloat16 tensors, which NumPy cannot read; save the model "
                                           "in float32 or float16 (model.to(torch.float32).save_pretrained(...))"
                                           ) from None
                    raise damaged(exc) from None
                yield key, value
        return
    try:
        import torch
    except ImportError:
        raise TinyGPTError(f"{folder} has only pytorch_model.bin, which needs PyTorch to read "
                           "(pip install torch==2.13.0), or convert it to model.safetensors") from None
    path = folder / "pytorch_model.bin"
    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:   # the format before PyTorch 1.6 cannot be memory-mapped
            if "_use_new_zipfile_serialization" not in str(exc):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch's errors for a damaged or foreign file vary by version)
        raise TinyGPTError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(state, dict):
        raise TinyGPTError(f"{path} does not hold a dictionary of tensors")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TinyGPTError(f"{path}: {key} is not a tensor")
        yield key, value.float().numpy() if value.dtype != torch.float32 else value.numpy()


def _exported_tokenizer(folder: Path, config: GPTConfig):
    """The character tokenizer export() wrote beside a character model's weights, or None."""
    path = folder / CHAR_TOKENIZER_FILE
    if not path.is_file():
        return None
    from .tokenizer import tokenizer_from_dict
    try:
        tokenizer = tokenizer_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TinyGPTError(f"cannot read {path}: {exc}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise TinyGPTError(f"{path} has {tokenizer.vocab_size} tokens, the model {config.vocab_size}")
    return tokenizer


def from_pretrained(name_or_path, device=None):
    """A GPT2 with the weights of a Hugging Face GPT-2 checkpoint (see the module docstring)."""

    if device is not None:
        backend.use_backend(device)
    folder = resolve(name_or_path)
    try:
        hf_config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TinyGPTError(f"cannot read {folder / 'config.json'}: {exc}") from None
    config = config_from_hf(hf_config, where=str(folder / "config.json"))
    model = GPT2(config, tokenizer=_exported_tokenizer(folder, config), init=False)   # else GPT-2's, for its vocabulary
    params = dict(model.named_parameters())
    loaded, head = set(), None
    for hf_name, value in _read_weights(folder):
        if hf_name == "lm_head.weight":
            head = np.array(value)          # compared with the token table once that is read
        name = _tinygpt_name(hf_name)
        if name is None:
            continue
        if name not in params:
            raise TinyGPTError(f"unexpected tensor {hf_name} in {folder}")
        if name.endswith(HF_TRANSPOSED):
            value = value.T
        p = params[name]
        if tuple(value.shape) != tuple(p.shape):
            raise TinyGPTError(f"{hf_name} has shape {tuple(value.shape)}, expected {tuple(p.shape)}")
        p.data[...] = backend.asarray(value, dtype=p.dtype)   # one tensor at a time: little beyond one copy
        loaded.add(name)
    missing = [n for n in params if n not in loaded]
    if missing:
        raise TinyGPTError(f"{folder} lacks tensors: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    wte = backend.to_numpy(params["transformer.wte.weight"].data)
    if head is not None and not np.array_equal(head.astype(wte.dtype), wte):
        # transformers then unties them and uses this head: its logits, not GPT-2's tied ones
        raise TinyGPTError(f"{folder}'s lm_head.weight is not its token table (wte): an untied head, which "
                           "GPT-2 (and tinygpt) does not have")
    model.eval()
    model.pretrained_from = str(folder)
    return model


CHAR_TOKENIZER_FILE = "tinygpt_tokenizer.json"   # a character model's alphabet, beside its export


def _zero_biases(config: GPTConfig, dtype) -> dict:
    """The biases GPT2LMHeadModel has and a model of GPTConfig(bias=False) does not, as zeros."""
    c = config.n_embd
    sizes = {"ln_1.bias": c, "attn.c_attn.bias": 3 * c, "attn.c_proj.bias": c, "ln_2.bias": c,
             "mlp.c_fc.bias": 4 * c, "mlp.c_proj.bias": c}
    out = {f"transformer.h.{i}.{name}": np.zeros(n, dtype=dtype)
           for i in range(config.n_layer) for name, n in sizes.items()}
    out["transformer.ln_f.bias"] = np.zeros(c, dtype=dtype)
    return out


def check_export_folder(out_dir) -> Path:
    """``out_dir`` as a Path, refused in one line if it holds a tinygpt run or checkpoint
    (the export would overwrite its weights), lies inside a checkpoint, or is named like a
    checkpoint of the run folder it is in (the run's next save replaces those, and the
    export with them)."""
    from .checkpoint import STATE_FILE, checkpoint_conflict, describe_run
    out = Path(out_dir)
    if (out / STATE_FILE).exists() or describe_run(out) is not None:
        kind = "checkpoint" if (out / STATE_FILE).exists() else "run"
        raise TinyGPTError(f"{out} holds a tinygpt {kind}, whose weights the export would overwrite; "
                           "export into another folder")
    conflict = checkpoint_conflict(out)
    if conflict:
        raise TinyGPTError(f"{out} {conflict}; export into another folder")
    return out


def export(model, out_dir):
    """Write ``config.json`` and ``model.safetensors`` that transformers' GPT2LMHeadModel
    loads with no missing or unexpected keys (the tied head is left out, as
    ``save_pretrained`` does). A model whose tokens are not GPT-2's (a character model) also
    gets its tokenizer, as tinygpt saves it, in ``tinygpt_tokenizer.json``: transformers has
    no use for it, but the ids mean nothing without it. A folder holding a tinygpt run or
    checkpoint is refused: its model.safetensors is tinygpt's layout, not this one."""
    from .checkpoint import save_arrays
    out = check_export_folder(out_dir)
    gpt2_tokens = model.tokenizer is None or model.tokenizer.kind == "gpt2"
    out.mkdir(parents=True, exist_ok=True)
    tensors = to_hf_state_dict(model.state_dict(), with_head=False)
    if not model.config.bias:   # GPT-2 has every bias: zeros compute what none does
        tensors.update(_zero_biases(model.config, tensors["transformer.wte.weight"].dtype))
    # every file written under a temporary name first, then the three renamed into place: an
    # export cut short (a full disk, Ctrl-C) over an earlier one leaves that one's weights with
    # its own config, not this model's weights with the other's config
    written = {}
    try:
        written["model.safetensors"] = out / "model.safetensors.tmp"
        save_arrays(tensors, written["model.safetensors"], metadata={"format": "pt"})
        written["config.json"] = out / "config.json.tmp"
        written["config.json"].write_text(json.dumps(config_to_hf(model.config, gpt2_tokens), indent=2))
        if not gpt2_tokens:
            written[CHAR_TOKENIZER_FILE] = out / (CHAR_TOKENIZER_FILE + ".tmp")
            written[CHAR_TOKENIZER_FILE].write_text(json.dumps(model.tokenizer.to_dict(), ensure_ascii=False))
    except BaseException:
        for tmp in written.values():
            tmp.unlink(missing_ok=True)
        raise
    for name, tmp in written.items():
        os.replace(tmp, out / name)
    if gpt2_tokens:   # an earlier export of a character model there: its alphabet is not this model's
        (out / CHAR_TOKENIZER_FILE).unlink(missing_ok=True)
    return out
