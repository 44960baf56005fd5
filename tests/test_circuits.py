"""Circuits (issue #6): graph shapes, graph forward, EAP vs brute-force patching, search, stats."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from dynamics.tiny import tiny_gpt2, tiny_gpt_neox, tiny_opt
from evals.circuits.attribution import corrupted_activations, edge_scores, evaluate_circuit
from evals.circuits.graph import Graph
from evals.circuits.model_surgery import adapter_for, graph_forward, graph_of
from evals.circuits.search import circuit_from_order, greedy_order, minimal_circuit, prune_
from evals.circuits.tasks import induction

BUILDERS = {"neox": tiny_gpt_neox, "opt": tiny_opt, "gpt2": tiny_gpt2}


@pytest.mark.parametrize(("layers", "heads", "edges"), [
    (6, 8, 3_580), (12, 12, 32_347), (24, 16, 231_493), (32, 32, 1_591_857)])
def test_parallel_edge_counts_match_pythia(layers, heads, edges):
    g = Graph(layers, heads, parallel=True)
    assert g.expected_edges() == edges
    if edges < 300_000:
        assert g.n_edges == edges


@pytest.mark.parametrize(("layers", "heads"), [(2, 4), (12, 12), (3, 5)])
def test_sequential_edge_counts_match_formula(layers, heads):
    seq, par = Graph(layers, heads, parallel=False), Graph(layers, heads, parallel=True)
    assert seq.n_edges == seq.expected_edges()
    assert seq.n_edges - par.n_edges == layers * heads  # m{l} also reads layer l's heads
    assert len(seq.src_names) == seq.n_forward and len(seq.dst_names) == seq.n_backward


def test_edge_names_follow_eap_ig():
    g = Graph(2, 2, parallel=True)
    assert g.edge_name(g.head_src(0, 1), g.mlp_dst(1)) == "a0.h1->m1"
    assert g.edge_name(0, g.head_dst(1, 0, 0)) == "input->a1.h0<q>"
    assert g.edge_name(g.mlp_src(1), g.logits_dst) == "m1->logits"
    assert not g.edge_mask[g.head_src(0, 0), g.mlp_dst(0)]  # parallel: m0 does not read a0
    assert Graph(2, 2, parallel=False).edge_mask[g.head_src(0, 0), g.mlp_dst(0)]


@pytest.mark.parametrize("arch", ["neox", "opt", "gpt2"])
def test_graph_forward_equals_hf_forward(arch):
    model = BUILDERS[arch](vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, seed=1)
    ids = torch.randint(3, 96, (3, 11), generator=torch.Generator().manual_seed(0))
    adapter = adapter_for(model)
    with torch.no_grad():
        ref = model(ids).logits
        run = graph_forward(adapter, ids)
    torch.testing.assert_close(run.logits, ref, atol=1e-5, rtol=1e-4)
    g = graph_of(adapter)
    assert run.z.shape == (3, 11, g.n_forward, 32)
    assert g.parallel == (arch == "neox")


def _tiny(arch, seed=3):
    model = BUILDERS[arch](vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, seed=seed)
    return adapter_for(model), induction((3, 64), 12, seed=seed, seq_len=6)


@pytest.mark.parametrize("arch", ["neox", "opt"])
def test_eap_matches_brute_force_edge_patching(arch):
    adapter, task = _tiny(arch)
    g = graph_of(adapter)
    scores = edge_scores(adapter, task, ig_steps=1, batch_size=6)
    clean = evaluate_circuit(adapter, task, None, run="clean").mean()
    full = g.edge_mask.clone()
    exact = torch.zeros_like(scores)
    z_corr = corrupted_activations(adapter, task, 16)
    for u, v in g.edge_mask.nonzero().tolist():
        circuit = full.clone()
        circuit[u, v] = False
        exact[u, v] = clean - evaluate_circuit(adapter, task, circuit, z_corr=z_corr).mean()
    a, b = scores[g.edge_mask], exact[g.edge_mask]
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9
    top_a = set(a.abs().topk(5).indices.tolist())
    top_b = set(b.abs().topk(5).indices.tolist())
    assert b.abs().argmax().item() in top_a and len(top_a & top_b) >= 3


def test_ig_steps_change_scores_but_keep_shape():
    adapter, task = _tiny("neox")
    s1 = edge_scores(adapter, task, ig_steps=1, batch_size=12)
    s3 = edge_scores(adapter, task, ig_steps=3, batch_size=5)  # batching must not matter
    g = graph_of(adapter)
    assert s1.dtype == torch.float32 and s3.shape == s1.shape
    assert (s1[~g.edge_mask] == 0).all() and not torch.equal(s1, s3)
    assert torch.corrcoef(torch.stack([s1[g.edge_mask], s3[g.edge_mask]]))[0, 1] > 0.5


def _hand_input_riemann_sum(adapter, task, alphas):
    """(1/N) sum_k w_k (e_corr - e_clean) . dL/de at e_corr + alpha_k (e_clean - e_corr), by
    autograd through the plain HF forward (inputs_embeds), L = -metric; w_k = 1/len(alphas)."""
    from evals.circuits.attribution import batches, task_metric

    vocab = adapter.model.get_output_embeddings().weight.shape[0]
    total = 0.0
    for b in batches(task, 100, vocab, "cpu"):
        e_clean, e_corr = adapter.embed(b["clean"]).detach(), adapter.embed(b["corrupted"]).detach()
        for a in alphas:
            e = (e_corr + a * (e_clean - e_corr)).requires_grad_(True)
            loss = -task_metric(adapter.model(inputs_embeds=e).logits, b, task.metric).sum()
            (grad,) = torch.autograd.grad(loss, e)
            total += float(((e_corr - e_clean) * grad).sum()) / len(alphas)
    return total / task.n_kept


@pytest.mark.parametrize("arch", ["neox", "opt"])
def test_eap_ig_is_the_riemann_sum_from_corrupted_to_clean(arch):
    """Issue 17: the input node's edges sum to (e_corr - e_clean) . dL/de (every destination
    reads the embedding), so with m = 2 they equal the right Riemann sum at alpha = 1/2, 1 of
    the corrupted -> clean path; not the left sum (alpha = 0, 1/2), not the clean -> corrupted
    path."""
    adapter, task = _tiny(arch)
    sums = {}
    for m in (1, 2, 3):
        sums[m] = float(edge_scores(adapter, task, ig_steps=m, batch_size=5)[0].sum())
        right = _hand_input_riemann_sum(adapter, task, [k / m for k in range(1, m + 1)])
        assert sums[m] == pytest.approx(right, rel=1e-4, abs=1e-6), m
    left = _hand_input_riemann_sum(adapter, task, [0.0, 0.5])
    assert abs(sums[2] - left) > 1e-3 * abs(left)


def test_eap_ig_converges_to_the_metric_gap():
    """Completeness: as m grows the input node's scores sum to mean(metric clean - corrupted)."""
    adapter, task = _tiny("neox")
    gap = float((evaluate_circuit(adapter, task, None, run="clean")
                 - evaluate_circuit(adapter, task, None, run="corrupted")).mean())
    err = {m: abs(float(edge_scores(adapter, task, ig_steps=m, batch_size=12)[0].sum()) - gap)
           for m in (1, 32)}
    assert err[32] < 0.02 * abs(gap) and err[32] < err[1] / 5, (gap, err)


@pytest.mark.parametrize("arch", ["neox", "opt"])
def test_full_circuit_is_model_and_empty_circuit_is_corrupted(arch):
    adapter, task = _tiny(arch)
    g = graph_of(adapter)
    clean = evaluate_circuit(adapter, task, None, run="clean")
    corrupted = evaluate_circuit(adapter, task, None, run="corrupted")
    assert not torch.allclose(clean, corrupted)
    torch.testing.assert_close(evaluate_circuit(adapter, task, g.edge_mask), clean,
                               atol=1e-5, rtol=1e-4)
    empty = torch.zeros_like(g.edge_mask)
    torch.testing.assert_close(evaluate_circuit(adapter, task, empty), corrupted,
                               atol=1e-5, rtol=1e-4)


def test_greedy_order_grows_from_logits_and_prune_drops_dangling_nodes():
    g = Graph(2, 2, parallel=True)
    scores = torch.rand(g.n_forward, g.n_backward, generator=torch.Generator().manual_seed(0))
    order = greedy_order(scores * g.edge_mask, g)
    assert len(order) == g.n_edges and len(set(order)) == g.n_edges
    assert order[0][1] == g.logits_dst
    assert order[0][0] == int((scores[:, g.logits_dst]).argmax())
    mask = torch.zeros(g.n_forward, g.n_backward, dtype=torch.bool)
    mask[g.head_src(1, 0), g.logits_dst] = True  # a1.h0 -> logits, but a1.h0 has no input
    mask[0, g.mlp_dst(0)] = True  # input -> m0, but m0 feeds nothing
    assert not prune_(mask, g).any()
    full = circuit_from_order(order, g.n_edges, g)
    assert torch.equal(full, g.edge_mask)


def test_minimal_circuit_reaches_threshold_and_is_smallest_found():
    adapter, task = _tiny("neox", seed=5)
    g = graph_of(adapter)
    scores = edge_scores(adapter, task, ig_steps=2, batch_size=12)
    res = minimal_circuit(adapter, task, scores, threshold=0.8, start=4, step=4,
                          faithfulness="normalized")
    assert res.faithfulness >= 0.8 and 0 < res.n_edges <= g.n_edges
    assert res.in_circuit.sum() == res.n_edges and not (res.in_circuit & ~g.edge_mask).any()


def _edges_frame():
    rows = []
    circuits = {0: {"e1": 2.0, "e2": 1.0}, 10: {"e2": 3.0, "e3": 1.0}, 20: {"e2": 1.0, "e3": 1.0}}
    for step, circ in circuits.items():
        for e in ("e1", "e2", "e3", "e4"):
            rows.append({"family": "f", "model": "m", "params": 10, "step": step,
                         "tokens_seen": step * 100, "flops": 6000.0 * step, "task": "t",
                         "edge": e, "score": circ.get(e, 0.5), "in_circuit": e in circ})
    return pl.DataFrame(rows)


def test_jaccard_adjacent_and_to_final():
    from stats.circuits import circuit_jaccard

    adj = circuit_jaccard(_edges_frame(), "previous")
    assert adj["step"].to_list() == [10, 20] and adj["ref_step"].to_list() == [0, 10]
    assert adj["jaccard"].to_list() == pytest.approx([1 / 3, 1.0])
    assert adj["weighted_jaccard"].to_list() == pytest.approx([1 / 6, 2 / 4])
    fin = circuit_jaccard(_edges_frame(), "final")
    assert fin["jaccard"].to_list() == pytest.approx([1 / 3, 1.0, 1.0])
    with pytest.raises(ValueError, match="previous"):
        circuit_jaccard(_edges_frame(), "first")


def test_tasks_filter_to_single_tokens_and_keep_lengths_equal():
    from dynamics.tiny import word_tokenizer
    from evals.circuits.tasks import make_task

    words = ("Then, and went to the gave a to . So is such good cook isn't she he Mary John "
             "Anna Tom store ring").split()
    tok = word_tokenizer(words)
    task = make_task("ioi", tok, 10, seed=1)
    assert task.n_kept == 10 and task.notes.startswith("4/40")
    for clean, corr, (good,), (bad,) in zip(task.clean, task.corrupted, task.correct,
                                           task.incorrect, strict=True):
        assert len(clean) == len(corr) and good != bad
        assert good in clean and bad in clean and sum(a != b for a, b in zip(clean, corr)) == 1
    pronoun = make_task("gender-pronoun", tok, 6)
    assert pronoun.n_kept == 6 and {c[0] for c in pronoun.correct} == {tok.convert_tokens_to_ids(w)
                                                                        for w in ("she", "he")}
    gt = make_task("greater-than", tok, 5)
    assert gt.n_kept == 0 and "two-digit" in gt.notes
    with pytest.raises(KeyError, match="allowed"):
        make_task("ioi2", tok, 3)


def test_circuits_evaluator_through_the_sweep(tmp_path):
    from evals.config import load_batch
    from evals.execute import run_batch
    from evals.store import Store
    from stats.circuits import behaviors, circuit_jaccard, circuit_size
    from tests.helpers import make_tiny_suite

    suite = make_tiny_suite(tmp_path / "suite", "neox", steps=(0, 10))
    cfg = load_batch({"suite": str(suite), "output": str(tmp_path / "out"), "evaluators": {
        "circuits": {"tasks": ["induction", "ioi"], "n_examples": 8, "ig_steps": 2,
                     "batch_size": 8, "search_start": 20, "search_step": 20, "component_seq_len": 16,
                     "faithfulness": "normalized", "perform_level": 0}}})
    assert not run_batch(cfg, progress=False).failed
    store = Store(tmp_path / "out")
    edges, summary = store.read("circuit-edges"), store.read("circuit-summary")
    g = Graph(2, 4, parallel=True)
    assert edges.group_by("step").len()["len"].to_list() == [g.n_edges] * 2  # ioi skipped
    assert summary["task"].to_list() == ["induction"] * 2
    assert (summary["faithfulness"] >= 0.8).all()
    per_step = edges.group_by("step").agg(pl.col("in_circuit").sum()).sort("step")
    assert per_step["in_circuit"].to_list() == circuit_size(summary)["circuit_edges"].to_list()
    comps = store.read("components")
    assert sorted(comps["kind"].unique()) == ["duplicate-token", "induction", "previous-token",
                                             "successor"]  # no single-token names: no copy rows
    assert comps.height == 2 * 4 * 2 * 4 and comps["score"].is_between(0, 1).all()
    rows = behaviors(store)
    assert {"circuit_size:induction", "faithfulness:induction", "induction_max"} <= set(
        rows["behavior"])
    assert rows.schema["value"] == pl.Float64 and rows["n_trials"].is_null().all()
    assert circuit_jaccard(edges, "final")["jaccard"].to_list()[-1] == 1.0
    assert behaviors(Store(tmp_path / "empty")) is None


def test_copy_scores_on_single_token_names():
    from dynamics.tiny import word_tokenizer
    from evals.circuits.components import attention_scores, copy_scores

    words = ("Then, and went to the gave a to . Mary John Anna Tom store ring garden bone").split()
    tok = word_tokenizer(words)
    model = tiny_gpt_neox(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4, seed=2)
    adapter = adapter_for(model)
    copy = copy_scores(adapter, tok, n_prompts=6)
    assert copy.shape == (2, 4) and ((copy >= 0) & (copy <= 1)).all()
    att = attention_scores(adapter, (3, len(tok)), n_seqs=2, seq_len=8, bos_id=0)
    for kind, t in att.items():
        assert t.shape == (2, 4) and ((t >= 0) & (t <= 1)).all(), kind
    assert copy_scores(adapter, word_tokenizer(["x"]), n_prompts=3) is None


def test_attention_scores_read_the_right_diagonals(monkeypatch):
    """Synthetic patterns: head 0 induction, head 1 previous-token, head 2 duplicate-token."""
    from types import SimpleNamespace

    from evals.circuits import components

    n, bos = 5, 1
    size = bos + 2 * n

    def fake_forward(adapter, x):
        pat = torch.zeros(x.shape[0], 3, size, size)
        for q in range(size):
            for head, offset in enumerate((n - 1, 1, n)):
                pat[:, head, q, max(0, q - offset)] = 1.0
        return SimpleNamespace(patterns=[pat])

    monkeypatch.setattr(components, "graph_forward", fake_forward)
    adapter = SimpleNamespace(model=torch.nn.Linear(1, 1))
    att = components.attention_scores(adapter, (3, 50), n_seqs=2, seq_len=n, bos_id=0)
    assert att["induction"][0].tolist() == [1.0, 0.0, 0.0]
    assert att["previous-token"][0].tolist() == [0.0, 1.0, 0.0]
    assert att["duplicate-token"][0].tolist() == [0.0, 0.0, 1.0]


def test_task_induction_reads_positions_after_earlier_copies(monkeypatch):
    from types import SimpleNamespace

    from evals.circuits import components
    from evals.circuits.tasks import TaskPairs

    task = TaskPairs("trigger", "logit_diff")
    task.add([0, 5, 9, 7, 9, 6, 9], [0, 5, 9, 8, 9, 8, 9], [6], [8])  # 9 at 2, 4 -> keys 3, 5

    def fake_forward(adapter, x):
        pat = torch.zeros(1, 2, 7, 7)
        pat[0, 0, 6, 3] = pat[0, 0, 6, 5] = 0.5  # head 0: all on the induction targets
        pat[0, 1, 6, 2] = 1.0  # head 1: on the earlier copy itself
        return SimpleNamespace(patterns=[pat])

    monkeypatch.setattr(components, "graph_forward", fake_forward)
    adapter = SimpleNamespace(model=torch.nn.Linear(1, 1), n_layers=1, n_heads=2)
    assert components.task_induction_scores(adapter, task).tolist() == [[1.0, 0.0]]
    empty = TaskPairs("trigger", "logit_diff")
    empty.add([1, 2, 3], [1, 2, 4], [5], [6])
    assert components.task_induction_scores(adapter, empty) is None


def test_sva_prompt_has_the_embedded_verb_and_labels_agree_with_the_subject():
    """Issue 17: "The {s} that the {o}" asked for the relative clause's verb (agreeing with
    the object); the prompt must end with the embedded verb, the answer is the main verb."""
    from dynamics.tiny import word_tokenizer
    from evals.circuits.tasks import SVA_EMBEDDED_VERBS, SVA_NOUNS, SVA_VERBS, make_task

    nouns = [w for pair in SVA_NOUNS for w in pair]
    verbs = [w for pair in SVA_VERBS + SVA_EMBEDDED_VERBS for w in pair]
    tok = word_tokenizer(["The", "that", "the", *nouns, *verbs])
    task = make_task("sva", tok, 40, seed=2)
    assert task.n_kept == 40
    number = {w: i for pair in SVA_NOUNS + SVA_VERBS + SVA_EMBEDDED_VERBS
              for i, w in enumerate(pair)}  # 0 singular, 1 plural
    main = {n: {tok.convert_tokens_to_ids(p[n]) for p in SVA_VERBS} for n in (0, 1)}
    seen = set()
    for clean, corr, good, bad in zip(task.clean, task.corrupted, task.correct, task.incorrect,
                                      strict=True):
        the, subj, that, the2, obj, verb = tok.convert_ids_to_tokens(clean)
        assert (the, that, the2) == ("The", "that", "the")
        assert number[verb] == number[obj] and verb in {w for p in SVA_EMBEDDED_VERBS for w in p}
        assert set(good) == main[number[subj]] and set(bad) == main[1 - number[subj]]
        other = tok.convert_ids_to_tokens(corr)
        assert other[1] != subj and number[other[1]] == 1 - number[subj] and other[2:] == [
            that, the2, obj, verb]
        seen.add((number[subj], number[obj]))
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}  # agreement and attractor cases both


def test_not_performed_reason_on_synthetic_metrics():
    """Issue 17: near-zero or negative metrics are "not performed", a clear gap is performed."""
    from evals.circuits.search import not_performed_reason

    gen = torch.Generator().manual_seed(0)
    assert not_performed_reason(torch.tensor([1.9, 2.1, 2.0, 2.2]),
                                torch.tensor([1.0, 1.0, 1.0, 1.0])) is None
    noise = not_performed_reason(0.01 + torch.randn(32, generator=gen),
                                 torch.randn(32, generator=gen))
    assert noise is not None and "bootstrap lower bound" in noise
    wrong = not_performed_reason(torch.tensor([-0.2, -0.1]), torch.tensor([-1.0, -1.0]))
    assert wrong is not None and "prefers the wrong answer" in wrong
    same = torch.tensor([0.5, 0.7, 0.6])
    assert "does not clearly hurt" in not_performed_reason(same, same)
    small = torch.full((40,), 0.02) + 0.001 * torch.randn(40, generator=gen)
    assert not_performed_reason(small, small - 0.01) is None  # small but consistent gap
    with pytest.raises(ValueError, match="level"):
        not_performed_reason(same, same, level=1.5)


def _answer_task(adapter, prompts, corrupted, flip=False):
    """A task whose answers are the model's own best (correct) and worst (incorrect) tokens."""
    from evals.circuits.tasks import TaskPairs

    with torch.no_grad():
        last = adapter.model(torch.tensor(prompts)).logits[:, -1]
    task = TaskPairs("own", "logit_diff")
    for p, c, row in zip(prompts, corrupted, last, strict=True):
        best, worst = int(row.argmax()), int(row.argmin())
        task.add(p, c, [worst if flip else best], [best if flip else worst])
    return task


def test_evaluator_records_not_performed_tasks_without_a_circuit():
    """Issue 17: not performed -> null circuit_edges / faithfulness, a reason, no edge rows."""
    from evals.circuits.evaluator import Circuits, CircuitsOptions

    model = tiny_gpt_neox(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, seed=4)
    adapter = adapter_for(model)
    g = graph_of(adapter)
    names = [g.edge_name(u, v) for u, v in g.edge_mask.nonzero().tolist()]
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(3, 64, (12, 6), generator=gen).tolist()
    corr = torch.randint(3, 64, (12, 6), generator=gen).tolist()
    ev = Circuits(CircuitsOptions(tasks=("induction",), ig_steps=1, search_start=4,
                                  search_step=4, faithfulness="normalized"))
    frame, row = ev._circuit(adapter, _answer_task(adapter, clean, corr), names)
    assert row["reason"] is None and row["circuit_edges"] > 0 and frame.height == g.n_edges
    for task, why in ((_answer_task(adapter, clean, clean), "does not clearly hurt"),
                      (_answer_task(adapter, clean, corr, flip=True), "wrong answer")):
        frame, row = ev._circuit(adapter, task, names)
        assert frame is None and why in row["reason"]
        assert row["circuit_edges"] is None and row["faithfulness"] is None
        assert math.isfinite(row["metric_clean"]) and math.isfinite(row["metric_corrupted"])


def test_not_performed_rows_stay_out_of_behaviors_and_into_the_report(tmp_path):
    from evals.schema import table_schema
    from evals.store import Store
    from reports import build
    from stats.circuits import behaviors, circuit_size, not_performed

    store = Store(tmp_path)
    for step, reason in ((0, "mean clean metric -0.1 <= 0"), (10, None)):
        key = {"family": "f", "model": "m", "params": 10, "step": step, "tokens_seen": step * 100,
               "flops": 6000.0 * step}
        store.write("circuit-summary", pl.DataFrame([{
            **key, "task": "sva", "metric_clean": 1.0 if reason is None else -0.1,
            "metric_corrupted": 0.0, "circuit_edges": None if reason else 12,
            "faithfulness": None if reason else 0.85, "reason": reason}],
            schema=table_schema("circuit-summary")))
    rows = behaviors(store)
    got = {(r["behavior"], r["step"]): r["value"] for r in rows.iter_rows(named=True)}
    assert got == {("circuit_size:sva", 10): 12.0, ("faithfulness:sva", 10): 0.85,
                   ("task_metric:sva", 0): -0.1, ("task_metric:sva", 10): 1.0}
    assert circuit_size(store.read("circuit-summary"))["reason"].null_count() == 1
    assert not_performed(store.read("circuit-summary"))["steps"].to_list() == [[0]]
    notes = " ".join(build.circuits_section(build.Context(store)).notes)
    assert "not performed" in notes and "m / sva: steps 0 (1 of 2 checkpoints)" in notes
