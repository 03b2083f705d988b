"""``mltk eval REF --protocol fscil``: accuracy after each session, replayed from the artifact.

The artifact holds the base-session weights of the layers sessions train, so
the protocol rebuilds the state after the base session, replays every
incremental session exactly as training ran it (same seeds and steps), and
scores after each on the test images of every class seen so far: accuracy,
base-class and novel-class accuracy, then the mean over sessions, the last
session and the performance drop (first minus last). ``replay_matches_training``
says whether the replay ended on the artifact's own weights and prototypes
(bit for bit; expect it on the device that trained it). ``--replay false``
scores only the stored final network after the last session (last-session metrics only).
"""

from __future__ import annotations

import dataclasses

import torch

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.config import build
from mltk.core.console import Reporter
from mltk.core.device import amp_dtype, autocast, resolve_device
from mltk.core.optimization import Optimization
from mltk.core.seeding import seed_step
from mltk.data.batches import steps_per_epoch
from mltk.engines.fscil.artifact import load_fscil
from mltk.engines.fscil.config import FscilConfig
from mltk.engines.fscil.sessions_runner import (
    SessionRunner,
    load_fscil_data,
    session_steps,
    summarize,
)


@dataclasses.dataclass(frozen=True)
class FscilOptions:
    replay: bool = True  # replay the sessions from the base state (False: score the final network only)


@register_protocol("fscil", description="FSCIL: accuracy after each session (all, base, novel classes), "
                                        "mean and performance drop, of a softnet artifact")
def fscil_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(FscilOptions)
    loaded = load_fscil(request.ref)
    cfg = build(FscilConfig, loaded.card["config"], source=f"{loaded.source} card")
    data_spec = request.located(cfg.data)
    if request.data:
        data_spec = dataclasses.replace(data_spec, name=request.data)
    cfg = dataclasses.replace(cfg, data=data_spec)
    device = resolve_device(request.device)
    data = load_fscil_data(cfg)
    runner = SessionRunner(cfg, data, loaded.model.to(device), device)
    last = len(data.plan.sessions) - 1
    if not options.replay:
        results = [runner.score(last)]
        details = {"model": loaded.source, "replayed": False}
    else:
        results, matches = replay_sessions(cfg, runner, loaded.base_weights, reporter)
        details = {"model": loaded.source, "replayed": True, "replay_matches_training": matches}
    metrics = summarize(results)
    primary = "mean_accuracy"
    if not options.replay:  # one session scored: no mean, no drop
        metrics = {k: v for k, v in metrics.items() if k.startswith("last_")}
        primary = "last_accuracy"
    for result in results:
        novel = "-" if result["novel_accuracy"] is None else f"{result['novel_accuracy']:.2f}"
        details[f"session {result['session']}"] = (f"{result['accuracy']:.2f} over {result['classes']} classes "
                                                   f"(base {result['base_accuracy']:.2f}, novel {novel})")
    return EvalResult(metrics=metrics, primary=primary, details=details)


def replay_sessions(cfg: FscilConfig, runner: SessionRunner, base_weights: dict[str, torch.Tensor],
                    reporter: Reporter) -> tuple[list[dict], bool]:
    """Rewind ``runner.model`` to the end of its base session, replay sessions 1..T, score after each; also
    whether the replay reproduced the stored final weights and prototypes."""
    model, device = runner.model, runner.device
    final = [p.detach().clone() for p in runner.trained_parameters()]
    final_prototypes = model.prototypes.detach().clone()
    with torch.no_grad():
        for name, param in zip(runner.trained_layers, runner.trained_parameters(), strict=True):
            param.copy_(base_weights[name])
        base = len(runner.data.plan.base_classes)
        model.prototypes[base:] = 0
        model.prototype_set[base:] = False
    results = [runner.score(0)]
    base_steps = cfg.train.epochs * steps_per_epoch(len(runner.base_indices), cfg.train.batch_size)
    if cfg.train.max_steps:
        base_steps = min(base_steps, cfg.train.max_steps)
    per_session, inc = session_steps(cfg), cfg.incremental
    amp = amp_dtype(device, cfg.train.amp)
    for session in range(1, len(runner.data.plan.sessions)):
        params = runner.open_session(session)
        if params and per_session:
            optimization = Optimization(torch.optim.SGD(params, lr=inc.lr, momentum=inc.momentum), amp=amp,
                                        grad_clip=cfg.optim.grad_clip)
            start = base_steps + (session - 1) * per_session
            for step in range(start, start + per_session):
                seed_step(cfg.seed, step, 0, device)
                with autocast(device, amp):
                    loss, _, _ = runner.session_loss(step, model)
                optimization.step(loss)
        results.append(runner.close_session(session))
        reporter.info(f"session {session}: accuracy {results[-1]['accuracy']:.2f}")
    matches = all(torch.equal(a, b.detach()) for a, b in zip(final, runner.trained_parameters(), strict=True)) \
        and torch.equal(final_prototypes, model.prototypes)
    return results, matches
