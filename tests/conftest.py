"""Test setup: no network, offline hub, tiny seeded models only."""

from __future__ import annotations

import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["RAY_AUTH_MODE"] = "disabled"

import pytest  # noqa: E402
# transformers' log handler binds sys.stderr when the library is first imported; import it
# now (the session's stderr) rather than inside a test whose captured stderr closes after it
# ("--- Logging error ---" in whichever later test logs through transformers).
import transformers.utils.logging  # noqa: E402, F401

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
        return _real_connect(self, address)  # local services (Ray, Chromium devtools) only
    if self.family == getattr(socket, "AF_UNIX", None):
        return _real_connect(self, address)
    raise RuntimeError(f"network access in tests is blocked (tried {address!r})")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    yield


@pytest.fixture(scope="session")
def toy_suite():
    """The trained toy suite, fast scale, seed 0 (its folder, holding suite.toml and data/).

    Cached under <repo>/.cache/toy/ (git-ignored): trained once (two families, six models,
    the demo's models and steps, fewer checkpoints: ~750 s wall at load ~5 in two
    single-thread workers, issue 26; BENCHMARKS.md), reused while its config hash
    matches. Data files: see dynamics.toy.export.
    """
    from pathlib import Path

    from dynamics.toy.train import build_toy_suite

    return build_toy_suite(Path(__file__).resolve().parents[1] / ".cache" / "toy", "fast", 0)
