"""`tuneboard ...`: parse the command line, call one engine function, print, exit with a code.

The parsers (the flags users' scripts rely on) live here; each verb's body lives next to the
code it runs, imported only when that verb is used, so `tuneboard --help` stays instant.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import functools
import os
import re
import sys
import traceback
from importlib import import_module

from .config import ConfigError
from .messages import TuneboardError, error_key, languages, message, normalize_lang, set_language

# verb -> "module:function"; each function takes the parsed args and returns an exit code
COMMANDS = {
    "train": "engine.train:cmd_train",
    "check": "engine.data.cli:cmd_check",
    "estimate": "engine.estimate:cmd_estimate",
    "chat": "engine.generate:cmd_chat",
    "eval": "engine.evaluate:cmd_eval",
    "export": "engine.export:cmd_export",
}


def _positive(kind: type):
    """An argparse type for a number above 0 (`--gpu-memory 0` is no GPU to fit, not the default)."""

    def parse(text: str):
        value = kind(text)
        if not 0 < value < float("inf"):  # also NaN
            raise argparse.ArgumentTypeError(message("cli.above_zero", {"value": text}))
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


# argparse's own messages (Python 3.11-3.13 spell them so) -> a message key and its parameters, so that a
# mistyped flag is said in the reader's language too; anything else is said as argparse wrote it
_ARGPARSE = [
    (re.compile(r"the following arguments are required: (?P<names>.+)"), "cli.arg_required"),
    (re.compile(r"unrecognized arguments: (?P<args>.+)"), "cli.arg_unknown"),
    (re.compile(r"argument (?P<arg>\S+?): invalid choice: (?P<value>.+?) \(choose from (?P<choices>.+)\)"),
     "cli.arg_choice"),
    (re.compile(r"argument (?P<arg>\S+?): invalid (?P<kind>\w+) value: (?P<value>.+)"), "cli.arg_type"),
    (re.compile(r"argument (?P<arg>\S+?): expected (?:one|at least one) argument"), "cli.arg_needs_value"),
    (re.compile(r"ambiguous option: (?P<arg>\S+) could match (?P<choices>.+)"), "cli.arg_ambiguous"),
    # any other of a flag's problems: said by our own parse functions, in the language, after argparse's English
    # "argument"
    (re.compile(r"argument (?P<arg>\S+?): (?P<text>.+)", re.S), "cli.arg_said"),
]
_KINDS = {"int": "type.integer", "float": "type.number"}


class _Parser(argparse.ArgumentParser):
    """argparse, saying its errors in the language `--lang` or $TUNEBOARD_LANG names, with a close verb or
    choice suggested for a typo (`tuneboard trian`)."""

    def error(self, msg: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: {message('severity.error')}: {argparse_message(msg)}\n")


def argparse_message(msg: str) -> str:
    for pattern, key in _ARGPARSE:
        if m := pattern.fullmatch(msg):
            params = m.groupdict()
            if "kind" in params:
                if params["kind"] not in _KINDS:
                    return msg  # a type of ours, whose name says nothing to a reader
                params["kind"] = message(_KINDS[params["kind"]])
            text = message(key, params)
            if key == "cli.arg_choice":
                choices = re.findall(r"'([^']*)'", params["choices"])
                if close := difflib.get_close_matches(params["value"].strip("'"), choices, n=1):
                    text += "; " + message("cli.did_you_mean", {"value": close[0]})
            return text
    return msg


def _asked_language(argv: list[str]) -> str | None:
    """The language `--lang X` / `--lang=X` names anywhere on the line, before argparse has read it."""
    for i, arg in enumerate(argv):
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1]
    return os.environ.get("TUNEBOARD_LANG")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tuneboard",
        description="Codeless fine-tuning of LLMs. With no command, serves the board in your browser.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --auth)")
    p.add_argument("--port", type=int, default=7860, help="port to serve the board on (default 7860)")
    p.add_argument("--workdir", default=None, help="where runs and cached models live ($TUNEBOARD_HOME or ./tuneboard-work)")
    p.add_argument("--auth", default=None, help="USER:PASSWORD required on the page (or $TUNEBOARD_AUTH)")
    p.add_argument("--lang", default=None, help="page language: en, ko, zh, ja, ru (default: the browser's)")
    p.add_argument("--share", action="store_true", help="open a public Gradio link (needs --auth)")
    p.add_argument("--debug", action="store_true", help="print full tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    common = _Parser(add_help=False)  # every verb: its messages' language
    common.add_argument("--lang", dest="verb_lang", default=None,
                        help="language of messages: en, ko, zh, ja, ru (default: $TUNEBOARD_LANG, else en)")
    sub.add_parser = functools.partial(sub.add_parser, parents=[common])

    t = sub.add_parser("train", help="train from a YAML config, in the foreground")
    t.add_argument("config", help="a RunConfig YAML (see assets/configs/)")
    t.add_argument("--data", action="append", default=None, metavar="FILE", help="replace the config's datasets (repeatable)")
    t.add_argument("--workdir", default=None, help="runs go to WORKDIR/runs/<run-id>/")
    t.add_argument("--column", action="append", default=[], metavar="ours=theirs",
                   help="map a column of the data (of --data's files, else of the config's datasets); repeatable, "
                        "or several at once: instruction=question,output=response")
    t.add_argument("--format", default=None, help="force the data's format: alpaca, sharegpt, messages, "
                                                  "prompt_completion, preference, unpaired (KTO), text")
    t.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    t.add_argument("--set", action="append", default=[], metavar="a.b=v", help="override a config field by its dotted path")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--debug", action="store_true", help="print full tracebacks")

    c = sub.add_parser("check", help="check data files row by row before training")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--format", default="auto", help="force a format: alpaca, sharegpt, messages, prompt_completion, preference, unpaired (KTO), text")
    c.add_argument("--model", default=None, help="tokenizer for token counts (default: the demo tokenizer)")
    c.add_argument("--stage", choices=["sft", "dpo", "kto", "orpo", "simpo", "pt"], default=None,
                   help="check as this stage trains: what it refuses (a text file for SFT, no pairs for DPO), "
                        "takes in another form (a chat file for pretraining) and the preview as it trains; "
                        "kto, orpo, simpo: the preference stage with that dpo.method")
    c.add_argument("--max-length", type=int, default=1024, help="cutoff in tokens for the length warning")
    c.add_argument("--column", action="append", default=[], metavar="ours=theirs",
                   help="map a column name (repeatable, or several at once: instruction=question,output=response)")
    c.add_argument("--json", action="store_true", help="print one JSON document")
    c.add_argument("--debug", action="store_true", help="print full tracebacks")

    e = sub.add_parser("estimate", help="estimate the whole run's GPU memory from config.json alone")
    e.add_argument("config", help="a RunConfig YAML (see assets/configs/)")
    e.add_argument("--set", action="append", default=[], metavar="a.b=v", help="override a config field by its dotted path")
    e.add_argument("--gpu-memory", type=_positive(float), default=None, metavar="GB", help="GPU memory to compare against (default: the local GPU, else 24)")
    e.add_argument("--json", action="store_true", help="print one JSON document")
    e.add_argument("--workdir", default=None, help="where the demo model is built (for its config.json)")
    e.add_argument("--debug", action="store_true", help="print full tracebacks")

    ch = sub.add_parser("chat", help="chat with a run's result in the terminal")
    ch.add_argument("run", help="a run folder or run id")
    ch.add_argument("--prompt", default=None, help="answer this once on stdout and exit")
    ch.add_argument("--system", default=None, help="system prompt")
    ch.add_argument("--seed", type=int, default=None, help="same seed, settings and prompt: same answer (negative: draw one)")
    ch.add_argument("--temperature", type=float, default=None, help="0 means greedy")
    ch.add_argument("--top-k", type=int, default=None, help="sample from the K likeliest tokens (0: off)")
    ch.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass")
    ch.add_argument("--min-p", type=float, default=None, help="drop tokens below MIN_P times the likeliest's probability")
    ch.add_argument("--repetition-penalty", type=float, default=None, help="above 1 discourages repeats (1: off)")
    ch.add_argument("--num-beams", type=int, default=None, help="beam search width (above 1: no sampling)")
    ch.add_argument("--num-return-sequences", type=int, default=None, help="answers per prompt")
    ch.add_argument("--max-new-tokens", type=int, default=None, help="upper bound on the answer's length")
    ch.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    ch.add_argument("--base", action="store_true", help="answer with the adapter disabled (the base model)")
    ch.add_argument("--json", action="store_true", help="print the answer with its seed and settings as JSON")
    ch.add_argument("--workdir", default=None, help="where RUN ids are looked up ($TUNEBOARD_HOME or ./tuneboard-work)")
    ch.add_argument("--debug", action="store_true", help="print full tracebacks")

    ev = sub.add_parser("eval", help="perplexity and BLEU/ROUGE of a run")
    ev.add_argument("run", help="a run folder or run id")
    ev.add_argument("--data", default=None, metavar="FILE", help="evaluate on this file (default: the run's validation split)")
    ev.add_argument("--column", action="append", default=[], metavar="ours=theirs",
                    help="map a column of --data's file (repeatable, or several at once: instruction=question,output=response)")
    ev.add_argument("--format", default=None, help="force --data's format: alpaca, sharegpt, messages, "
                                                   "prompt_completion, preference, unpaired (KTO), text")
    ev.add_argument("--set", action="append", default=[], metavar="data.x=v",
                    help="read the data otherwise than the run did: data.skip_bad_rows=true, data.max_length=N, ...")
    ev.add_argument("--max-samples", type=_positive(int), default=50, help="evaluate at most N rows (default 50)")
    ev.add_argument("--max-new-tokens", type=int, default=64, help="length of the answers BLEU and ROUGE score (default 64)")
    ev.add_argument("--json", action="store_true", help="print one JSON document")
    ev.add_argument("--workdir", default=None, help="where RUN ids are looked up ($TUNEBOARD_HOME or ./tuneboard-work)")
    ev.add_argument("--debug", action="store_true", help="print full tracebacks")

    ex = sub.add_parser("export", help="export a run's adapter, or merge it into the base model")
    ex.add_argument("run", help="a run folder or run id")
    ex.add_argument("out", help="output folder")
    ex.add_argument("--merge", action="store_true", help="merge the adapter into its base and save safetensors (bf16/fp16 on a GPU, fp32 on a CPU; a 4-bit base in bf16)")
    ex.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT (only once the new one is done)")
    ex.add_argument("--push-to-hub", default=None, metavar="REPO", help="also upload (token from $HF_TOKEN, never saved)")
    ex.add_argument("--workdir", default=None, help="where RUN ids are looked up ($TUNEBOARD_HOME or ./tuneboard-work)")
    ex.add_argument("--debug", action="store_true", help="print full tracebacks")
    for verb in sub.choices.values():  # `tuneboard --workdir D train ...`: a verb's own unset flag must not
        for action in verb._actions:  # overwrite what was given before it (argparse lets its default win)
            if action.dest in ("workdir", "debug"):
                action.default = argparse.SUPPRESS
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    set_language(_asked_language(argv))  # for argparse's own errors; a bad name is said below, once parsed
    try:
        args = build_parser().parse_args(argv)
    finally:
        set_language(None)
    if args.command is None:  # the board speaks each browser's language instead
        return _main(args)
    asked = args.verb_lang or args.lang or os.environ.get("TUNEBOARD_LANG")
    set_language(asked)
    if asked and normalize_lang(asked) is None:  # said in English: the one language every reader here gets
        print(f"note: no messages in {asked!r}; English instead (there are: {', '.join(languages())})", file=sys.stderr)
    try:
        return _main(args)
    finally:
        set_language(None)


def _main(args) -> int:
    debug = getattr(args, "debug", False)
    try:
        if args.command is None:
            from board.app import main as serve

            return serve(args) or 0
        module, func = COMMANDS[args.command].split(":")
        rc = getattr(import_module(module), func)(args) or 0
        sys.stdout.flush()  # here, where a reader that left is caught, not at the interpreter's exit
        return rc
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if not _stdout_gone():  # another pipe (a data loader's worker, ...): an error like any other
            return _unexpected(e, debug)
        # `tuneboard chat ... | head`: the reader has gone, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor is the exit's flush of stdout
        return 141  # what a shell reports for a process ended by SIGPIPE
    except Exception as e:
        return report(e, debug)


def report(e: Exception, debug: bool = False) -> int:
    """Say what went wrong in one line on stderr (the traceback too with --debug); the exit code: 2 for bad
    input (a config, a file, a path that can't be used as asked), 1 for a failure."""
    if isinstance(e, (TuneboardError, ConfigError)):
        if debug:
            traceback.print_exception(e)
        text = message(e.key, e.params) if isinstance(e, ConfigError) else str(e)
        print(f"{message('severity.error')}: {text}", file=sys.stderr)
        return 2
    if isinstance(e, FileNotFoundError):
        if debug:
            traceback.print_exception(e)
        print(f"{message('severity.error')}: {message('error.file_not_found', {'path': e.filename or e})}", file=sys.stderr)
        return 2
    if isinstance(e, OSError) and e.filename is not None and e.errno in PATH_ERRORS:
        # a path given that can't be used as asked: a folder for a file, a read-only disk, ...
        if debug:
            traceback.print_exception(e)
        reason = message(PATH_ERRORS[e.errno])
        print(f"{message('severity.error')}: {message('error.path', {'path': e.filename, 'reason': reason})}",
              file=sys.stderr)
        return 2
    return _unexpected(e, debug)  # the last line of defence: one clear line, the traceback on --debug


PATH_ERRORS = {errno.EISDIR: "error.path.is_folder", errno.ENOTDIR: "error.path.not_folder",
               errno.EACCES: "error.path.denied", errno.EPERM: "error.path.denied", errno.EROFS: "error.path.read_only",
               errno.ENOSPC: "error.path.no_space"}


def _unexpected(e: Exception, debug: bool) -> int:
    if debug or os.environ.get("TUNEBOARD_DEBUG"):
        traceback.print_exception(e)
    key, params = error_key(e, "")
    if key == "error.oom":
        print(f"{message('severity.error')}: {message(key, params)}", file=sys.stderr)
    else:
        print(f"{message('severity.error')}: {type(e).__name__}: {e} (run with --debug for the traceback)",
              file=sys.stderr)
    return 1


def _stdout_gone() -> bool:
    """stdout is a pipe whose reader has closed it (poll reports an error on its end)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or stdout is not a file
        return False


if __name__ == "__main__":
    sys.exit(main())
