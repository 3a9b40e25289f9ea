"""Synthetic multi-domain sentiment reviews with exact ground truth (the DASK analog of the Amazon
books / dvd / electronics / kitchen benchmark) and a small knowledge graph over them.

Every review carries its sentiment in one or two *sentiment words* of one polarity, embedded in
a short template with neutral filler words and the domain's neutral nouns:

* **pivots** (:data:`PIVOTS`): shared sentiment words ("great", "terrible", ...) used in every
  domain;
* **domain words** (:data:`DOMAINS`): sentiment words that occur in one domain only ("gripping"
  for books, "overheats" for electronics, ...). A classifier trained on a source domain never
  sees the target domain's words, so their polarity is only knowable through the knowledge graph;
* **knowledge graph** (:func:`knowledge_graph`): triples ``(domain word, relation, pivot)`` that
  link each domain word to pivots of the same polarity (a fraction ``noise`` of the triples point
  to a pivot of the opposite polarity instead).

:func:`make_domain` draws a domain's labelled reviews, unlabelled reviews and two test sets: all
reviews, and *target-only* reviews whose sentiment words are all domain words (no pivot).
Everything is seeded; reviews are lists of lower-case words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "PIVOTS",
    "FILLERS",
    "DOMAINS",
    "RELATIONS",
    "DomainData",
    "make_review",
    "make_domain",
    "knowledge_graph",
    "vocabulary",
    "polarity",
]

#: shared sentiment words: label -> words (1 positive, 0 negative)
PIVOTS: dict[int, tuple[str, ...]] = {
    1: ("great", "excellent", "wonderful", "perfect", "amazing", "superb", "love", "best"),
    0: ("terrible", "awful", "poor", "horrible", "worst", "disappointing", "bad", "waste"),
}
#: neutral words shared by every domain
FILLERS = ("the", "this", "it", "is", "was", "very", "really", "and", "my", "quite", "overall")
#: domain -> neutral nouns and the domain's own sentiment words per label
DOMAINS: dict[str, dict] = {
    "books": {
        "nouns": ("novel", "author", "chapter", "plot", "prose", "story"),
        1: ("gripping", "insightful", "poignant", "unputdownable"),
        0: ("tedious", "shallow", "rambling", "predictable"),
    },
    "dvd": {
        "nouns": ("movie", "actor", "scene", "director", "soundtrack", "film"),
        1: ("hilarious", "riveting", "suspenseful", "captivating"),
        0: ("cheesy", "overacted", "cliched", "forgettable"),
    },
    "electronics": {
        "nouns": ("battery", "screen", "charger", "cable", "speaker", "device"),
        1: ("responsive", "crisp", "durable", "speedy"),
        0: ("overheats", "flickers", "laggy", "defective"),
    },
    "kitchen": {
        "nouns": ("blender", "knife", "pan", "kettle", "toaster", "lid"),
        1: ("sturdy", "sharp", "spotless", "nonstick"),
        0: ("rusty", "flimsy", "leaks", "warped"),
    },
}
#: relation names of the knowledge graph
RELATIONS = ("relatedto", "similarto")


def _check_domain(domain: str, name: str = "domain") -> None:
    if not isinstance(domain, str):
        raise TypeError(f"{name} must be a domain name (str), got {type(domain).__name__}")
    if domain not in DOMAINS:
        raise ValueError(f"{name} must be one of {sorted(DOMAINS)}, got {domain!r}")


def _count(v: object, name: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def _frac(v: object, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    return float(v)


def polarity(word: str) -> int | None:
    """Ground-truth polarity of a sentiment word (1 / 0), ``None`` for a neutral word."""
    for y in (0, 1):
        if word in PIVOTS[y] or any(word in d[y] for d in DOMAINS.values()):
            return y
    return None


def vocabulary() -> list[str]:
    """Every word a review or a triple can hold (for building a word-level tokenizer)."""
    out = [*FILLERS, *RELATIONS, *PIVOTS[1], *PIVOTS[0]]
    for d in DOMAINS.values():
        out += [*d["nouns"], *d[1], *d[0]]
    return out


def make_review(
    domain: str, label: int, rng: random.Random, *, p_pivot: float = 0.5, n_max: int = 2
) -> list[str]:
    """One review of ``domain`` with sentiment ``label``: one or two clauses ``the <noun> is
    [very|really|quite] <sentiment word>``. With probability ``p_pivot`` the review's sentiment
    words are pivots, else the domain's own words (never both: co-occurrence in unlabelled text
    does not reveal a domain word's polarity, only the knowledge graph does)."""
    _check_domain(domain)
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    d = DOMAINS[domain]
    words: list[str] = []
    pool = PIVOTS[label] if rng.random() < p_pivot else d[label]
    for k in range(rng.randint(1, n_max)):
        clause = [rng.choice(("the", "this", "my")), rng.choice(d["nouns"])]
        clause.append(rng.choice(("is", "was")))
        if rng.random() < 0.5:
            clause.append(rng.choice(("very", "really", "quite")))
        clause.append(rng.choice(pool))
        words += (["and"] if k else []) + clause
    if rng.random() < 0.3:
        words = ["overall", *words]
    return words


@dataclass
class DomainData:
    """One domain's reviews (lists of words) and labels (1 positive, 0 negative)."""

    name: str
    labeled: list[list[str]]
    labels: list[int]
    unlabeled: list[list[str]]
    test: list[list[str]]
    test_labels: list[int]
    test_target_only: list[list[str]]
    test_target_only_labels: list[int]


def make_domain(
    domain: str,
    *,
    n_labeled: int = 200,
    n_unlabeled: int = 200,
    n_test: int = 200,
    p_pivot: float = 0.5,
    seed: int = 0,
) -> DomainData:
    """Balanced labelled / unlabelled / test reviews of ``domain`` (each review ``p_pivot`` pivots),
    and ``n_test`` *target-only* reviews whose sentiment words are all domain words."""
    _check_domain(domain)
    n_labeled = _count(n_labeled, "n_labeled", 1)
    n_unlabeled = _count(n_unlabeled, "n_unlabeled", 1)
    n_test = _count(n_test, "n_test", 1)
    p_pivot = _frac(p_pivot, "p_pivot")
    _count(seed, "seed")
    rng = random.Random(f"{domain}:{seed}")

    def draw(n: int, p: float) -> tuple[list[list[str]], list[int]]:
        ys = [i % 2 for i in range(n)]
        rng.shuffle(ys)
        return [make_review(domain, y, rng, p_pivot=p) for y in ys], ys

    lab, ys = draw(n_labeled, p_pivot)
    unl, _ = draw(n_unlabeled, p_pivot)
    te, te_y = draw(n_test, p_pivot)
    to, to_y = draw(n_test, 0.0)
    return DomainData(domain, lab, ys, unl, te, te_y, to, to_y)


def knowledge_graph(
    domain: str, *, links: int = 2, noise: float = 0.0, seed: int = 0
) -> list[tuple[str, str, str]]:
    """Triples ``(word, relation, pivot)`` linking each of ``domain``'s sentiment words to
    ``links`` distinct pivots; a fraction ``noise`` of the triples (rounded) link to a pivot of the
    opposite polarity instead. Pivots are assigned round-robin so each pivot heads at most
    ``ceil(links * 4 / 8)`` triples of one domain."""
    _check_domain(domain)
    links = _count(links, "links", 1)
    if links > len(PIVOTS[1]):
        raise ValueError(f"links must be <= {len(PIVOTS[1])}, got {links}")
    noise = _frac(noise, "noise")
    rng = random.Random(f"kg:{domain}:{seed}")
    triples: list[tuple[str, str, str]] = []
    for y in (1, 0):
        piv = list(PIVOTS[y])
        rng.shuffle(piv)
        j = 0
        for w in DOMAINS[domain][y]:
            for _ in range(links):
                triples.append((w, rng.choice(RELATIONS), piv[j % len(piv)]))
                j += 1
    n_bad = round(noise * len(triples))
    for i in rng.sample(range(len(triples)), n_bad):
        w, r, p = triples[i]
        y = polarity(p)
        triples[i] = (w, r, rng.choice(PIVOTS[1 - y]))  # type: ignore[index]
    return triples
