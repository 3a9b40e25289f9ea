"""A synthetic, versioned knowledge base for open-domain QA with exact ground truth (the CIT
analog): fictional companies with relations rendered as short passages, a corpus version 2 where a
fraction of the facts changed, question paraphrases, new-domain passage and question templates
never seen in training, and an oracle retriever (gold passage + distractors)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from invariance.sequence.text.tables import entity_names

__all__ = ["RELATIONS", "Fact", "KnowledgeBase", "make_kb", "retrieve", "qa_examples"]

#: relation -> (value pool kind, training passage templates, training question templates,
#: new-domain passage template, new-domain question template); ``{e}`` entity, ``{v}`` value
RELATIONS: dict[str, tuple[str, list[str], list[str], str, str]] = {
    "founder": (
        "person",
        ["{e} was founded by {v} .", "{v} founded {e} ."],
        ["who founded {e} ?", "who is the founder of {e} ?", "{e} was founded by whom ?"],
        "records list {v} as the creator of {e} .",
        "name the creator of {e} ?",
    ),
    "city": (
        "place",
        ["{e} is based in {v} .", "the headquarters of {e} are in {v} ."],
        ["where is {e} based ?", "in which city is {e} ?", "where are the headquarters of {e} ?"],
        "{e} operates out of {v} .",
        "from which town does {e} operate ?",
    ),
    "ceo": (
        "person",
        ["{v} is the ceo of {e} .", "{e} is led by {v} ."],
        ["who is the ceo of {e} ?", "who leads {e} ?", "who runs {e} ?"],
        "the chief of {e} is {v} .",
        "name the chief of {e} ?",
    ),
    "product": (
        "product",
        ["{e} makes {v} .", "the main product of {e} is {v} ."],
        ["what does {e} make ?", "what is the main product of {e} ?", "what is made by {e} ?"],
        "{e} sells {v} .",
        "what does {e} sell ?",
    ),
}


@dataclass(frozen=True)
class Fact:
    entity: str
    relation: str
    value: str


@dataclass
class KnowledgeBase:
    """Facts of corpus v1 and v2 (same entities and relations, ``changed[i]`` marks the facts
    whose value differs in v2), new-domain facts (other entities) and every word used."""

    v1: list[Fact]
    v2: list[Fact]
    changed: list[bool]
    new_domain: list[Fact]
    words: list[str] = field(default_factory=list)


def make_kb(
    n_entities: int = 50, change_frac: float = 0.3, n_new: int = 20, seed: int = 0
) -> KnowledgeBase:
    """``n_entities`` companies x 4 relations; ``change_frac`` of the facts get a new value in v2;
    ``n_new`` new-domain companies."""
    for name, v in (("n_entities", n_entities), ("n_new", n_new)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not isinstance(change_frac, (int, float)) or not 0.0 <= change_frac <= 1.0:
        raise ValueError(f"change_frac must be in [0, 1], got {change_frac!r}")
    rng = random.Random(seed)
    names = entity_names(n_entities + n_new + 3 * 40, seed=seed, syllables=3)
    ents, new_ents = names[:n_entities], names[n_entities : n_entities + n_new]
    rest = names[n_entities + n_new :]
    pools = {"person": rest[:40], "place": rest[40:80], "product": rest[80:120]}

    def facts(es: list[str]) -> list[Fact]:
        return [Fact(e, r, rng.choice(pools[RELATIONS[r][0]])) for e in es for r in RELATIONS]

    v1 = facts(ents)
    changed = [rng.random() < change_frac for _ in v1]
    v2 = []
    for f, c in zip(v1, changed):
        if c:
            pool = [v for v in pools[RELATIONS[f.relation][0]] if v != f.value]
            f = Fact(f.entity, f.relation, rng.choice(pool))
        v2.append(f)
    new = facts(new_ents)
    words = set(names)
    for _, pt, qt, npt, nqt in RELATIONS.values():
        for t in [*pt, *qt, npt, nqt]:
            words.update(w for w in t.split() if "{" not in w)
    words.update(("question:", "context:"))
    return KnowledgeBase(v1, v2, changed, new, sorted(words))


def passage(f: Fact, new_domain: bool = False) -> str:
    """The passage stating ``f`` (a training template chosen by the entity, or the new-domain
    template)."""
    _, pt, _, npt, _ = RELATIONS[f.relation]
    t = npt if new_domain else pt[sum(map(ord, f.entity)) % len(pt)]
    return t.format(e=f.entity, v=f.value)


def retrieve(
    facts: list[Fact],
    i: int,
    k: int,
    rng: random.Random,
    *,
    new_domain: bool = False,
    gold: bool = True,
) -> list[str]:
    """Oracle top-``k``: the passage of ``facts[i]`` (unless ``gold=False``: closed-book probe)
    and ``k - 1`` (``k``) distractors, half of them about the same entity when possible,
    shuffled."""
    f = facts[i]
    same = [j for j, g in enumerate(facts) if g.entity == f.entity and j != i]
    other = [j for j, g in enumerate(facts) if g.entity != f.entity]
    n = k - 1 if gold else k
    pick = rng.sample(same, min(len(same), n // 2))
    pick += rng.sample(other, n - len(pick))
    ps = [passage(facts[j], new_domain) for j in pick]
    if gold:
        ps.append(passage(f, new_domain))
    rng.shuffle(ps)
    return ps


def qa_examples(
    facts: list[Fact],
    k: int,
    seed: int,
    *,
    new_domain: bool = False,
    gold: bool = True,
    templates: str = "train",
) -> list[tuple[str, list[str], str]]:
    """``(question, passages, answer)`` for every fact: one question per training template
    (``templates="train"``), one random training template (``"one"``) or the new-domain template
    (``"new"``)."""
    rng = random.Random(seed)
    out = []
    for i, f in enumerate(facts):
        _, _, qt, _, nqt = RELATIONS[f.relation]
        qs = {"train": qt, "one": [rng.choice(qt)], "new": [nqt]}[templates]
        for q in qs:
            out.append(
                (
                    q.format(e=f.entity),
                    retrieve(facts, i, k, rng, new_domain=new_domain, gold=gold),
                    f.value,
                )
            )
    return out
