"""The ``tinygpt`` command (also ``python -m tinygpt``).

    tinygpt train     [--data PATH] [--preset NAME] [--tokenizer gpt2|char] ... (every TrainConfig field)
    tinygpt generate  [--checkpoint DIR] [--prompt TEXT] [--max-new-tokens N] ...
    tinygpt chat      [--checkpoint DIR] ...
    tinygpt generate|chat --pretrained gpt2     (OpenAI's weights, see tinygpt/hf.py)
    tinygpt export-hf RUN_DIR OUT_DIR           (Hugging Face format)
    tinygpt plot RUN_DIR                        (redraw loss.png from log.jsonl)
    tinygpt explore   [--checkpoint DIR | --pretrained NAME] [--host H] [--port P]   (a local web page)

User mistakes end with one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields

DEFAULT_RUN = "runs/shakespeare"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one line (the lessons in demos/ use it too)."""

    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("tinygpt")
    except PackageNotFoundError:   # run from a checkout that was never installed
        return "(not installed)"


def positive_int(text):
    """An argparse type: a whole number of at least 1 (the lessons' --steps use it too)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _sampling_setting(setting, parse):
    """An argparse type for one sampling setting: parsed here, its rule from
    generate.check_sampling (the one home of those rules)."""
    def convert(text):
        from .generate import SamplingError, check_sampling, check_seed, top_k_from_user
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {'integer' if parse is int else 'number'} {text!r}") from None
        try:
            if setting == "top_k":
                return top_k_from_user(value)          # 0: every token, as in the chat's /topk
            if setting == "seed":
                check_seed(value)
                return value
            check_sampling(**{setting: value})
        except SamplingError as exc:
            raise argparse.ArgumentTypeError(exc.rule) from None
        return value
    return convert


def _port(text):
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be from 1 to 65535, got {value}")
    return value


def _train_arguments(parser):
    """One flag per TrainConfig field: ``max_iters`` is ``--max-iters``."""
    from .config import TrainConfig

    types = {"int": int, "int | None": int, "float": float, "float | None": float, "str": str, "str | None": str}
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = f.metadata.get("help", "")
        if f.type == "bool":
            if default:
                parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                    default=argparse.SUPPRESS, help=f"turn off: {help_text}")
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", default=argparse.SUPPRESS,
                                    help=help_text)
            continue
        shown = "" if default is None else f" (default: {default})"
        kwargs = {"type": types[f.type], "default": argparse.SUPPRESS, "help": help_text + shown,
                  "metavar": f.metadata.get("metavar", f.name.upper())}
        if f.name == "tokenizer":
            kwargs["choices"] = ["gpt2", "char"]
            kwargs.pop("metavar")
        if f.name == "device":
            kwargs["choices"] = ["cpu", "cuda"]
            kwargs.pop("metavar")
        parser.add_argument(flag, dest=f.name, **kwargs)


def _model_arguments(parser):
    """--checkpoint or --pretrained: which model generate, chat and explore use."""
    parser.add_argument("--checkpoint", default=None,
                        help=f"a run folder written by tinygpt train, whose best/ checkpoint is used (latest/ "
                             f"if it has no best/), or one checkpoint folder (default: {DEFAULT_RUN})")
    parser.add_argument("--pretrained", metavar="NAME_OR_PATH", default=None,
                        help="use GPT-2 weights instead: gpt2, gpt2-medium, ..., or a Hugging Face folder "
                             "(not with --checkpoint)")


def _sampling_arguments(parser, max_new_tokens):
    _model_arguments(parser)
    parser.add_argument("--max-new-tokens", type=_sampling_setting("max_new_tokens", int), default=max_new_tokens,
                        help=f"tokens to generate (default: {max_new_tokens})")
    parser.add_argument("--temperature", type=_sampling_setting("temperature", float), default=0.8,
                        help="randomness: 0 = always the most likely token (default: 0.8)")
    parser.add_argument("--top-k", type=_sampling_setting("top_k", int), default=200,
                        help="sample among the k most likely tokens; 0 = every token (default: 200)")
    parser.add_argument("--top-p", type=_sampling_setting("top_p", float), default=None,
                        help="sample among the most likely tokens of total probability p, in (0, 1] (default: off)")
    parser.add_argument("--seed", type=_sampling_setting("seed", int), default=None,
                        help="random seed for reproducible samples (default: none, a new sample each time)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu or cuda (default: cpu)")


def build_parser():
    parser = OneLineParser(prog="tinygpt", description="GPT-2 from scratch: train on text, generate, chat.")
    parser.add_argument("--version", action="version", version=f"tinygpt {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    p = sub.add_parser("train", help="train a GPT on a text corpus (default: the bundled Shakespeare)",
                       description="Train a GPT-2 on text. With no flags: the bundled Shakespeare, GPT-2's "
                                   "tokenizer, the 'baby' model, 300 steps (about 3 minutes on 2 cores). The run "
                                   "folder (default runs/<corpus name>) gets checkpoints, log.jsonl and loss.png.")
    _train_arguments(p)

    p = sub.add_parser("generate", help="continue a prompt with a trained model",
                       description="Print a continuation of --prompt, token by token, from a trained model.")
    _sampling_arguments(p, 200)
    p.add_argument("--prompt", default="", help="text to continue (default: start from scratch)")
    p.add_argument("--num-samples", type=positive_int, default=1, help="independent samples to print (default: 1)")

    p = sub.add_parser("chat", help="talk with a trained model in the terminal",
                       description="A conversation with a trained model. Type /help inside for commands; "
                                   "Ctrl-C stops a reply (or clears the line being typed); Ctrl-D or /quit leaves. "
                                   "Works with a pipe on stdin too.")
    _sampling_arguments(p, 150)

    p = sub.add_parser("plot", help="redraw a run's loss, learning-rate and gradient-norm figure from its log",
                       description="Redraw RUN_DIR/loss.png (train and val loss, learning rate, gradient norm) from RUN_DIR/log.jsonl; "
                                   "works on a run in progress too.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by tinygpt train")

    p = sub.add_parser("explore", help="a local web page showing what a model computes",
                       description="Serve a page (on this machine only, by default) that shows a model's tokens, "
                                   "next-token probabilities with temperature/top-k/top-p, sampling, attention "
                                   "weights, the gradients of one backward pass, and the training curves of a "
                                   "run in progress. It prints its URL: open it in a browser (or pass --open); "
                                   "Ctrl-C stops.")
    _model_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; anything else "
                        "exposes the page, which has no login, to the network)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on (default: 8000)")
    p.add_argument("--open", action="store_true",
                   help="also open the page in a web browser (by default the URL is printed, nothing is opened)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu or cuda (default: cpu)")

    p = sub.add_parser("export-hf", help="write a run's weights in Hugging Face's GPT-2 format",
                       description="Write config.json and model.safetensors that transformers' "
                                   "GPT2LMHeadModel.from_pretrained(OUT_DIR) loads.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by tinygpt train")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write")
    return parser


def _cmd_train(args):
    from .config import TrainConfig
    from .train import Trainer

    given = {k: v for k, v in vars(args).items() if k != "command"}
    cfg = TrainConfig(**given)
    summary = Trainer(cfg, explicit=set(given)).run()
    if "profile" in summary:
        return 0
    if summary["interrupted"]:   # Ctrl-C: 130, as a shell reports a program ended by SIGINT
        return 130 if summary.get("ctrl_c") else 0
    val = summary["val_loss"]
    done = summary["step"] - summary.get("first_step", 0)   # a resumed run counts this command's steps
    print((f"done: {done} steps in {summary['seconds']:.0f} s" if done == summary["step"] else
           f"done: step {summary['step']}, {done} steps in {summary['seconds']:.0f} s")
          + (f", val loss {val:.4f}" if val is not None else "")
          + f"; checkpoint and loss.png in {summary['out']}")
    print(f"next: tinygpt generate --checkpoint {summary['out']} --prompt \"...\"   or   "
          f"tinygpt chat --checkpoint {summary['out']}")
    return 0


def _load(args):
    """The model of --checkpoint (default: the run of tinygpt train) or of --pretrained."""
    from autograd import BackendUnavailable

    from .errors import TinyGPTError
    from .model import GPT2
    if args.pretrained and args.checkpoint:
        raise TinyGPTError(f"--checkpoint {args.checkpoint} and --pretrained {args.pretrained} name two different "
                           "models: give one of them")
    if not args.pretrained:
        args.checkpoint = args.checkpoint or DEFAULT_RUN
    try:
        if args.pretrained:
            return GPT2.from_pretrained(args.pretrained, device=args.device)
        return GPT2.load(args.checkpoint, device=args.device)
    except BackendUnavailable as exc:
        raise TinyGPTError(str(exc)) from None


def _cmd_generate(args):
    from .generate import prompt_as_seen, sample_seed, stream_text

    model = _load(args)
    # bytes of the command line that are not UTF-8 arrive as lone surrogates, which cannot be
    # printed or tokenized: U+FFFD for each, as the corpus reader would refuse them
    prompt = args.prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    prompt = prompt_as_seen(model, prompt)   # warns now, before the echo, of characters left out
    if args.num_samples > 1 and args.temperature == 0:
        print(f"note: --temperature 0 always takes the most likely token: the {args.num_samples} samples will be "
              "the same", file=sys.stderr)
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        sys.stdout.write(prompt)
        seed = sample_seed(args.seed, i)
        for piece in stream_text(model, prompt, max_new_tokens=args.max_new_tokens,
                                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=seed):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0


def _cmd_chat(args):
    from .chat import Chat

    model = _load(args)
    Chat(model, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
         max_new_tokens=args.max_new_tokens, seed=args.seed).run()
    return 0


def _cmd_plot(args):
    from pathlib import Path

    from .errors import TinyGPTError
    from .plots import plot_training, read_log

    run = Path(args.run_dir)
    if run.exists() and not run.is_dir():
        raise TinyGPTError(f"{run} is a file: give the run folder that tinygpt train wrote (its log.jsonl)")
    records = read_log(run / "log.jsonl")
    if not records:
        raise TinyGPTError(f"no training log at {run / 'log.jsonl'}: is {run} a run folder of tinygpt train?")
    out = plot_training(records, run / "loss.png", run.name)
    print(f"wrote {out}")
    return 0


def _cmd_explore(args):
    from .explore.server import Explorer, find_log, serve

    model = _load(args)
    if args.pretrained:
        explorer = Explorer(model, source=args.pretrained)
    else:
        explorer = Explorer(model, source=args.checkpoint, log_path=find_log(args.checkpoint))
    serve(explorer, args.host, args.port, open_browser=args.open)
    return 0


def _cmd_export_hf(args):
    from .checkpoint import resolve_checkpoint
    from .errors import folder_to_write
    from .hf import CHAR_TOKENIZER_FILE, check_export_folder, export
    from .model import GPT2

    folder_to_write(args.out_dir, "OUT_DIR")
    check_export_folder(args.out_dir)
    source = resolve_checkpoint(args.run_dir)
    model = GPT2.load(source)
    out = export(model, args.out_dir)
    step = model.checkpoint_state.get("step")
    print(f"exported {source}" + (f" (step {step})" if step is not None else ""))
    if model.tokenizer is not None and model.tokenizer.kind != "gpt2":
        print(f"note: this model uses a character tokenizer; transformers will load the weights, but GPT-2's "
              f"tokenizer does not match its ids: its characters, in id order, are in {out / CHAR_TOKENIZER_FILE}",
              file=sys.stderr)
    print(f"wrote {out / 'config.json'} and {out / 'model.safetensors'}; load with "
          f"transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})")
    return 0


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:   # named by the command they were given to: "tinygpt train: error: ... (see tinygpt train --help)"
        given = list(sys.argv[1:] if argv is None else argv)
        after_command = args.command in given and extra[0] in given[given.index(args.command) + 1:]
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (commands.choices[args.command] if after_command else parser).error(
            f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        from autograd.nn import StateDictError

        from .errors import TinyGPTError
        command = {"train": _cmd_train, "generate": _cmd_generate, "chat": _cmd_chat,
                   "export-hf": _cmd_export_hf, "plot": _cmd_plot, "explore": _cmd_explore}[args.command]
        return command(args)
    except (TinyGPTError, StateDictError) as exc:   # the latter: weights that do not fit their model
        print(f"tinygpt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except MemoryError as exc:   # NumPy's says how much it asked for: "Unable to allocate 954. GiB for ..."
        fix = ("a smaller --batch-size, --block-size or model (--preset, --n-layer, --n-embd) needs less"
               if args.command == "train" else "the model and its context must fit in this machine's memory")
        print(f"tinygpt {args.command}: error: out of memory ({exc or 'MemoryError'}); {fix}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except UnicodeEncodeError as exc:   # text the terminal's encoding cannot carry; the message names no text
        sys.stderr.write(f"tinygpt {args.command}: error: text that this terminal's encoding cannot carry "
                         f"({type(exc).__name__}: {getattr(exc, 'reason', exc)})\n")
        return 1
    except OSError as exc:   # the file system refused (disk full, permissions): one line, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"tinygpt {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
