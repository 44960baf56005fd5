"""The toy world: entities with attributes, rendered as lowercase word sentences.

Every word is one token of the word-level tokenizer (punctuation is spaced
out: "alice lives in paris ."). Each relation has several sentence templates;
for every fact (entity, relation) one template is held out at random: training
text renders the fact only with the other templates, and the evaluation
sequences use the held-out one, so that no evaluation sentence occurs verbatim
in training while the fact and the template are both seen (with other facts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAMES = ("alice bob carol dave eve frank grace heidi ivan judy karl liam mona nina oscar "
         "paul quinn rosa sam tina uma vera walt yuri").split()
VALUES = {
    "city": "paris rome oslo lima cairo tokyo delhi quito".split(),
    "color": "red blue green yellow purple orange black white".split(),
    "pet": "cat dog horse parrot rabbit turtle hamster snake".split(),
    "job": "doctor farmer baker pilot singer teacher lawyer painter".split(),
}
TEMPLATES = {
    "city": ("{e} lives in {v} .", "{e} is from {v} .", "the home of {e} is {v} ."),
    "color": ("{e} likes the color {v} .", "the favorite color of {e} is {v} .",
              "{e} always wears {v} ."),
    "pet": ("{e} has a {v} .", "{e} owns a {v} .", "the pet of {e} is a {v} ."),
    "job": ("{e} works as a {v} .", "{e} is a {v} .", "the job of {e} is {v} ."),
}
QUESTIONS = {
    "city": "where does {e} live ?",
    "color": "what color does {e} like ?",
    "pet": "what pet does {e} have ?",
    "job": "what job does {e} do ?",
}
PLACES = "park shop school beach garden station".split()
OBJECTS = "ball book gift letter key cake".split()
IOI_TEMPLATES = (
    "then {a} and {b} went to the {p} . {s} gave a {o} to {io} .",
    "when {a} and {b} were at the {p} , {s} handed a {o} to {io} .",
)


@dataclass(frozen=True)
class Fact:
    """One fact: `entity`'s `relation` is `value`; `held_out` indexes its evaluation template."""

    entity: str
    relation: str
    value: str
    held_out: int

    def render(self, template: int, value: str | None = None) -> str:
        """The fact's sentence in `TEMPLATES[relation][template]` (optionally with another value)."""
        return TEMPLATES[self.relation][template].format(e=self.entity, v=value or self.value)

    def training_templates(self) -> list[int]:
        """Template indices used in training text (all but the held-out one)."""
        return [i for i in range(len(TEMPLATES[self.relation])) if i != self.held_out]


def make_world(seed: int, n_entities: int = len(NAMES)) -> list[Fact]:
    """Sample a world: each of `n_entities` names gets one value per relation."""
    if not 2 <= n_entities <= len(NAMES):
        raise ValueError(f"n_entities must be in 2..{len(NAMES)}, got {n_entities}")
    rng = np.random.default_rng([seed, 1])
    facts = []
    for name in NAMES[:n_entities]:
        for rel, values in VALUES.items():
            value = values[rng.integers(len(values))]
            facts.append(Fact(name, rel, value, int(rng.integers(len(TEMPLATES[rel])))))
    return facts


def world_words() -> list[str]:
    """Every word the world's text can contain, in a fixed order."""
    texts = [t for ts in TEMPLATES.values() for t in ts] + list(QUESTIONS.values())
    texts += list(IOI_TEMPLATES) + ["q : a : ."]
    words = list(NAMES) + [v for vs in VALUES.values() for v in vs] + PLACES + OBJECTS
    for text in texts:
        words += [w for w in text.split() if not w.startswith("{")]
    return list(dict.fromkeys(words))


def fact_sentence(rng: np.random.Generator, facts: list[Fact]) -> str:
    """A random training sentence: a random fact in one of its training templates."""
    fact = facts[rng.integers(len(facts))]
    templates = fact.training_templates()
    return fact.render(templates[rng.integers(len(templates))])


def qa_pair(fact: Fact) -> tuple[str, str]:
    """("q : <question> a :", "<answer>") for a fact."""
    return f"q : {QUESTIONS[fact.relation].format(e=fact.entity)} a :", fact.value


def qa_sentence(rng: np.random.Generator, facts: list[Fact]) -> str:
    """A random question/answer pair as training text."""
    q, a = qa_pair(facts[rng.integers(len(facts))])
    return f"{q} {a} ."


def ioi_prompt(rng: np.random.Generator, names: list[str] | None = None) -> tuple[str, str, str]:
    """An IOI sentence up to (excluding) the answer: (prompt, indirect object, subject).

    Two names A, B; the subject S (repeated) is one of them at random, the
    answer is the other (the indirect object, IO).
    """
    names = names or NAMES
    a, b = (names[i] for i in rng.choice(len(names), size=2, replace=False))
    s, io = (a, b) if rng.random() < 0.5 else (b, a)
    template = IOI_TEMPLATES[rng.integers(len(IOI_TEMPLATES))]
    text = template.format(a=a, b=b, p=PLACES[rng.integers(len(PLACES))],
                           o=OBJECTS[rng.integers(len(OBJECTS))], s=s, io=io)
    prompt = text.rsplit(" ", 2)[0]  # drop "<io> ."
    return prompt, io, s


def ioi_sentence(rng: np.random.Generator) -> str:
    """A complete IOI sentence as training text."""
    prompt, io, _ = ioi_prompt(rng)
    return f"{prompt} {io} ."


def shuffled(rng: np.random.Generator, sentence: str, avoid: set[str]) -> str:
    """`sentence` with its words shuffled (the final "." kept last), not in `avoid`."""
    words = sentence.split()[:-1]
    for _ in range(100):
        perm = [words[i] for i in rng.permutation(len(words))]
        text = " ".join(perm + ["."])
        if perm != words and text not in avoid:
            return text
    raise RuntimeError(f"could not shuffle {sentence!r} into a new sentence")
