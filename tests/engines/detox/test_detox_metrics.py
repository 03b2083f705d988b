"""The toxicity protocol's metrics against values computed by hand, the scorers' failure behaviour and the
protocol's option checks."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from mltk.core.catalog import EvalRequest
from mltk.core.console import Reporter
from mltk.core.errors import ConfigError, MltkError, UsageError
from mltk.engines.detox.metrics import (
    conditional_perplexities,
    distinct_n,
    expected_max_toxicity,
    mean_perplexity,
    toxicity_probability,
)
from mltk.engines.detox.protocols import toxicity_protocol
from mltk.engines.detox.scorers import PerspectiveScorer, make_scorer
from mltk.nn.language_models.causal_lm import load_causal_lm


def test_expected_max_toxicity_and_toxicity_probability_by_hand():
    scores = [[0.1, 0.7], [0.2, 0.3], [0.5, 0.0]]
    assert expected_max_toxicity(scores) == pytest.approx((0.7 + 0.3 + 0.5) / 3)
    assert toxicity_probability(scores) == pytest.approx(2 / 3)  # 0.5 itself counts as toxic
    with pytest.raises(ValueError):
        expected_max_toxicity([[0.1], []])


def test_distinct_n_counts_whitespace_words_per_prompt_as_dexperts_does():
    # prompt 1: 'a b a' + 'a  b' -> words a,b,a | a,'',b (6); unigrams {a,b,''}; bigrams a_b b_a a_ _b;
    # trigrams a_b_a a__b. prompt 2: 'x' -> 1 word, 1 unigram, no bigram or trigram.
    d1, d2, d3 = distinct_n([["a b a", "a  b"], ["x"]])
    assert d1 == pytest.approx((3 / 6 + 1) / 2)
    assert d2 == pytest.approx((4 / 6 + 0) / 2)
    assert d3 == pytest.approx((2 / 6 + 0) / 2)


def test_conditional_perplexity_is_the_continuation_perplexity_given_the_prompt(detox_files):
    judge = load_causal_lm(str(detox_files["lm"]))
    tokenizer = judge.tokenizer
    prompt, continuation = "the cat", " sat on the mat"
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + continuation)["input_ids"]
    assert full_ids[:len(prompt_ids)] == prompt_ids  # the split the formula relies on
    with torch.no_grad():
        logprobs = judge.model(torch.tensor([full_ids])).logits[0].log_softmax(-1)
    new = range(len(prompt_ids), len(full_ids))
    by_hand = math.exp(-sum(float(logprobs[i - 1, full_ids[i]]) for i in new) / len(new))
    [got] = conditional_perplexities(judge.model, tokenizer, prompt, [continuation], device=torch.device("cpu"),
                                     max_length=64)
    assert got == pytest.approx(by_hand, rel=1e-4)
    assert mean_perplexity([10.0, 30.0, 2e4, float("nan")], max_ppl=1e4) == (20.0, 2)


def test_batched_perplexities_equal_one_sequence_at_a_time(detox_files):
    judge = load_causal_lm(str(detox_files["lm"]))
    prompt = "the cat sat on"
    continuations = [" the mat", " a warm mat by the river today", "", " you", " the soup was hot and tasty"]
    batched = conditional_perplexities(judge.model, judge.tokenizer, prompt, continuations,
                                       device=torch.device("cpu"), max_length=64, batch_size=4)
    alone = [conditional_perplexities(judge.model, judge.tokenizer, prompt, [text], device=torch.device("cpu"),
                                      max_length=64, batch_size=1)[0] for text in continuations]
    assert math.isnan(batched[2]) and math.isnan(alone[2])  # an empty continuation has no perplexity
    kept = [i for i in range(len(continuations)) if i != 2]
    assert [batched[i] for i in kept] == pytest.approx([alone[i] for i in kept], rel=1e-4)
    assert len({round(batched[i], 3) for i in kept}) == len(kept)  # distinct values: no row got another's loss
    # past the judge's context the prompt's first tokens are dropped, for the prompt and the sequence alike
    short = conditional_perplexities(judge.model, judge.tokenizer, prompt, continuations[:2],
                                     device=torch.device("cpu"), max_length=6, batch_size=2)
    one = [conditional_perplexities(judge.model, judge.tokenizer, prompt, [text], device=torch.device("cpu"),
                                    max_length=6, batch_size=1)[0] for text in continuations[:2]]
    assert short == pytest.approx(one, rel=1e-4)


class _Perspective(BaseHTTPRequestHandler):
    replies: list[int] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        code = type(self).replies.pop(0) if type(self).replies else 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if code == 200:
            self.wfile.write(json.dumps({"attributeScores": {"TOXICITY": {"summaryScore": {"value": 0.75}}}}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def perspective_server():
    server = HTTPServer(("127.0.0.1", 0), _Perspective)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Perspective.replies, _Perspective.seen = [], []
    yield f"http://127.0.0.1:{server.server_port}/analyze"
    server.shutdown()


def test_perspective_retries_rate_limits_and_never_returns_a_silent_zero(perspective_server):
    waits = []
    scorer = PerspectiveScorer("key", qps=100, retries=3, url=perspective_server, sleep=waits.append)
    _Perspective.replies = [429, 503, 200]
    assert scorer.score(["you idiot"]) == [0.75]
    assert len(_Perspective.seen) == 3 and _Perspective.seen[0]["comment"]["text"] == "you idiot"
    backoff = [w for w in waits if w >= 0.01]
    assert backoff == sorted(backoff) and len(backoff) >= 2  # growing back-off between the retries
    _Perspective.replies = [500] * 10
    with pytest.raises(MltkError, match="HTTP 500 after 4 attempts"):
        scorer.score(["still failing"])
    _Perspective.replies = [403]
    with pytest.raises(MltkError, match="HTTP 403 after 1 attempts"):  # not retried: a bad key stays bad
        scorer.score(["forbidden"])


def test_scorer_specs_fail_clearly(monkeypatch):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(UsageError, match="PERSPECTIVE_API_KEY"):
        make_scorer("perspective")
    with pytest.raises(UsageError, match="needs --scorer"):
        make_scorer("")


def test_protocol_options_out_of_range_are_all_listed():
    request = EvalRequest(ref="unused", protocol="toxicity",
                          options={"prompts": "p.txt", "n": 0, "limit": -1, "filter_p": 0.0})
    with pytest.raises(ConfigError) as info:
        toxicity_protocol(request, Reporter("quiet"))
    assert [p.split(":")[0] for p in info.value.problems] == ["n", "limit", "filter_p"]
