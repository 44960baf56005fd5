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
