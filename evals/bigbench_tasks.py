"""BIG-bench JSON multiple-choice tasks: reading and prompt formatting (no torch).

Follows BIG-bench's own JSON-task conventions (`bigbench/api/json_task.py` in
the `bigbench==1.0.0` sdist; ../shared/spec/trajectories.md section 4):

- A folder holds `<task>/task.json`. A task whose file has no `examples` has
  subtasks `<task>/<subtask>/task.json`; each subtask is read and formatted
  from its own file only, with BIG-bench's defaults for missing keys (the
  parent's keys are not merged), and named "<task>/<subtask>". Subtasks with
  no multiple-choice example (generative ones) are skipped and listed.
- Duplicate examples (same JSON) are dropped first, keeping order.
- Each example: if `append_choices_to_input`, the choices, sorted then permuted
  by `numpy.random.RandomState(seed)` (a fresh generator per example), are
  appended as `input + choice_prefix + choice_prefix.join(choices)`; then
  `input = example_input_prefix + input + example_output_prefix`.
- k-shot: one `RandomState(seed)` per task; for each query (in order), k other
  examples are drawn without replacement and `shot.input + rng.choice(shot.target)`
  is prepended for each, joined by `few_shot_example_separator`; then
  `task_prefix` goes in front of everything.
- The scored choices are the `target_scores` keys in file order; the target of a
  shot is its `target` if given, else the first choice with the maximum score.

Worked example (defaults, k = 1, append_choices_to_input, one shot S with
input "2+2?" and choices {"4": 1, "5": 0}, query Q "1+1?" with {"2": 1, "3": 0},
permutation keeping sorted order):
    "\\nQ: 2+2?\\n  choice: 4\\n  choice: 5\\nA: 4" + "\\n" +
    "\\nQ: 1+1?\\n  choice: 2\\n  choice: 3\\nA: "
and the model scores "2" and "3" as continuations of that prompt.

Deviation: `max_examples` keeps the first N queries in file order (after
dedup) instead of BIG-bench's random subset, so a quick run is a prefix of the
full run; shots are still drawn from all examples.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
    "few_shot_example_separator": "\n",
}


class TaskFileError(ValueError):
    """A task.json that is not a valid multiple-choice task (names the file)."""


@dataclass(frozen=True)
class MCTask:
    """One scored unit: a top-level task or a subtask ("parent/subtask")."""

    name: str
    path: Path
    examples: list[dict]  # deduplicated, each with input and target_scores
    settings: dict  # the DEFAULTS keys, resolved for this file
    n_raw: int = 0  # examples in the file before dedup


@dataclass(frozen=True)
class MCExample:
    """A formatted query: the prompt and the choices to score as continuations."""

    task: str
    example_id: int
    prompt: str
    choices: list[str]
    target_scores: list[float]


def _check_example(path: Path, i: int, ex: object) -> None:
    if not isinstance(ex, dict) or "input" not in ex:
        raise TaskFileError(f"{path}: example {i} has no 'input'")
    scores = ex.get("target_scores")
    if not isinstance(scores, dict) or not scores:
        raise TaskFileError(f"{path}: example {i} has no choices ('target_scores' missing or empty)")
    bad = {k: v for k, v in scores.items()
           if not isinstance(v, (int, float)) or isinstance(v, bool)}
    if bad:
        raise TaskFileError(f"{path}: example {i} has non-numeric target_scores {bad}")


def dedup(examples: list[dict]) -> list[dict]:
    seen, out = set(), []
    for ex in examples:
        key = json.dumps(ex)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def read_task_file(path: Path, name: str) -> MCTask | None:
    """Read one task.json with examples; None for a generative (no target_scores) file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TaskFileError(f"{path}: cannot read JSON: {err}") from err
    examples = data.get("examples")
    if not isinstance(examples, list) or not examples:
        raise TaskFileError(f"{path}: no examples")
    if not any(isinstance(ex, dict) and "target_scores" in ex for ex in examples):
        return None  # generative task: not multiple choice
    for i, ex in enumerate(examples):
        _check_example(path, i, ex)
    settings = {k: data.get(k, v) for k, v in DEFAULTS.items()}
    return MCTask(name, path, dedup(examples), settings, len(examples))


def read_task(folder: Path) -> tuple[list[MCTask], list[str]]:
    """A task folder -> its MC tasks (itself, or its subtasks) and skipped subtask names."""
    path = folder / "task.json"
    if not path.is_file():
        raise TaskFileError(f"{folder}: no task.json")
    data = json.loads(path.read_text())
    if "examples" in data:
        task = read_task_file(path, folder.name)
        if task is None:
            raise TaskFileError(f"{path}: no multiple-choice example (no 'target_scores')")
        return [task], []
    subs = sorted(p.parent for p in folder.glob("*/task.json"))
    if not subs:
        raise TaskFileError(f"{path}: no examples and no subtask folders")
    tasks, skipped = [], []
    for sub in subs:
        task = read_task_file(sub / "task.json", f"{folder.name}/{sub.name}")
        if task is None:
            skipped.append(f"{folder.name}/{sub.name}")
            log.info("skipping generative subtask %s/%s", folder.name, sub.name)
        else:
            tasks.append(task)
    return tasks, skipped


def format_example(ex: dict, settings: dict, seed: int) -> dict:
    """BIG-bench's default_format_fn for one MC example (fresh RandomState(seed))."""
    rng = np.random.RandomState(seed)
    out = copy.deepcopy(ex)
    scores = out["target_scores"]
    if settings["append_choices_to_input"]:
        permuted = rng.permutation(sorted(scores))
        prefix = settings["choice_prefix"]
        out["input"] = out["input"] + prefix + prefix.join(permuted)
    if "target" not in out:
        best = max(scores.values())
        out["target"] = [k for k, v in scores.items() if v == best][0]
    if not isinstance(out["target"], list):
        out["target"] = [out["target"]]
    out["input"] = settings["example_input_prefix"] + out["input"] + settings["example_output_prefix"]
    return out


def format_task(task: MCTask, k: int, seed: int = 42, max_examples: int | None = None
                ) -> list[MCExample]:
    """Formatted k-shot queries of a task, in file order (see the module docstring)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    s = task.settings
    formatted = [format_example(ex, s, seed) for ex in task.examples]
    if k and len(formatted) < k + 1:
        raise TaskFileError(f"{task.path}: {len(formatted)} distinct examples, too few for k={k}")
    rng = np.random.RandomState(seed)
    sep = s["few_shot_example_separator"]
    out = []
    n = len(formatted) if max_examples is None else min(max_examples, len(formatted))
    for i in range(n):
        query = formatted[i]
        prompt = query["input"]
        if k:
            others = [x for x in formatted if x != query]
            shots = list(rng.choice(others, k, replace=False))
            context = sep.join(shot["input"] + rng.choice(shot["target"]) for shot in shots)
            prompt = context + sep + prompt
        choices = list(query["target_scores"])
        out.append(MCExample(task.name, i, s["task_prefix"] + prompt, choices,
                             [float(query["target_scores"][c]) for c in choices]))
    return out


def discover(folder: str | Path) -> list[str]:
    """Top-level task names in a BIG-bench folder (subfolders with task.json)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"BIG-bench folder {root} does not exist")
    return sorted(p.parent.name for p in root.glob("*/task.json"))


def _single_correct(task: MCTask) -> bool:
    return all(sum(1 for v in ex["target_scores"].values() if v == 1) == 1
               for ex in task.examples)


def multiple_choice(folder: str | Path) -> dict[str, list[MCTask]]:
    """Top-level task name -> its MC tasks, for every task of `folder` readable as multiple
    choice. A clone of BIG-bench also holds generative JSON tasks (no `target_scores`)
    and malformed ones; they are left out, listed in one log line."""
    out, left = {}, []
    for name in discover(folder):
        try:
            out[name] = read_task(Path(folder) / name)[0]
        except TaskFileError as err:
            left.append(f"{name} ({str(err).rsplit(': ', 1)[-1]})")
    if left:
        log.info("%d tasks of %s are not multiple choice: %s", len(left), folder, ", ".join(left))
    return out


def xia74(folder: str | Path) -> list[str]:
    """Xia et al.'s selection: tasks with < 1000 examples, each with exactly one correct
    choice (one target_scores value equal to 1), plus periodic_elements.

    The example count is the file's, before dedup (sports_understanding has
    1,000 examples, 986 distinct: excluded). A task with subtasks qualifies
    when each of its MC subtasks does. Tasks that are not multiple choice
    (generative ones, in a BIG-bench clone) do not qualify. Returns top-level
    task names present in `folder`; on ../shared/data/bigbench that is 61
    top-level tasks, 9 tasks with subtasks, and periodic_elements.
    """
    return [name for name, tasks in multiple_choice(folder).items()
            if name == "periodic_elements"
            or all(t.n_raw < 1000 and _single_correct(t) for t in tasks)]


BREAKTHROUGH = ("code_line_description", "human_organs_senses", "implicatures",
                "phrase_relatedness", "what_is_the_tao", "swahili_english_proverbs")
LINEAR = ("date_understanding", "hhh_alignment", "fantasy_reasoning", "implicit_relations",
          "intent_recognition", "figure_of_speech_detection", "similarities_abstraction",
          "simple_ethical_questions", "strange_stories", "undo_permutation", "misconceptions",
          "nonsense_words_grammar")
NAMED_SELECTIONS = {"xia74": xia74, "breakthrough": lambda f: list(BREAKTHROUGH),
                    "linear": lambda f: list(LINEAR), "all": lambda f: list(multiple_choice(f))}


def select_tasks(folder: str | Path, tasks: list[str] | str) -> list[str]:
    """Resolve a task list or a named selection ("all": every multiple-choice task, "xia74",
    "breakthrough", "linear")."""
    available = discover(folder)
    if isinstance(tasks, str):
        if tasks not in NAMED_SELECTIONS:
            raise ValueError(f"unknown task selection {tasks!r}; allowed: a list of task names "
                             f"or one of {list(NAMED_SELECTIONS)}")
        names = NAMED_SELECTIONS[tasks](folder)
    else:
        names = list(tasks)
    missing = [t for t in names if t not in available]
    if missing:
        raise ValueError(f"tasks {missing} not found in {folder} ({len(available)} tasks there)")
    return names
