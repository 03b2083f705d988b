"""``mltk eval REF --protocol NAME [--min X]``."""

from __future__ import annotations

import time

import typer

from mltk.cli.data_options import DataDirOption, DownloadOption
from mltk.cli.render import FormatOption, emit, key_values, reporter_for
from mltk.core.catalog import EvalRequest, get_protocol
from mltk.core.config import parse_overrides
from mltk.core.errors import ThresholdNotMet, UsageError

EVAL_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def protocol_options(args: list[str]) -> dict:
    """``["--runs", "5", "--model", "convnet", "--fast", "k=v"]`` -> ``{"runs": 5, "model": "convnet", "fast": True, "k": "v"}``."""
    items: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--") and len(token) > 2:
            key, sep, value = token[2:].partition("=")
            if not sep:
                has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
                value = args[i + 1] if has_value else "true"
                i += has_value
            items.append(f"{key.replace('-', '_')}={value}")
        elif "=" in token:
            items.append(token)
        else:
            raise UsageError(f"unexpected argument {token!r}", hint="protocol options are --name VALUE or name=VALUE")
        i += 1
    return parse_overrides(items)


def evaluate(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="artifact: name, name:VERSION, name@ALIAS, or a file/folder path"),
    protocol: str = typer.Option("accuracy", "--protocol", help="evaluation protocol (see `mltk recipes`)"),
    data: str = typer.Option(None, "--data", help="dataset name [default: the one the model was trained on]"),
    data_dir: str = DataDirOption,
    download: bool = DownloadOption,
    split: str = typer.Option("test", "--split", help="test, val or train"),
    batch_size: int = typer.Option(512, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps"),
    minimum: float = typer.Option(None, "--min", help="exit 4 when the metric is below this"),
    metric: str = typer.Option(None, "--metric", help="the metric --min applies to [default: the protocol's primary]"),
    fmt: str = FormatOption,
) -> None:
    """Evaluate an artifact with a protocol; exit 4 when --min is not met.

    Protocol-specific options follow as --name VALUE or name=VALUE (see `mltk recipes`).
    """
    reporter = reporter_for(fmt)
    entry = get_protocol(protocol)
    request = EvalRequest(ref=ref, protocol=protocol, data=data, data_dir=data_dir, download=download, split=split,
                          batch_size=batch_size, device=device, options=protocol_options(ctx.args))
    started = time.perf_counter()
    result = entry.run(request, reporter)
    chosen = metric or result.primary
    if chosen not in result.metrics:
        raise UsageError(f"--metric {chosen!r}: protocol {protocol!r} reports {', '.join(result.metrics)}")
    passed = None if minimum is None else result.metrics[chosen] >= minimum
    out = {"ref": ref, "protocol": protocol, "metrics": result.metrics, "primary_metric": result.primary,
           **result.details, "wall_time_s": round(time.perf_counter() - started, 3)}
    if minimum is not None:
        out["threshold"] = {"metric": chosen, "min": minimum, "passed": passed}

    def human(console):
        rows = list(result.metrics.items()) + [(k, v) for k, v in result.details.items()]
        if minimum is not None:
            rows.append(("threshold", f"{chosen} >= {minimum}: {'passed' if passed else 'NOT MET'}"))
        console.print(key_values(f"mltk eval --protocol {protocol}", rows))

    emit(fmt, out, human, quiet=f"{result.metrics[chosen]:.6g}")
    if passed is False:
        raise ThresholdNotMet(f"{chosen} {result.metrics[chosen]:.4f} is below --min {minimum}")
