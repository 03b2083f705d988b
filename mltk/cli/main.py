"""The ``mltk`` command: Typer commands over the engines, and one error policy.

Every command maps to an engine or a shared layer; this module only wires
them up and turns errors into one line and an exit code.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from mltk import __version__, load_engines
from mltk.cli import artifacts, evaluate, info, launching, train
from mltk.cli.condense import condense as condense_command
from mltk.cli.detect import detect as detect_command
from mltk.cli.detox import detox_generate as detox_generate_command
from mltk.cli.quantize import quantize as quantize_command
from mltk.cli.talk import talk as talk_command
from mltk.core.errors import EXIT_RUNTIME, MltkError

EPILOG = ("Exit codes: 0 ok, 1 runtime failure, 2 usage or config error, 3 artifact or data missing or corrupt, "
          "4 eval threshold not met, 130 interrupted (checkpoint written). MLTK_DEBUG=1 shows tracebacks.")

# rich_markup_mode=None: help is plain text, so "[default: ...]" and other bracketed words are shown
# as written instead of being taken for rich markup and dropped.
app = typer.Typer(name="mltk", no_args_is_help=True, add_completion=False, epilog=EPILOG, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Train, evaluate, condense, binarize, detoxify and detect, over one artifact "
                       "registry ($MLTK_HOME).")

app.command("train", epilog=EPILOG)(train.train)
app.command("eval", epilog=EPILOG, context_settings=evaluate.EVAL_CONTEXT)(evaluate.evaluate)
app.command("condense", epilog=EPILOG)(condense_command)
app.command("detox-generate", epilog=EPILOG)(detox_generate_command)
app.command("quantize", epilog=EPILOG)(quantize_command)
app.command("detect", epilog=EPILOG)(detect_command)
app.command("talk", epilog=EPILOG)(talk_command)
app.command("ls")(artifacts.ls)
app.command("show")(artifacts.show)
app.command("verify")(artifacts.verify)
app.command("rm")(artifacts.rm)
app.command("export")(artifacts.export)
app.command("import")(artifacts.import_)
app.command("alias")(artifacts.alias)
app.command("recipes")(info.list_recipes)
app.command("cp")(info.cp)
app.command("env")(info.env)
app.add_typer(info.data_app, name="data")


def _version(value: bool) -> None:
    if value:
        print(f"mltk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    pass


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, print errors as one line plus a hint, exit with the documented code.

    Typer itself reports bad flags and missing arguments (exit 2) and exits
    for help, ``--version`` and success; mltk's own errors and bugs reach here.
    """
    debug = bool(os.environ.get("MLTK_DEBUG"))
    launching.invoked_args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Every command then sees every engine's recipes, protocols and artifact kinds.
        load_engines()
        app(args=argv, prog_name="mltk")
    except MltkError as exc:
        if debug:
            traceback.print_exc()
        _print_error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: one line, the traceback on request
        if debug:
            traceback.print_exc()
        _print_error(f"internal error: {type(exc).__name__}: {exc}",
                     "rerun with MLTK_DEBUG=1 for the traceback, and report it with `mltk env`")
        sys.exit(EXIT_RUNTIME)


def _print_error(message: str, hint: str | None) -> None:
    sys.stderr.write(f"error: {message}" + (f"; {hint}" if hint else "") + "\n")
    sys.stderr.flush()
