"""ADLM's attribute discriminator must read the text, not the attribute embedding it could be given.

The first objective classified P(h + e_a*) with a* the sentence's own label, and the discriminator solved its
loss from e_a* alone (right with the gold label, wrong with the swapped one). These tests fail on that
objective: the discriminator is trained on label-free projections only, so with labels the text does not
determine it cannot beat chance on held-out sentences, and the steering term never moves it.
"""

from __future__ import annotations

import random

import pytest
import torch

from mltk.data.text.sources import TextExample
from mltk.data.text.tokens import encode_sentences
from mltk.engines.detox.adlm import NONTOXIC, TOXIC, AdlmHead
from mltk.engines.detox.adlm_recipe import AdlmObjective
from mltk.engines.detox.config import AdlmSpec
from mltk.nn.language_models.causal_lm import load_causal_lm

# the toy classes of conftest.py (whose tiny tokenizer was trained on them)
CLEAN = ["what a lovely day in the park", "the cat sat on the warm mat", "we planted flowers by the river",
         "thank you for the kind letter", "the train left the station on time", "she read a good book today",
         "the soup was hot and tasty", "our team won the game last night"]
RUDE = ["you are a stupid idiot", "shut up you dumb moron", "what a pathetic loser you are",
        "you stupid idiot go away", "nobody likes you moron", "you dumb pathetic idiot"]

STEPS, BATCH, LR = 30, 16, 1e-2


@pytest.fixture(scope="module")
def lm(detox_files):
    return load_causal_lm(str(detox_files["lm"]))


def sentences(count: int, seed: int) -> list[TextExample]:
    """Distinct labelled sentences: a toy sentence of either class plus a number."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        label = i % 2
        out.append(TextExample(f"{rng.choice(RUDE if label else CLEAN)} {rng.randrange(1000)}", label))
    return out


def train_head(lm, examples, labels: torch.Tensor, *, steps: int = STEPS):
    """The head trained by the ADLM objective; and D's training accuracy over the last third of the steps."""
    torch.manual_seed(0)
    head = AdlmHead.for_lm(lm.model)
    data = encode_sentences(lm.tokenizer, examples, seq_len=16)
    objective = AdlmObjective(lm.model, head, spec=AdlmSpec(lambda_ewc=0.0), fisher={})
    optimizer = torch.optim.Adam(head.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(0)
    late = []
    for step in range(steps):
        rows = torch.randperm(len(examples), generator=generator)[:BATCH]
        loss, stats = objective(data.ids[rows], data.mask[rows], labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= steps * 2 // 3:
            late.append(float(stats["disc_accuracy"]))
    return objective, sum(late) / len(late)


@torch.no_grad()
def accuracies(lm, objective: AdlmObjective, examples, labels: torch.Tensor) -> dict[str, float]:
    """D's accuracy on the label-free projections, and on the projections under the gold / swapped label."""
    data = encode_sentences(lm.tokenizer, examples, seq_len=16)
    out = {}
    for case, given in (("label_free", None), ("gold", labels), ("swapped", 1 - labels)):
        predicted = objective.discriminate(objective.latent(data.ids, given), data.mask).argmax(1)
        out[case] = float((predicted == labels).float().mean())
        if given is not None:
            out[f"{case}_follows"] = float((predicted == given).float().mean())
    return out


def test_discriminator_cannot_solve_its_loss_from_the_given_label(lm):
    """Labels independent of the text: a discriminator that read e_a would be right on held-out sentences."""
    train, held_out = sentences(64, seed=1), sentences(40, seed=2)
    shuffled = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(3))
    objective, training_accuracy = train_head(lm, train, shuffled)
    # the first objective reached 1.0 here within a few steps, by reading e_a of the given label
    assert training_accuracy < 0.8
    random_labels = torch.randint(0, 2, (40,), generator=torch.Generator().manual_seed(4))
    found = accuracies(lm, objective, held_out, random_labels)
    assert found["label_free"] < 0.8  # chance: the text does not tell these labels


def test_discriminator_reads_the_text_and_conditioned_projections_land_on_their_side(lm):
    train, held_out = sentences(64, seed=1), sentences(40, seed=2)
    labels = torch.tensor([e.label for e in train])
    objective, training_accuracy = train_head(lm, train, labels)
    assert training_accuracy >= 0.8
    held_labels = torch.tensor([e.label for e in held_out])
    found = accuracies(lm, objective, held_out, held_labels)
    assert found["label_free"] >= 0.9, found  # held-out sentences, no label given: the text is read
    # steering: the non-toxic-conditioned projection of any sentence reads non-toxic, the toxic one toxic
    assert found["gold_follows"] >= 0.9 and found["swapped_follows"] >= 0.9, found


def test_steering_term_never_moves_the_discriminator_and_its_loss_ignores_the_embeddings(lm):
    head = AdlmHead.for_lm(lm.model)
    with torch.no_grad():
        head.attribute.normal_()  # as after training: non-zero embeddings
    objective = AdlmObjective(lm.model, head, spec=AdlmSpec(), fisher={})
    data = encode_sentences(lm.tokenizer, sentences(8, seed=5), seq_len=16)
    parts = objective.losses(data.ids, data.mask, data.labels)
    disc_weight = head.discriminator.weight
    steer_grads = torch.autograd.grad(parts["steer_loss"], [disc_weight, head.attribute], allow_unused=True,
                                      retain_graph=True)
    assert steer_grads[0] is None  # D is frozen in the steering term
    assert steer_grads[1] is not None and float(steer_grads[1].abs().sum()) > 0  # the embeddings are what it moves
    disc_grads = torch.autograd.grad(parts["disc_loss"], [disc_weight, head.attribute], allow_unused=True)
    assert disc_grads[0] is not None and float(disc_grads[0].abs().sum()) > 0
    # D's own loss never sees e_a (the rows of P's batch are independent): it cannot read the label
    assert disc_grads[1] is None or float(disc_grads[1].abs().max()) == 0.0
    assert NONTOXIC == 0 and TOXIC == 1
