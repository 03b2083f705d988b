"""``mltk eval REF --protocol NAME [--min X]``."""

from __future__ import annotations

import time

import typer

from mltk.cli.render import FormatOption, emit, key_values, reporter_for
from mltk.core.catalog import EvalRequest, get_protocol
from mltk.core.config import parse_overrides
from mltk.core.errors import ThresholdNotMet, UsageError


def evaluate(
    ref: str = typer.Argument(..., help="artifact: name, name:VERSION, name@ALIAS, or a file/folder path"),
    options: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...", help="protocol-specific options"),
    protocol: str = typer.Option("accuracy", "--protocol", help="evaluation protocol (see `mltk recipes`)"),
    data: str = typer.Option(None, "--data", help="dataset name [default: the one the model was trained on]"),
    data_dir: str = typer.Option(None, "--data-dir", help="where the dataset files are [default: $MLTK_DATA]"),
    split: str = typer.Option("test", "--split", help="test, val or train"),
    batch_size: int = typer.Option(512, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps"),
    minimum: float = typer.Option(None, "--min", help="exit 4 when the metric is below this"),
    metric: str = typer.Option(None, "--metric", help="the metric --min applies to [default: the protocol's primary]"),
    fmt: str = FormatOption,
) -> None:
    """Evaluate an artifact with a protocol; exit 4 when --min is not met."""
    reporter = reporter_for(fmt)
    entry = get_protocol(protocol)
    request = EvalRequest(ref=ref, data=data, data_dir=data_dir, split=split, batch_size=batch_size,
                          device=device, options=parse_overrides(list(options or [])))
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
