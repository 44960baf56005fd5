"""Clean/corrupted task datasets the project generates, each with its metric.

Every task is a `TaskPairs`: token-id prompts (clean and corrupted of equal
length), per example the correct and incorrect answer token sets, and the
metric (`logit_diff` or `prob_diff`, evaluated at the last prompt token).
Tokenizer-aware filtering keeps only names / years / verbs that are single
tokens (with a leading space where the word follows a space); `n_candidates`
and `n_kept` report what survived.

Tasks (templates after the spec, ../shared/spec/circuits.md section 2):
- `ioi`: "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to" ->
  " A"; corrupted: the second subject is replaced by the IO name (answer flips).
- `greater-than`: "The [noun] lasted from the year XXYY to the year XX" ->
  YY' > YY; corrupted YY -> "01"; metric prob diff over the two-digit tokens.
- `gender-pronoun`: "So [name] is such a good cook, isn't" -> " she"/" he";
  corrupted: a name of the other gender.
- `sva` (Tigges et al.'s Marvin & Linzen object relative clauses): "The [noun(s)]
  that the [noun(s)] [embedded verb]" -> the main verb, whose number agrees with
  the first noun (the subject); the embedded verb agrees with the second noun
  (the object) and is part of the prompt, so the next token is the main verb.
  Example: "The poems that the executive admires" -> " are" (plural), not " is";
  corrupted: the subject's other number ("The poem that the executive admires").
  Metric prob diff over the single-token main verbs of each number.
- `induction`: random token ids s (length n) then s[:k]; answer s[k];
  corrupted: s[k] in the first copy replaced by another token t (answer t).
  Example: s = [7, 3, 9, 4], k = 2: clean [7, 3, 9, 4, 7, 3] -> 9,
  corrupted [7, 3, 5, 4, 7, 3] -> 5 (t = 5).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

NAMES_F = ("Mary", "Anna", "Sarah", "Emma", "Lisa", "Kate", "Laura", "Julia", "Alice", "Rose",
           "Amy", "Jane", "Grace", "Ruth", "Helen", "Linda", "Susan", "Karen", "Emily", "Nancy")
NAMES_M = ("John", "James", "Paul", "Mark", "David", "Tom", "Michael", "Robert", "Peter", "Jack",
           "George", "Daniel", "Chris", "Steve", "Frank", "Eric", "Kevin", "Brian", "Adam", "Sam")
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")
IOI_TEMPLATES = (
    "Then, {B} and {A} went to the {P}. {B} gave a {O} to",
    "When {B} and {A} got a {O} at the {P}, {B} decided to give it to",
    "After {B} and {A} went to the {P}, {B} gave a {O} to",
    "Then, {A} and {B} had a long argument, and afterwards {B} said to",
    "While {A} and {B} were working at the {P}, {B} gave a {O} to",
    "Friends {B} and {A} found a {O} at the {P}. {B} gave it to",
)
GENDER_TEMPLATES = tuple(f"So {{name}} is {x}, isn't" for x in (
    "such a good cook", "a very good athlete", "a really great friend", "such a funny person",
    "a really nice person"))
GT_NOUNS = ("war", "reign", "dynasty", "drought", "famine", "siege", "expedition", "pilgrimage",
            "voyage", "rebellion", "occupation", "crusade", "empire", "plague", "trial", "journey")
SVA_NOUNS = (("author", "authors"), ("pilot", "pilots"), ("doctor", "doctors"),
             ("farmer", "farmers"), ("teacher", "teachers"), ("senator", "senators"),
             ("officer", "officers"), ("manager", "managers"), ("child", "children"),
             ("poem", "poems"), ("movie", "movies"), ("student", "students"))
SVA_VERBS = (("is", "are"), ("was", "were"), ("has", "have"), ("says", "say"),
             ("runs", "run"), ("wants", "want"), ("thinks", "think"), ("makes", "make"),
             ("seems", "seem"), ("goes", "go"))
# transitive verbs of the relative clause (singular, plural), after Marvin & Linzen's
# object-relative templates that Tigges et al. use ("The poems that the executives admire")
SVA_EMBEDDED_VERBS = (("admires", "admire"), ("likes", "like"), ("loves", "love"),
                      ("hates", "hate"), ("knows", "know"), ("meets", "meet"))
TASKS = ("ioi", "greater-than", "gender-pronoun", "sva", "induction")


@dataclass
class TaskPairs:
    """A clean/corrupted dataset with answers (token ids) and its metric."""

    name: str
    metric: str
    clean: list[list[int]] = field(default_factory=list)
    corrupted: list[list[int]] = field(default_factory=list)
    correct: list[tuple[int, ...]] = field(default_factory=list)
    incorrect: list[tuple[int, ...]] = field(default_factory=list)
    n_candidates: int = 0
    notes: str = ""

    @property
    def n_kept(self) -> int:
        return len(self.clean)

    def add(self, clean, corrupted, correct, incorrect) -> bool:
        """Append a pair if lengths match and answers are non-empty and disjoint; returns kept."""
        self.n_candidates += 1
        if (len(clean) != len(corrupted) or not correct or not incorrect or not clean
                or set(correct) & set(incorrect)):
            return False
        self.clean.append(list(clean))
        self.corrupted.append(list(corrupted))
        self.correct.append(tuple(correct))
        self.incorrect.append(tuple(incorrect))
        return True


def start_token(tok) -> int | None:
    """BOS, else EOS (OLMo's tokenizer has no BOS), else None: the project's start-token rule
    (as `evals.sequences.start_token_id`)."""
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tok, name, None)
        if value is not None:
            return int(value)
    return None


def _encode(tok, text: str, bos: bool) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    first = start_token(tok) if bos else None
    return ([first] if first is not None else []) + ids


def single_token(tok, word: str) -> int | None:
    """The id of `word` if it is exactly one known token (not the unknown token), else None."""
    ids = tok(word, add_special_tokens=False)["input_ids"]
    unk = getattr(tok, "unk_token_id", None)
    return ids[0] if len(ids) == 1 and ids[0] != unk else None


def _single(tok, words, prefix=" ") -> dict[str, int]:
    out = {w: single_token(tok, prefix + w) for w in words}
    return {w: i for w, i in out.items() if i is not None}


def ioi(tok, n: int, seed: int = 0, bos: bool = False) -> TaskPairs:
    """IOI pairs; corrupted = S2 replaced by IO ("ABB -> ABA"); metric logit diff IO - S."""
    names = _single(tok, NAMES_F + NAMES_M)
    task = TaskPairs("ioi", "logit_diff", notes=f"{len(names)}/40 names single-token")
    rng = random.Random(seed)
    if len(names) < 2:
        return task
    for _ in range(n):
        a, b = rng.sample(sorted(names), 2)
        t, p, o = rng.choice(IOI_TEMPLATES), rng.choice(PLACES), rng.choice(OBJECTS)
        clean = t.format(A=a, B=b, P=p, O=o)
        first = clean.rfind(b)
        corr = clean[:first] + a + clean[first + len(b):]
        task.add(_encode(tok, clean, bos), _encode(tok, corr, bos), [names[a]], [names[b]])
    return task


def gender_pronoun(tok, n: int, seed: int = 0, bos: bool = False) -> TaskPairs:
    """Pronoun pairs; corrupted = a name of the other gender; logit diff " she" vs " he"."""
    fem, mal = _single(tok, NAMES_F), _single(tok, NAMES_M)
    she, he = single_token(tok, " she"), single_token(tok, " he")
    task = TaskPairs("gender-pronoun", "logit_diff",
                     notes=f"{len(fem)}/20 female, {len(mal)}/20 male names single-token")
    if not fem or not mal or she is None or he is None:
        return task
    rng = random.Random(seed)
    for i in range(n):
        t = rng.choice(GENDER_TEMPLATES)
        f, m = rng.choice(sorted(fem)), rng.choice(sorted(mal))
        own, other, good, bad = (f, m, she, he) if i % 2 == 0 else (m, f, he, she)
        task.add(_encode(tok, t.format(name=own), bos), _encode(tok, t.format(name=other), bos),
                 [good], [bad])
    return task


def greater_than(tok, n: int, seed: int = 0, bos: bool = False) -> TaskPairs:
    """Greater-than pairs (years 1100-1799 split as " XX" + "YY"); prob diff over YY tokens."""
    two = {f"{y:02d}": single_token(tok, f"{y:02d}") for y in range(100)}
    task = TaskPairs("greater-than", "prob_diff")
    if any(v is None for v in two.values()):
        task.notes = "two-digit tokens 00..99 are not all single tokens"
        return task
    rng = random.Random(seed)
    for i in range(n):
        xx, yy = rng.randrange(11, 18), 2 + i % 97
        noun = rng.choice(GT_NOUNS)
        clean = f"The {noun} lasted from the year {xx}{yy:02d} to the year {xx}"
        corr = f"The {noun} lasted from the year {xx}01 to the year {xx}"
        c_ids, k_ids = _encode(tok, clean, bos), _encode(tok, corr, bos)
        year = [single_token(tok, f" {xx}"), two[f"{yy:02d}"]]
        if c_ids[-1] != year[0] or not any(c_ids[j:j + 2] == year for j in range(len(c_ids))):
            task.n_candidates += 1  # the year is not split as " XX" + "YY"
            continue
        task.add(c_ids, k_ids, [two[f"{y:02d}"] for y in range(yy + 1, 100)],
                 [two[f"{y:02d}"] for y in range(0, yy + 1)])
    return task


def _known(tok, text: str) -> bool:
    """True if `text` encodes without the unknown token."""
    unk = getattr(tok, "unk_token_id", None)
    return unk is None or unk not in tok(text, add_special_tokens=False)["input_ids"]


def sva(tok, n: int, seed: int = 0, bos: bool = False) -> TaskPairs:
    """Subject-verb agreement across an object relative clause; see the module docstring.

    Each example draws a subject noun and its number (alternating), an object noun
    and number and an embedded verb agreeing with the object: clean "The {s} that
    the {o} {v}", corrupted the same with the subject's other number. Correct
    answers: the main verbs of the subject's number.
    """
    verbs = [(s, p) for s, p in SVA_VERBS if single_token(tok, " " + s) and single_token(tok, " " + p)]
    embedded = [(s, p) for s, p in SVA_EMBEDDED_VERBS
                if _known(tok, f" {s}") and _known(tok, f" {p}")]
    task = TaskPairs("sva", "prob_diff", notes=(
        f"{len(verbs)}/{len(SVA_VERBS)} verb pairs single-token, "
        f"{len(embedded)}/{len(SVA_EMBEDDED_VERBS)} embedded verbs known"))
    if not verbs or not embedded:
        return task
    sing = [single_token(tok, " " + s) for s, _ in verbs]
    plur = [single_token(tok, " " + p) for _, p in verbs]
    rng = random.Random(seed)
    for i in range(n):
        subj, obj, verb = rng.choice(SVA_NOUNS), rng.choice(SVA_NOUNS), rng.choice(embedded)
        num, obj_num = i % 2, rng.randrange(2)  # 0 = singular, 1 = plural
        t = "The {s} that the {o} {v}"
        o, v = obj[obj_num], verb[obj_num]
        clean, corr = t.format(s=subj[num], o=o, v=v), t.format(s=subj[1 - num], o=o, v=v)
        good, bad = (sing, plur) if num == 0 else (plur, sing)
        task.add(_encode(tok, clean, bos), _encode(tok, corr, bos), good, bad)
    return task


def induction(vocab: tuple[int, int], n: int, seed: int = 0, seq_len: int = 12) -> TaskPairs:
    """Repeated random token sequences (ids in [vocab[0], vocab[1])); see the module docstring."""
    lo, hi = vocab
    if hi - lo < seq_len + 1:
        raise ValueError(f"token range {vocab} too small for seq_len {seq_len}")
    task = TaskPairs("induction", "logit_diff")
    rng = random.Random(seed)
    for _ in range(n):
        s = rng.sample(range(lo, hi), seq_len + 1)
        s, spare = s[:-1], s[-1]
        k = rng.randrange(2, seq_len)
        corr_first = s[:k] + [spare] + s[k + 1:]
        task.add(s + s[:k], corr_first + s[:k], [s[k]], [spare])
    return task


def make_task(name: str, tok, n: int, seed: int = 0, vocab_size: int | None = None,
              bos: bool = False) -> TaskPairs:
    """Build a task by name; raises KeyError naming the allowed tasks."""
    if name == "induction":
        n_special = len(getattr(tok, "all_special_ids", []) or []) if tok is not None else 0
        return induction((max(3, n_special), vocab_size), n, seed)
    builders = {"ioi": ioi, "greater-than": greater_than, "gender-pronoun": gender_pronoun,
                "sva": sva}
    if name not in builders:
        raise KeyError(f"unknown circuit task {name!r}; allowed: {', '.join(TASKS)}")
    return builders[name](tok, n, seed, bos)
