"""A tiny Hugging Face hub on 127.0.0.1 for integration tests (issue #18).

Serves the endpoints `huggingface_hub.snapshot_download` uses, for repos
built in the test from local checkpoint folders:

    GET       /api/models/{org}/{name}/revision/{rev}   model info: {id, sha, siblings}
    GET       /api/models/{org}/{name}/tree/{commit}     file list: [{type, path, size, oid}]
    GET       /api/models/{org}/{name}/refs              branches: [{name, ref, targetCommit}]
                                                         (`list_repo_refs`, issue 20)
    HEAD, GET /{org}/{name}/resolve/{rev}/{file}         the file, with ETag (sha256 of the bytes,
                                                         so identical files share one cache blob),
                                                         X-Repo-Commit and Content-Length

Unknown repos, revisions and files answer 404 with the `X-Error-Code` header
the real hub sends (RepoNotFound, RevisionNotFound, EntryNotFound), so the
client raises the same exceptions as against huggingface.co. Every request is
recorded in `hub.requests` as (method, path).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Revision:
    commit: str
    files: dict[str, bytes]


@dataclass
class TinyHub:
    """Repos -> revision name -> files; `serve()` starts the server in a thread."""

    repos: dict[str, dict[str, Revision]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def add_revision(self, repo_id: str, revision: str, folder: Path) -> str:
        """Publish a checkpoint folder's files as `repo_id@revision`; returns its commit hash."""
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        self.repos.setdefault(repo_id, {})[revision] = Revision(commit, files)
        return commit

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self) -> TinyHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def find(self, repo_id: str, rev: str) -> Revision | None:
        revs = self.repos.get(repo_id, {})
        return revs.get(rev) or next((r for r in revs.values() if r.commit == rev), None)


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: TinyHub

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append((self.command, path))
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):]
            if rest.endswith("/refs"):
                return self._refs(rest[: -len("/refs")], body)
            for kind in ("/revision/", "/tree/"):
                if kind in rest:
                    repo_id, rev = rest.split(kind, 1)
                    return self._api(repo_id, rev, kind.strip("/"), body)
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            rev, _, name = rest.partition("/")
            return self._file(repo_id, rev, name, body)
        self._error(404, "RepoNotFound", f"no route {path}")

    def _revision(self, repo_id: str, rev: str) -> Revision | None:
        if repo_id not in self.hub.repos:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        found = self.hub.find(repo_id, rev)
        if found is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return found

    def _refs(self, repo_id: str, body: bool) -> None:
        if repo_id not in self.hub.repos:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": r.commit}
                    for n, r in self.hub.repos[repo_id].items()]
        data = {"branches": branches, "converts": [], "tags": []}
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, body)

    def _api(self, repo_id: str, rev: str, kind: str, body: bool) -> None:
        found = self._revision(repo_id, rev)
        if found is None:
            return
        if kind == "revision":
            data = {"id": repo_id, "modelId": repo_id, "sha": found.commit, "private": False,
                    "siblings": [{"rfilename": n} for n in found.files]}
        else:
            data = [{"type": "file", "path": n, "size": len(b),
                     "oid": hashlib.sha1(b).hexdigest()} for n, b in found.files.items()]
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, body)

    def _file(self, repo_id: str, rev: str, name: str, body: bool) -> None:
        found = self._revision(repo_id, rev)
        if found is None:
            return
        if name not in found.files:
            return self._error(404, "EntryNotFound", f"{name} does not exist at {rev}")
        data = found.files[name]
        headers = {"ETag": f'"{_etag(data)}"', "X-Repo-Commit": found.commit,
                   "Content-Type": "application/octet-stream"}
        self._send(200, data, headers, body)

    def _error(self, code: int, error_code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self._send(code, data, {"X-Error-Code": error_code, "X-Error-Message": message,
                                "Content-Type": "application/json"}, True)

    def _send(self, code: int, data: bytes, headers: dict, body: bool) -> None:
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


def point_hub_at(server: TinyHub, monkeypatch, cache) -> None:
    """Point huggingface_hub at `server` (online) with its cache in `cache`, for one test.

    huggingface_hub reads the endpoint and offline flag when it is imported, so the
    module constants are patched as well as the environment.
    """
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
