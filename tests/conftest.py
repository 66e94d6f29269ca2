import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MONKEYANIM_SHARED", ROOT.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "original-monkeynet"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    assert FIXTURE.is_dir(), f"the parity fixture is expected at {FIXTURE} (../shared beside the clone)"
    return FIXTURE


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    path = SHARED / "datasets"
    assert path.is_dir(), f"the shared datasets are expected at {path}"
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            max_file_bytes: int | None = None, max_memory_bytes: int | None = None):
    """Run the real console entry point in a subprocess; returns CompletedProcess (text).
    ``max_file_bytes``: the kernel refuses to grow any file the command writes past this
    (RLIMIT_FSIZE; Python ignores SIGXFSZ, so writes fail with EFBIG as on a full disk).
    ``max_memory_bytes``: the kernel refuses to map more memory than this (RLIMIT_AS), so
    allocations past it fail as on a machine that has run out."""
    import resource

    full_env = {**os.environ, "MONKEYANIM_DEBUG": "0", **(env or {})}
    limits = [(resource.RLIMIT_FSIZE, max_file_bytes), (resource.RLIMIT_AS, max_memory_bytes)]

    def limit() -> None:
        for kind, value in limits:
            if value is not None:
                resource.setrlimit(kind, (value, value))

    return subprocess.run([sys.executable, "-m", "monkeyanim", *map(str, args)], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit)


def run_cli_on_terminal(*args: str, tmp_path: Path, env: dict | None = None
                        ) -> tuple[int, str, str]:
    """The CLI with stderr on a pseudo-terminal, as from a shell (``env`` added to this
    process's): returns (exit code, what the terminal showed, stdout)."""
    import pty

    master, slave = pty.openpty()
    stdout = tmp_path / "stdout.txt"
    with stdout.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "monkeyanim", *map(str, args)], stdout=out, stderr=slave,
            env={**os.environ, "MONKEYANIM_DEBUG": "0", "TERM": "xterm", "COLUMNS": "120",
                 **(env or {})})
        os.close(slave)
        shown = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown.append(chunk)
        process.wait(timeout=600)
    os.close(master)
    return process.returncode, b"".join(shown).decode(errors="replace"), stdout.read_text()


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


FACE_WITH_AUDIO = "real3d-may.mp4"  # 512x512, 25 fps, 125 frames, AAC audio


@pytest.fixture(scope="session")
def small_model(fixture_dir, tmp_path_factory) -> Path:
    """The authors' parity checkpoint (random weights, 64x64, 10 keypoints) in our format."""
    from monkeyanim.checkpoint import convert_authors_checkpoint, save_checkpoint
    from monkeyanim.config import load_config_file

    folder = tmp_path_factory.mktemp("model")
    config = folder / "taichi-small.json"
    config.write_text((fixture_dir / "taichi-small.model_params.json").read_text())
    model = convert_authors_checkpoint(fixture_dir / "taichi-small.pth.tar", load_config_file(config))
    path = folder / "small.safetensors"
    save_checkpoint(model, path, provenance={"name": "taichi-small"})
    return path


@pytest.fixture(scope="session")
def face_video(datasets_dir) -> Path:
    return datasets_dir / "faces" / FACE_WITH_AUDIO


@pytest.fixture(scope="session")
def face_frames(face_video):
    """The first 40 frames of a real talking-face video, (H, W, 3) uint8, 512x512."""
    from monkeyanim.video import open_video

    frames = []
    for frame in open_video(face_video).frames():
        frames.append(frame)
        if len(frames) == 40:
            break
    return frames


def write_video(path: Path, frames, fps=25, codec: str | None = None, pts=None,
                options: dict | None = None) -> Path:
    """Encode real frames with PyAV into any container (codec chosen per container, with the
    encoder's ``options``)."""
    import av
    import numpy as np
    from fractions import Fraction

    suffix = path.suffix.lower()
    codec = codec or {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9",
                      ".avi": "mpeg4", ".gif": "gif"}[suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps), options=options or {})
        stream.height, stream.width = frames[0].shape[:2] if frames else (64, 64)
        stream.pix_fmt = {"gif": "rgb8", "png": "rgb24", "ffv1": "yuv444p"}.get(codec, "yuv420p")
        if pts is not None:
            stream.time_base = Fraction(1, 1000)
        if not frames:
            container.start_encoding()  # a valid file with a video stream and no frames
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if pts is not None:
                video_frame.pts, video_frame.time_base = pts[i], Fraction(1, 1000)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return path


def probe(path: Path) -> dict:
    """Decode a written file for real: frame count, size, rates and durations."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        info = {"frames": len(frames), "height": frames[0].shape[0] if frames else 0,
                "width": frames[0].shape[1] if frames else 0, "fps": float(video.average_rate),
                "codec": video.codec_context.name, "first": frames[0] if frames else None,
                "video_seconds": stream_seconds(path, "video"), "audio_codec": None}
        if container.streams.audio:
            info["audio_codec"] = container.streams.audio[0].codec_context.name
            info["audio_seconds"] = stream_seconds(path, "audio")
    return info


def stream_seconds(path: Path, kind: str) -> float | None:
    """How long a file's first video or audio stream lasts, from its packets' times (Matroska
    and WebM state no duration per stream)."""
    import av

    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        times = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.pts is not None]
    if not times:
        return None
    start, end = min(t for t, _ in times), max(t + d for t, d in times)
    return float((end - start) * stream.time_base)


def sigint_default() -> None:
    """preexec_fn: give the child the default SIGINT disposition, so Ctrl-C tests also work
    when the test run itself was started in the background (where SIGINT is ignored)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# A narrow shapes model that trains in seconds on the CPU (tests of `monkeyanim train`).
TINY = """
preset: shapes
model:
  kp_detector: {block_expansion: 8, max_features: 32}
  generator:
    block_expansion: 8
    max_features: 32
    dense_motion: {block_expansion: 8, max_features: 32}
  discriminator: {block_expansion: 8, max_features: 32}
train: {batch_size: 8, checkpoint_every: 10, sample_every: 10, log_every: 1, num_workers: 0,
        iterations: 40}
"""


@pytest.fixture(scope="module")
def shapes():
    """The bundled shapes checkpoint, loaded once per test module (a test that changes it
    works on a copy)."""
    import monkeyanim

    return monkeyanim.load_model("shapes")


@pytest.fixture(scope="module")
def shapes_slice(datasets_dir, tmp_path_factory):
    """32 training and 8 test videos of the authors' shapes (frame strips), linked."""
    root = tmp_path_factory.mktemp("shapes")
    for split, count in (("train", 32), ("test", 8)):
        (root / split).mkdir()
        for path in sorted((datasets_dir / "shapes" / split).iterdir())[:count]:
            (root / split / path.name).symlink_to(path)
    return root


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY)
    return path


def torchrun(processes: int) -> list[str]:
    """The command line of torchrun starting ``processes`` processes, on a free port."""
    with socket.socket() as probe_socket:  # a free port for the rendezvous
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(port)]


def run_ddp_worker(data: Path, run: Path, config: Path, *extra: str) -> tuple[dict, dict]:
    """tests/ddp_worker.py under torchrun with two CPU processes; returns each rank's
    state dict as it saved it."""
    import torch

    result = subprocess.run(
        [*torchrun(2), "tests/ddp_worker.py", str(data), str(run), str(config), *extra],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return tuple(torch.load(run / f"rank{r}.pt", weights_only=True) for r in (0, 1))
