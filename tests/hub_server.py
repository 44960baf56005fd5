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

and the same for dataset repos (`add_dataset`), which `datasets.load_dataset`
reads, streamed or not, through `HfFileSystem`:

    GET       /api/datasets/{org}/{name}[/revision/{rev}]  dataset info (main when no revision)
    GET       /api/datasets/{org}/{name}/tree/{rev}[/{dir}] files and folders ([?recursive=true])
    POST      /api/datasets/{org}/{name}/paths-info/{rev}  info of the posted `paths`
    HEAD, GET /datasets/{org}/{name}/resolve/{rev}/{file}  the file (a `Range: bytes=a-b` header
                                                         answers 206 with those bytes)

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
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Revision:
    commit: str
    files: dict[str, bytes]


@dataclass
class TinyHub:
    """Repos -> revision name -> files; `serve()` starts the server in a thread."""

    repos: dict[str, dict[str, Revision]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Revision]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def add_revision(self, repo_id: str, revision: str, folder: Path) -> str:
        """Publish a checkpoint folder's files as `repo_id@revision`; returns its commit hash."""
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        self.repos.setdefault(repo_id, {})[revision] = Revision(commit, files)
        return commit

    def add_dataset(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
        """Publish a dataset repo's files (paths may hold folders: "data/train.parquet")."""
        commit = hashlib.sha1(f"datasets/{repo_id}@{revision}".encode()).hexdigest()
        self.datasets.setdefault(repo_id, {})[revision] = Revision(commit, dict(files))
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

    def find(self, repo_id: str, rev: str, kind: str = "models") -> Revision | None:
        revs = (self.datasets if kind == "datasets" else self.repos).get(repo_id, {})
        return revs.get(rev) or next((r for r in revs.values() if r.commit == rev), None)


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entries(files: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
    """Tree entries under `folder` (its direct children, or all below when recursive)."""
    prefix = f"{folder}/" if folder else ""
    out: dict[str, dict] = {}
    for name, data in sorted(files.items()):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].split("/")
        for depth in range(1, len(parts)):  # the folders on the way
            if depth == 1 or recursive:
                sub = prefix + "/".join(parts[:depth])
                out.setdefault(sub, {"type": "directory", "path": sub,
                                     "oid": hashlib.sha1(sub.encode()).hexdigest()})
        if len(parts) == 1 or recursive:
            out[name] = {"type": "file", "path": name, "size": len(data),
                         "oid": hashlib.sha1(data).hexdigest()}
    return list(out.values())


class _Handler(BaseHTTPRequestHandler):
    hub: TinyHub

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append(("POST", path))
        rest = path[len("/api/datasets/"):] if path.startswith("/api/datasets/") else ""
        if "/paths-info/" not in rest:
            return self._error(404, "RepoNotFound", f"no route {path}")
        repo_id, rev = rest.split("/paths-info/", 1)
        found = self._revision(repo_id, rev, "datasets")
        if found is not None:
            wanted = [p.strip("/") for p in form.get("paths", [])]
            entries = [e for e in _entries(found.files, "", True) if e["path"] in wanted]
            self._json(entries, True)

    def _answer(self, body: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.hub.requests.append((self.command, path))
        for kind in ("models", "datasets"):
            if path.startswith(f"/api/{kind}/"):
                return self._api_route(kind, path[len(f"/api/{kind}/"):], parse_qs(url.query),
                                       body)
        kind, path = ("datasets", path[len("/datasets"):]) if path.startswith("/datasets/") \
            else ("models", path)
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            rev, _, name = rest.partition("/")
            return self._file(repo_id, rev, name, body, kind)
        self._error(404, "RepoNotFound", f"no route {path}")

    def _api_route(self, kind: str, rest: str, query: dict, body: bool) -> None:
        if rest.endswith("/refs"):
            return self._refs(rest[: -len("/refs")], body)
        if "/tree/" in rest:
            repo_id, tail = rest.split("/tree/", 1)
            rev, _, folder = tail.partition("/")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            return self._api(repo_id, rev, "tree", body, kind, folder, recursive)
        if "/revision/" in rest:
            repo_id, rev = rest.split("/revision/", 1)
            return self._api(repo_id, rev, "revision", body, kind)
        return self._api(rest, "main", "revision", body, kind)

    def _revision(self, repo_id: str, rev: str, kind: str = "models") -> Revision | None:
        repos = self.hub.datasets if kind == "datasets" else self.hub.repos
        if repo_id not in repos:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        found = self.hub.find(repo_id, rev, kind)
        if found is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return found

    def _refs(self, repo_id: str, body: bool) -> None:
        if repo_id not in self.hub.repos:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": r.commit}
                    for n, r in self.hub.repos[repo_id].items()]
        data = {"branches": branches, "converts": [], "tags": []}
        self._json(data, body)

    def _api(self, repo_id: str, rev: str, what: str, body: bool, kind: str = "models",
             folder: str = "", recursive: bool = False) -> None:
        found = self._revision(repo_id, rev, kind)
        if found is None:
            return
        if what == "revision":
            data = {"id": repo_id, "sha": found.commit, "private": False, "disabled": False,
                    "siblings": [{"rfilename": n} for n in found.files]}
            if kind == "models":
                data["modelId"] = repo_id
        else:
            data = _entries(found.files, folder.strip("/"), recursive)
        self._json(data, body)

    def _json(self, data, body: bool) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, body)

    def _file(self, repo_id: str, rev: str, name: str, body: bool, kind: str = "models") -> None:
        found = self._revision(repo_id, rev, kind)
        if found is None:
            return
        if name not in found.files:
            return self._error(404, "EntryNotFound", f"{name} does not exist at {rev}")
        data = found.files[name]
        headers = {"ETag": f'"{_etag(data)}"', "X-Repo-Commit": found.commit,
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            start, _, end = wanted[len("bytes="):].partition("-")
            first = int(start) if start else max(len(data) - int(end), 0)
            last = min(int(end), len(data) - 1) if end and start else len(data) - 1
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return self._send(206, data[first: last + 1], headers, body)
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
