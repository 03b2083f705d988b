"""``mltk train toxicity-scorer``: the offline toxicity classifier that judges generations.

It replaces the Perspective API where there is no network, so it must be
independent of what it judges: it is a different model family (character
2-5-gram TF-IDF + logistic regression, no transformer), trained on a part of
the labelled corpus disjoint from the part the detoxifiers train on
(``data.part``), with balanced class weights so its 0.5 threshold does not
inherit the corpus's 83% toxic prior. It reports, on data it never saw:

* accuracy, balanced accuracy and ROC AUC on ``model.test_fraction`` of its part;
* the same on each ``extra_test`` source (other corpora: out-of-domain);
* on ``reference_rtp`` files, agreement with the Perspective API's own scores
  of RealToxicityPrompts continuations (ROC AUC against Perspective >= 0.5,
  Spearman correlation), the judge the published numbers come from.
"""

from __future__ import annotations

import numpy as np

from mltk.core.artifact import build_card, provenance
from mltk.core.catalog import register_recipe
from mltk.core.errors import ConfigError
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.tensor_files import safetensors_bytes
from mltk.data.text.sources import FORMATS, in_slice, locate, read_rtp_scored, read_source
from mltk.engines.detox.config import ScorerConfig
from mltk.engines.detox.scorers import CLASSIFIER_KIND, SCORER_FILE, ClassifierScorer
from mltk.engines.detox.training import read_text_data


def classification_metrics(scores: list[float], labels: list[int], prefix: str) -> dict:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    predicted = [int(s >= 0.5) for s in scores]
    out = {f"{prefix}_accuracy": float(np.mean([p == y for p, y in zip(predicted, labels, strict=True)])),
           f"{prefix}_balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
           f"{prefix}_examples": len(labels)}
    if len(set(labels)) == 2:
        out[f"{prefix}_roc_auc"] = float(roc_auc_score(labels, scores))
    return out


@register_recipe("toxicity-scorer", config=ScorerConfig, default_preset="davidson",
                 description="offline toxicity classifier (char n-gram TF-IDF + logistic regression) for eval")
class ToxicityScorerRecipe:
    def __init__(self, cfg: ScorerConfig, ctx: RunContext):
        self.cfg, self.ctx = cfg, ctx

    def setup(self) -> None:
        cfg = self.cfg
        spec = cfg.model
        for path in [*cfg.extra_test, *cfg.reference_rtp]:  # fail before training, not after
            locate(path.partition(":")[2] if path.split(":")[0] in FORMATS else path, data_dir=cfg.data.data_dir,
                   source=path)
        examples, _ = read_text_data(cfg.data, seed=cfg.seed, labelled=True, what="toxicity-scorer")
        held_out = [in_slice(e.text, (0.0, spec.test_fraction), cfg.data.part_seed + 2) for e in examples]
        self.train_set = [e for e, h in zip(examples, held_out, strict=True) if not h]
        self.test_set = [e for e, h in zip(examples, held_out, strict=True) if h]
        if len({e.label for e in self.train_set}) < 2 or not self.test_set:
            raise ConfigError(["data: the scorer needs toxic and non-toxic training sentences and a test part"],
                              source="toxicity-scorer", hint="widen data.part or add sources")
        toxic = sum(e.label for e in self.train_set)
        self.ctx.reporter.info(f"data: {len(self.train_set)} training sentences ({toxic} toxic), "
                               f"{len(self.test_set)} held out")

    def train(self) -> None:
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import LogisticRegression

        spec = self.cfg.model
        blank = ClassifierScorer(ngram_min=spec.ngram_min, ngram_max=spec.ngram_max, features=spec.features,
                                 idf=np.ones(spec.features), coef=np.zeros(spec.features), intercept=0.0)
        counts = blank.vectorizer.transform([e.text for e in self.train_set])
        idf = TfidfTransformer(smooth_idf=True).fit(counts).idf_
        scorer = ClassifierScorer(ngram_min=spec.ngram_min, ngram_max=spec.ngram_max, features=spec.features,
                                  idf=idf, coef=np.zeros(spec.features), intercept=0.0)
        regression = LogisticRegression(C=spec.c, class_weight="balanced", max_iter=2000,
                                        random_state=self.cfg.seed)
        regression.fit(scorer.features([e.text for e in self.train_set]), [e.label for e in self.train_set])
        scorer.coef, scorer.intercept = regression.coef_[0].astype(np.float64), float(regression.intercept_[0])
        self.scorer = scorer

    def evaluate(self) -> dict:
        cfg = self.cfg
        metrics = classification_metrics(self.scorer.score([e.text for e in self.test_set]),
                                         [e.label for e in self.test_set], "test")
        for index, source in enumerate(cfg.extra_test):
            examples = [e for e in read_source(source, data_dir=cfg.data.data_dir) if e.label is not None]
            metrics.update(classification_metrics(self.scorer.score([e.text for e in examples]),
                                                  [e.label for e in examples], f"extra{index}"))
        scored = [pair for path in cfg.reference_rtp
                  for pair in read_rtp_scored(locate(path, data_dir=cfg.data.data_dir))]
        if scored:
            from scipy.stats import spearmanr
            from sklearn.metrics import roc_auc_score

            ours = self.scorer.score([text for text, _ in scored])
            theirs = [value for _, value in scored]
            metrics["perspective_spearman"] = float(spearmanr(ours, theirs).statistic)
            flags = [int(v >= 0.5) for v in theirs]
            if len(set(flags)) == 2:
                metrics["perspective_roc_auc"] = float(roc_auc_score(flags, ours))
            metrics["perspective_texts"] = len(scored)
        return metrics

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        parent = "dataset:" + ",".join(cfg.data.all_sources())
        meta = provenance(engine="detox", parent=parent, relation="trained", format="pt")
        spec = cfg.model
        card = build_card(kind=CLASSIFIER_KIND, engine="detox",
                          features={"ngram_min": spec.ngram_min, "ngram_max": spec.ngram_max,
                                    "features": spec.features, "analyzer": "char_wb", "idf": "smooth", "norm": "l2"},
                          data={"sources": cfg.data.all_sources(), "part": list(cfg.data.part),
                                "part_seed": cfg.data.part_seed},
                          metrics=metrics, primary_metric="test_balanced_accuracy", parent=parent,
                          relation="trained", config=cfg, run_dir=str(self.ctx.run.path))
        files = {SCORER_FILE: safetensors_bytes(self.scorer.tensors(), meta)}
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)
