import pytest

from dynamics.manifest import load_manifest, write_manifest
from dynamics.suites import SuiteError, get_suite


def _write(tmp_path, text):
    p = tmp_path / "suite.toml"
    p.write_text(text)
    return p


def test_roundtrip(tmp_path):
    write_manifest(tmp_path / "suite.toml", "run", [
        {"name": "m", "params": 100, "checkpoints": [{"step": 10, "path": "m/s10"},
                                                      {"step": 0, "path": "m/s0", "tokens_seen": 0}]}
    ], family="mine", tokens_per_step=64)
    suite = get_suite(tmp_path)
    refs = suite.checkpoints("m")
    assert [r.step for r in refs] == [0, 10]
    assert refs[1].tokens_seen == 640 and refs[1].family == "mine" and refs[1].is_local
    assert refs[1].source == str((tmp_path / "m/s10").resolve())


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd", "a/../../b"])
def test_paths_cannot_escape(tmp_path, path):
    p = _write(tmp_path, f'[suite]\nname="x"\ntokens_per_step=1\n[[models]]\nname="m"\nparams=1\n'
                         f'[[models.checkpoints]]\nstep=1\npath="{path}"\n')
    with pytest.raises(SuiteError, match="escapes|absolute"):
        load_manifest(p)


def test_unknown_key_and_missing_tokens(tmp_path):
    p = _write(tmp_path, '[suite]\nname="x"\nnmae="y"\n[[models]]\nname="m"\nparams=1\ncheckpoints=[]\n')
    with pytest.raises(SuiteError, match="unknown key.*nmae"):
        load_manifest(p)
    p = _write(tmp_path, '[suite]\nname="x"\n[[models]]\nname="m"\nparams=1\n'
                         '[[models.checkpoints]]\nstep=1\npath="a"\n')
    with pytest.raises(SuiteError, match="tokens_seen"):
        load_manifest(p)


def test_declared_params_are_checked_against_the_loaded_model(tmp_path, caplog):
    """Issue 17: params = 1 for a real model was accepted silently (and flops followed)."""
    import dataclasses
    import logging
    import shutil

    from dynamics.loading import ParamsMismatchError, load_checkpoint, param_counts
    from dynamics.manifest import write_manifest
    from tests.helpers import make_tiny_suite

    suite = make_tiny_suite(tmp_path / "s", "neox", steps=(0,))
    ref = get_suite(suite).select(None, "final")[0]
    lm = load_checkpoint(ref)  # the suite declares the true total: no warning, no error
    total, non_emb = param_counts(lm.model)
    emb = lm.model.get_input_embeddings().weight.numel() * 2  # untied in/out embeddings
    assert ref.params == total and non_emb == total - emb and "declares" not in caplog.text
    load_checkpoint(dataclasses.replace(ref, params=int(total * 1.04)))  # nominal size: ok
    with caplog.at_level(logging.WARNING, logger="dynamics.loading"):
        load_checkpoint(dataclasses.replace(ref, params=non_emb))
    assert f"declares params = {non_emb:,}" in caplog.text and "non-embedding" in caplog.text
    with pytest.raises(ParamsMismatchError, match=f"declares params = 1; .* has {total:,} "):
        load_checkpoint(dataclasses.replace(ref, params=1))
    bad = tmp_path / "bad"  # the same folder behind a suite.toml that says params = 1
    shutil.copytree(ref.source, bad / "m" / "step0")
    write_manifest(bad / "suite.toml", "bad", [{"name": "m", "params": 1, "checkpoints": [
        {"step": 0, "path": "m/step0"}]}], tokens_per_step=1)
    with pytest.raises(ParamsMismatchError, match=f"has {total:,} parameters"):
        load_checkpoint(get_suite(str(bad)).select(None, "final")[0])
