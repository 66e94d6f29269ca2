"""hf:// checkpoints, for real, against a local HTTP server answering the Hub's endpoints."""

import hashlib
import threading
import time
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, assert_one_line_error, probe, run_cli, run_cli_on_terminal

COMMIT = "a" * 40


class FakeHub:
    """Serves files at /{owner}/{repo}/resolve/{revision}/{filename}, with the headers the
    huggingface_hub client reads (X-Repo-Commit, ETag, Content-Length, X-Error-Code)."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        # owner/repo -> (status, X-Error-Code) answered for it; "cut": half the file, then
        # the connection closes
        self.faults: dict[str, tuple[int, str] | str] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body: bool):
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "RepoNotFound")
                fault = hub.faults.get("/".join(parts[:2]))
                if isinstance(fault, tuple):
                    return self._error(*fault)
                key = "/".join(parts[:2] + parts[4:])
                if key not in hub.files:
                    return self._error(404, "EntryNotFound")
                data = hub.files[key]
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                # as for an LFS file: the ETag is the sha256, which names the cached blob
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data[:len(data) // 2] if fault == "cut" else data)

            def _error(self, code: int, error: str):
                self.send_response(code)
                self.send_header("X-Error-Code", error)
                self.send_header("X-Error-Message", f"{error} for {self.path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hub_env(small_model, tmp_path):
    shapes = (ROOT / "checkpoints" / "shapes.safetensors").read_bytes()
    corrupted = bytearray(shapes)
    corrupted[-100] ^= 0xFF  # still parses as safetensors, but is not the registered file
    good = small_model.read_bytes()
    hub = FakeHub({"owner/models/model.safetensors": good, "owner/multi/a.safetensors": good,
                   "owner/models/shapes.safetensors": bytes(corrupted),
                   "owner/models/broken.safetensors": good[:1000]})
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
    yield hub, env
    hub.stop()


def animate(spec, out, env):
    return run_cli("animate", ROOT / "examples/shapes/source.png", ROOT / "examples/shapes/driving.mp4",
                   "-o", out, "-c", spec, "--overwrite", env=env)


def test_download_then_cache_with_server_stopped(hub_env, tmp_path):
    hub, env = hub_env
    result = animate("hf://owner/models", tmp_path / "a.mp4", env)
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "a.mp4")["frames"] == 32
    assert ("GET", "/owner/models/resolve/main/model.safetensors") in hub.requests
    cached = list((tmp_path / "hf").rglob("model.safetensors"))
    assert cached, "the file went to huggingface_hub's standard cache"
    hub.stop()
    code, shown, _ = run_cli_on_terminal(
        "animate", ROOT / "examples/shapes/source.png", ROOT / "examples/shapes/driving.mp4",
        "-o", tmp_path / "b.mp4", "-c", "hf://owner/models", tmp_path=tmp_path, env=env)
    assert code == 0, shown
    assert "fetching hf://owner/models from the Hub or its cache" in shown  # on a terminal
    result = animate("hf://owner/models@main", tmp_path / "c.mp4", {**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr


def test_hub_errors_are_one_line(hub_env, tmp_path):
    hub, env = hub_env
    out = tmp_path / "o.mp4"
    assert_one_line_error(animate("hf://owner/models/missing.safetensors", out, env),
                          "missing.safetensors not found in Hub repo owner/models")
    assert_one_line_error(animate("hf://owner/models/shapes.safetensors", out, env),
                          "is named like the registered 'shapes' but is not that file")
    assert_one_line_error(animate("hf://owner/models/broken.safetensors", out, env),
                          "not a readable safetensors")
    assert_one_line_error(animate("hf://owner/models/other.safetensors", out,
                                  {**env, "HF_HUB_OFFLINE": "1"}),
                          "HF_HUB_OFFLINE is set and other.safetensors", "not in the local cache")
    for spec in ("hf://owner", "hf://owner/models@"):
        assert_one_line_error(animate(spec, out, env), "hf://owner/repo")
    requests = len(hub.requests)
    assert_one_line_error(animate("hf://owner/models/weights.bin", out, env),
                          "names weights.bin, not a checkpoint file")
    assert_one_line_error(animate("HF://owner/models", out, env), "in lower case")
    assert_one_line_error(animate(" hf://owner/models", out, env), "with no space before it")
    # a --config where the file carries its own, or none with an authors' file: the name
    # tells, before hundreds of MB are downloaded to be thrown away
    keypoints = ("keypoints", ROOT / "examples/shapes/source.png", "-o", tmp_path / "k.png")
    assert_one_line_error(run_cli(*keypoints, "-c", "hf://owner/models", "--config", "shapes",
                                  env=env), "leave --config out")
    assert_one_line_error(run_cli(*keypoints, "-c", "hf://owner/authors/cpk.pth.tar", env=env),
                          "is an authors' checkpoint: give its config")
    assert_one_line_error(run_cli(*keypoints, "-c", "hf://owner/authors/cpk.pth.tar", "--config",
                                  "hf://owner/authors/c.json", env=env),
                          "not hf://owner/authors/c.json: download it first")
    assert len(hub.requests) == requests  # refused before asking the Hub
    assert_one_line_error(animate("hf://owner/multi", out, env),
                          "model.safetensors not found", "hf://owner/multi/FILE names another")
    hub.faults.update({"owner/gated": (403, "GatedRepo"), "owner/down": (500, ""),
                       "owner/cut": "cut"})
    hub.files["owner/cut/model.safetensors"] = hub.files["owner/models/model.safetensors"]
    assert_one_line_error(animate("hf://owner/gated", out, env), "is gated", "accept its terms",
                          "HF_TOKEN is not set")
    assert_one_line_error(animate("hf://owner/gated", out, {**env, "HF_TOKEN": "hf_x"}),
                          "is gated")
    assert_one_line_error(animate("hf://owner/down", out, env),
                          "the Hub answered 500 Internal Server Error and model.safetensors")
    assert_one_line_error(animate("hf://owner/cut", out, env), "download of hf://owner/cut failed")
    assert not out.exists()


def test_a_damaged_cached_download_is_fetched_again(hub_env, tmp_path):
    """A cached blob that no longer matches the sha256 the Hub named it by: fetched again
    once online; offline, the error names the file to delete."""
    hub, env = hub_env
    assert animate("hf://owner/models", tmp_path / "a.mp4", env).returncode == 0
    blob = next(p for p in (tmp_path / "hf").rglob("*") if p.parent.name == "blobs")
    damaged = bytearray(blob.read_bytes())
    damaged[-100] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    result = animate("hf://owner/models", tmp_path / "b.mp4", {**env, "HF_HUB_OFFLINE": "1"})
    assert_one_line_error(result, "the cached copy of hf://owner/models is damaged",
                          f"delete {blob.resolve()}")
    gets = hub.requests.count(("GET", "/owner/models/resolve/main/model.safetensors"))
    result = animate("hf://owner/models", tmp_path / "c.mp4", env)
    assert result.returncode == 0, result.stderr
    assert hub.requests.count(("GET", "/owner/models/resolve/main/model.safetensors")) == gets + 1
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    blob.write_bytes(bytes(damaged))  # damaged again, and now the Hub refuses to send it
    hub.faults["owner/models"] = (401, "")
    result = animate("hf://owner/models", tmp_path / "d.mp4", env)
    assert_one_line_error(result, "is damaged", "fetching it again failed (", "401",
                          f"delete {blob.resolve()}")


def test_unreachable_hub_without_cache_is_one_line(hub_env, tmp_path):
    """A dead network (nothing listens on the endpoint's port), or a Hub that never answers:
    one line, within about HF_HUB_ETAG_TIMEOUT (huggingface_hub's own retries, each logged,
    took 25 s and six minutes)."""
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago, now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, env = hub_env
    out = tmp_path / "o.mp4"
    dead = {**env, "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    assert_one_line_error(animate("hf://owner/models", out, dead),
                          "cannot reach the Hub", "not in the local cache")
    assert not out.exists()
    # a Hub that takes the connection and never answers (a hung proxy): huggingface_hub
    # retried it five times with a 60 s timeout each, six minutes of silence
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # connections complete in the kernel; nothing is ever read
        started = time.monotonic()
        result = animate("hf://owner/models", out,
                         {**env, "HF_ENDPOINT": f"http://127.0.0.1:{sock.getsockname()[1]}"})
    assert_one_line_error(result, "cannot reach the Hub (timed out)", "not in the local cache")
    assert time.monotonic() - started < 60


def test_predictor_from_the_hub(hub_env, tmp_path):
    """predict --predictor hf://...: downloaded, and verified when its file name is registered."""
    hub, env = hub_env
    shipped = (ROOT / "checkpoints" / "actions-predictor.safetensors").read_bytes()
    corrupted = bytearray(shipped)
    corrupted[-100] ^= 0xFF
    hub.files["owner/models/actions-predictor.safetensors"] = shipped
    hub.files["owner/copy/actions-predictor.safetensors"] = bytes(corrupted)
    args = ("predict", ROOT / "examples/actions/source.png", "-c", "actions", "--frames", "4")
    result = run_cli(*args, "--predictor", "hf://owner/models/actions-predictor.safetensors",
                     "-o", tmp_path / "a.mp4", env=env)
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "a.mp4")["frames"] == 4
    assert ("GET", "/owner/models/resolve/main/actions-predictor.safetensors") in hub.requests
    result = run_cli(*args, "--predictor", "hf://owner/copy/actions-predictor.safetensors",
                     "-o", tmp_path / "b.mp4", env=env)
    assert_one_line_error(result, "is named like the registered 'actions' but is not that file")
    assert not (tmp_path / "b.mp4").exists()
    # the revision before the file, as huggingface_hub's file system writes addresses
    result = run_cli(*args, "--predictor", "hf://owner/models@main/actions-predictor.safetensors",
                     "-o", tmp_path / "c.mp4", env=env)
    assert result.returncode == 0, result.stderr
    # no Hub: one line (huggingface_hub's retry warnings were printed for the predictor)
    hub.stop()
    result = run_cli(*args, "--predictor", "hf://owner/other/actions-predictor.safetensors",
                     "-o", tmp_path / "d.mp4", env=env)
    assert_one_line_error(result, "cannot reach the Hub")


def test_checkpoints_lists_the_hub_downloads(hub_env, tmp_path):
    """`monkeyanim checkpoints` lists the monkeyanim files in huggingface_hub's cache under
    the address that loads them (not other libraries' files there), offline."""
    import json

    from safetensors.torch import save

    import torch

    hub, env = hub_env
    hub.files["owner/other/model.safetensors"] = save({"w": torch.zeros(2)})  # not ours
    hub.files["owner/bad/model.safetensors"] = save(
        {"w": torch.zeros(2)}, metadata={"format": "monkeyanim/1", "config": json.dumps({"num_kp": -1})})
    assert animate("hf://owner/models", tmp_path / "a.mp4", env).returncode == 0
    assert animate("hf://owner/multi/a.safetensors@v1", tmp_path / "b.mp4", env).returncode == 0
    for spec in ("hf://owner/other", "hf://owner/bad"):  # refused, though downloaded
        assert animate(spec, tmp_path / "c.mp4", env).returncode == 1
    hub.stop()
    listed = run_cli("checkpoints", env={**env, "HF_HUB_OFFLINE": "1"})
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()}
    assert "shapes" in rows and "hf://owner/other/model.safetensors" not in rows
    model = rows["hf://owner/models/model.safetensors"]
    assert model[2] == "64x64" and model[-1] == "no"
    assert Path(model[6]).resolve().read_bytes() == hub.files["owner/models/model.safetensors"]
    assert rows["hf://owner/bad/model.safetensors"][6].startswith("unusable: ")
    assert listed.returncode == 1  # a listed file that cannot be used, as for bundled ones
    again = animate("hf://owner/multi/a.safetensors@v1", tmp_path / "d.mp4",
                    {**env, "HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr  # the listed name loads


def test_hub_addresses_parse_with_the_revision_before_or_after_the_file():
    """hf://owner/repo@rev/file (huggingface_hub's file system's form) and revisions that
    hold slashes (refs/pr/1, feature/x; they broke when the first form came in)."""
    from monkeyanim.hub import parse_hub_spec

    cases = {"hf://owner/m@v1/sub/x.safetensors": ("owner/m", "sub/x.safetensors", "v1"),
             "hf://owner/m@refs/pr/2/a.safetensors": ("owner/m", "a.safetensors", "refs/pr/2"),
             "hf://owner/m/model.safetensors@refs/pr/1":
                 ("owner/m", "model.safetensors", "refs/pr/1"),
             "hf://owner/m@refs/pr/1": ("owner/m", "model.safetensors", "refs/pr/1"),
             "hf://owner/m/a.pth.tar@feature/x": ("owner/m", "a.pth.tar", "feature/x"),
             "hf://owner/m/": ("owner/m", "model.safetensors", None)}
    for spec, expected in cases.items():
        assert parse_hub_spec(spec) == expected, spec
