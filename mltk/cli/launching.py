"""The torchrun options of every command that trains (train, condense, quantize), defined once.

``@with_launch_options`` adds ``--nproc-per-node``, ``--nnodes`` and the
rendezvous flags to a command and hands it one ``launch`` argument (a
``distributed.LaunchOptions``). ``relaunch_if_asked(launch)`` then re-runs the
very command line the user typed, without those flags, on every rank under
``torch.distributed.run``, and exits with the ranks' code; under torchrun, or
for one process, it does nothing and the command goes on.
"""

from __future__ import annotations

import functools
import inspect
import sys

import typer

from mltk.core import distributed

PANEL = "Distributed (torchrun)"
_KW = inspect.Parameter.KEYWORD_ONLY
_PARAMETERS = [
    inspect.Parameter("nproc_per_node", _KW, annotation=int, default=typer.Option(
        1, "--nproc-per-node", rich_help_panel=PANEL, help="processes on this machine (gloo on CPU, nccl on CUDA)")),
    inspect.Parameter("nnodes", _KW, annotation=str, default=typer.Option(
        "1", "--nnodes", rich_help_panel=PANEL, help="number of machines, or MIN:MAX")),
    inspect.Parameter("node_rank", _KW, annotation=int, default=typer.Option(0, "--node-rank", rich_help_panel=PANEL)),
    inspect.Parameter("rdzv_backend", _KW, annotation=str, default=typer.Option(
        "c10d", "--rdzv-backend", rich_help_panel=PANEL)),
    inspect.Parameter("rdzv_endpoint", _KW, annotation=str, default=typer.Option(
        None, "--rdzv-endpoint", rich_help_panel=PANEL, help="host:port")),
    inspect.Parameter("rdzv_id", _KW, annotation=str, default=typer.Option(None, "--rdzv-id", rich_help_panel=PANEL)),
    inspect.Parameter("master_addr", _KW, annotation=str, default=typer.Option(
        None, "--master-addr", rich_help_panel=PANEL)),
    inspect.Parameter("master_port", _KW, annotation=int, default=typer.Option(
        None, "--master-port", rich_help_panel=PANEL)),
    inspect.Parameter("max_restarts", _KW, annotation=int, default=typer.Option(
        0, "--max-restarts", rich_help_panel=PANEL)),
]
FLAGS = {p.default.param_decls[0]: p.name for p in _PARAMETERS}

# The arguments of this invocation of ``mltk`` (set by the entry point), which a relaunch repeats.
invoked_args: list[str] = []


def with_launch_options(command):
    """Give ``command`` the launcher flags; it receives them as one ``launch: LaunchOptions`` argument."""
    signature = inspect.signature(command)
    own = [p for name, p in signature.parameters.items() if name != "launch"]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        launch = distributed.LaunchOptions(**{p.name: kwargs.pop(p.name) for p in _PARAMETERS})
        return command(*args, launch=launch, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + _PARAMETERS)
    return wrapper


def relaunch_if_asked(launch: distributed.LaunchOptions) -> None:
    """Run this command on every rank under torchrun when the flags ask for several processes."""
    if launch.wanted and not distributed.under_torchrun():
        raise typer.Exit(distributed.launch(launch, worker_args(invoked_args or sys.argv[1:])))


def worker_args(args: list[str]) -> list[str]:
    """``args`` without the launcher flags and their values: what each rank runs."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in FLAGS:
            skip = True
        elif arg.split("=", 1)[0] not in FLAGS:
            kept.append(arg)
    return kept
