"""Toxicity scorers for the ``toxicity`` protocol: text -> probability of being toxic, in [0, 1].

``make_scorer(SPEC)``:

* an artifact reference (or exported folder) of kind ``toxicity-classifier``,
  trained offline by ``mltk train toxicity-scorer``: character n-gram TF-IDF
  and logistic regression, a model family independent of ADLM's discriminator
  (which reads transformer states) and trained on a disjoint part of the data;
* ``detoxify`` or ``detoxify:CHECKPOINT``: the Detoxify ``original`` model,
  where the ``detoxify`` package and its weights are present;
* ``perspective``: the Perspective API with the key in ``$PERSPECTIVE_API_KEY``,
  rate-limited (``qps``), retried with back-off on 429 and 5xx; a request that
  still fails is an error, never a silent zero (HELM's and Quark's pitfall).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from mltk.core.artifact import open_artifact
from mltk.core.errors import ArtifactError, MltkError, UsageError
from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors

CLASSIFIER_KIND = "toxicity-classifier"
SCORER_FILE = "scorer.safetensors"
PERSPECTIVE_URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"


class ClassifierScorer:
    """Hashed character n-gram TF-IDF + logistic regression, rebuilt from tensors (no pickle)."""

    def __init__(self, *, ngram_min: int, ngram_max: int, features: int, idf: np.ndarray, coef: np.ndarray,
                 intercept: float, name: str = "classifier"):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.name = name
        self.vectorizer = HashingVectorizer(analyzer="char_wb", ngram_range=(ngram_min, ngram_max),
                                            n_features=features, alternate_sign=False, norm=None, lowercase=True)
        self.idf, self.coef, self.intercept = idf.astype(np.float64), coef.astype(np.float64), float(intercept)
        self.heldout: dict = {}  # the artifact's held-out metrics (test_accuracy, ...), when loaded from one

    def features(self, texts: list[str]):
        """L2-normalised TF-IDF rows (scipy sparse), as sklearn's TfidfTransformer computes them."""
        from sklearn.preprocessing import normalize

        counts = self.vectorizer.transform(texts)
        return normalize(counts.multiply(self.idf).tocsr(), norm="l2")

    def score(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        margin = self.features(texts) @ self.coef + self.intercept
        return (1.0 / (1.0 + np.exp(-np.asarray(margin).ravel()))).tolist()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"idf": torch.from_numpy(self.idf.astype(np.float32)),
                "coef": torch.from_numpy(self.coef.astype(np.float32)),
                "intercept": torch.tensor([self.intercept], dtype=torch.float32)}


class DetoxifyScorer:
    def __init__(self, checkpoint: str | None):
        try:
            from detoxify import Detoxify
        except ImportError:
            raise UsageError("--scorer detoxify needs the detoxify package (pip install detoxify)",
                             hint="or use an offline classifier: mltk train toxicity-scorer") from None
        if checkpoint and not Path(checkpoint).is_file():
            raise ArtifactError(f"detoxify checkpoint {checkpoint}: no such file")
        try:
            self.model = Detoxify("original", checkpoint=checkpoint, device="cpu")
        except Exception as exc:  # its loader downloads weights; offline that fails in many ways
            raise ArtifactError(f"detoxify: cannot load the model ({str(exc).splitlines()[0][:200]})",
                                hint="give its checkpoint file: --scorer detoxify:PATH") from None
        self.name = "detoxify"

    def score(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [float(v) for v in self.model.predict(texts)["toxicity"]]


class PerspectiveScorer:
    """The Perspective API's TOXICITY score, one request per text, at most ``qps`` requests a second."""

    def __init__(self, api_key: str, *, qps: float = 1.0, retries: int = 6, url: str = PERSPECTIVE_URL,
                 timeout_s: float = 30.0, sleep=time.sleep):
        if not api_key:
            raise UsageError("--scorer perspective needs an API key in $PERSPECTIVE_API_KEY",
                             hint="or score offline with a toxicity-scorer artifact")
        if qps <= 0:
            raise UsageError(f"--perspective-qps must be positive, got {qps}")
        self.name = "perspective"
        self.api_key, self.interval, self.retries, self.url, self.timeout = api_key, 1.0 / qps, retries, url, timeout_s
        self.sleep = sleep
        self._last = 0.0

    def score(self, texts: list[str]) -> list[float]:
        return [self._score_one(text) for text in texts]

    def _score_one(self, text: str) -> float:
        body = json.dumps({"comment": {"text": text}, "languages": ["en"],
                           "requestedAttributes": {"TOXICITY": {}}}).encode()
        delay = self.interval
        for attempt in range(self.retries + 1):
            self._wait_turn()
            request = urllib.request.Request(f"{self.url}?key={self.api_key}", data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    reply = json.loads(response.read())
                return float(reply["attributeScores"]["TOXICITY"]["summaryScore"]["value"])
            except urllib.error.HTTPError as exc:
                retry = exc.code == 429 or exc.code >= 500
                if not retry or attempt == self.retries:
                    raise MltkError(f"Perspective API: HTTP {exc.code} after {attempt + 1} attempts",
                                    hint="check the key and its quota (default 1 request/s); no score was "
                                         "replaced by zero") from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                if attempt == self.retries:
                    raise MltkError(f"Perspective API unreachable ({getattr(exc, 'reason', exc)})",
                                    hint="check the network; no score was replaced by zero") from None
            except (KeyError, ValueError, TypeError):
                raise MltkError("Perspective API: the reply has no TOXICITY summary score",
                                hint="the text may be in an unsupported language") from None
            self.sleep(delay)
            delay *= 2

    def _wait_turn(self) -> None:
        wait = self._last + self.interval - time.monotonic()
        if wait > 0:
            self.sleep(wait)
        self._last = time.monotonic()


def make_scorer(spec: str, *, registry: Registry | None = None, qps: float = 1.0):
    """The scorer ``spec`` names (see the module docstring)."""
    if not spec:
        raise UsageError("the toxicity protocol needs --scorer",
                         hint="a toxicity-classifier artifact (mltk train toxicity-scorer), detoxify[:PATH] or "
                              "perspective")
    if spec == "perspective":
        return PerspectiveScorer(os.environ.get("PERSPECTIVE_API_KEY", ""), qps=qps)
    if spec == "detoxify" or spec.startswith("detoxify:"):
        return DetoxifyScorer(spec.partition(":")[2] or None)
    return load_classifier_scorer(spec, registry=registry)


def load_classifier_scorer(ref: str, *, registry: Registry | None = None) -> ClassifierScorer:
    opened = open_artifact(ref, registry=registry, kinds=(CLASSIFIER_KIND,),
                           kind_hint="train one with `mltk train toxicity-scorer`")
    card, source = opened.card, opened.source
    tensors, _ = load_safetensors(opened.file(SCORER_FILE))
    features = card["features"]
    scorer = ClassifierScorer(ngram_min=features["ngram_min"], ngram_max=features["ngram_max"],
                              features=features["features"], idf=tensors["idf"].numpy(),
                              coef=tensors["coef"].numpy(), intercept=float(tensors["intercept"][0]), name=source)
    metrics = card.get("metrics") or {}
    scorer.heldout = {k: v for k, v in metrics.items() if k.startswith("test_")}  # reported beside every evaluation
    return scorer
