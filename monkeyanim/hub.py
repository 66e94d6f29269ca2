"""Where models come from: the registry of named checkpoints, local files, and loading."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .checkpoint import MODEL_FILE, STATE_FILE, convert_authors_checkpoint, load_checkpoint
from .config import YAML_SUFFIXES, ModelConfig, load_config_file
from .errors import CheckpointError, ConfigError, Interrupted, first_line
from .models import MonkeyNet
from .pipeline import resolve_device
from .presets import AUTHOR_PRESETS, get_preset

AUTHOR_SUFFIXES = (".pth", ".tar", ".pt", ".ckpt")


@dataclass(frozen=True)
class RegistryEntry:
    """A named checkpoint: its file name, sha256 and a description."""

    file: str
    sha256: str
    description: str


# Checkpoints shipped in checkpoints/ (installed as the package monkeyanim.checkpoints);
# checkpoints/README.md holds each one's model card.
_MODELS: dict[str, RegistryEntry] = {
    "actions": RegistryEntry(
        file="actions.safetensors",
        sha256="60e53c5a858e3e3230381822e10e71e4c14cdb6e3df381166e0f33d62c6a24f3",
        description="the authors' actions: whole people acting in place before a wall, 64x64"),
    "mgif": RegistryEntry(
        file="mgif.safetensors",
        sha256="facb8e777554552212a7bfa153554bef79556752bc8cea9ceb09866987125e82",
        description="the paper's MGif: cartoon animals on white, 64x64, absolute keypoints"),
    "shapes": RegistryEntry(
        file="shapes.safetensors",
        sha256="3c8a9d41997b72db95c0997b3f78c68c32c293196265e31bbec32e0c7962685c",
        description="the authors' synthetic shapes (one flat shape moving on black), 64x64"),
}
# Image-to-video predictors (models/predictor.py) shipped beside them, under the name of the
# checkpoint whose keypoints they were trained on
_PREDICTORS: dict[str, RegistryEntry] = {
    "actions": RegistryEntry(
        file="actions-predictor.safetensors",
        sha256="7d9158e7da9b3814a0b336084b61cf9dd53d7e11cb60a64254be1b2ab1569ac4",
        description="people acting before a wall, from the authors' actions recipe"),
    "shapes": RegistryEntry(
        file="shapes-predictor.safetensors",
        sha256="4055a90cb405d78d4c91266a1a4262add31b2d61d546b4603cb532f7ba2e3dc3",
        description="shapes moving on black, from the authors' 100-video recipe"),
}
DEFAULT_MODEL = "shapes"  # until a faces checkpoint is trained (see checkpoints/README.md)
HASH_CHUNK_BYTES = 1 << 20


def available_models() -> list[str]:
    """The registered checkpoint names, which load_model and --checkpoint take, sorted."""
    return sorted(_MODELS)


def registry_entry(name: str) -> RegistryEntry:
    """A registered checkpoint's file, sha256 and description; CheckpointError naming the
    registered ones if ``name`` is not among them."""
    if name not in _MODELS:
        raise CheckpointError(f"no checkpoint is registered as {name!r}; registered: "
                              f"{', '.join(available_models()) or 'none'}")
    return _MODELS[name]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_path(name: str) -> Path:
    """Where a registered checkpoint is installed, verified against its sha256."""
    return _installed(registry_entry(name), f"checkpoint {name!r}")


def available_predictors() -> list[str]:
    """The checkpoints that come with an image-to-video predictor."""
    return sorted(_PREDICTORS)


def predictor_path(spec: str | Path) -> Path:
    """A predictor file: a path, hf://owner/repo/file[@revision], or the name of a checkpoint
    that ships one (verified against its sha256)."""
    name = str(spec)
    if name.startswith(HF_PREFIX):
        return download_from_hub(name, (".safetensors",))
    if name in _PREDICTORS:
        return bundled_predictor(name)
    if not Path(name).exists():
        raise CheckpointError(f"predictor not found: {name} (neither a file nor a checkpoint "
                              f"that ships one: {', '.join(available_predictors()) or 'none'})")
    return Path(name)


def bundled_predictor(checkpoint: str) -> Path:
    """The predictor that ships with registered checkpoint ``checkpoint``, verified;
    CheckpointError naming those that have one otherwise."""
    if checkpoint not in _PREDICTORS:
        raise CheckpointError(f"no predictor ships with checkpoint {checkpoint!r} (only with "
                              f"{', '.join(available_predictors()) or 'none'}): give "
                              "--predictor, a file made by train-predictor")
    return _installed(_PREDICTORS[checkpoint], f"the predictor for {checkpoint!r}")


def _installed(entry: RegistryEntry, what: str) -> Path:
    path = Path(str(resources.files("monkeyanim.checkpoints") / entry.file))
    if not path.is_file():
        raise CheckpointError(f"{what} is registered but {entry.file} is not installed; "
                              "reinstall monkeyanim")
    if sha256_file(path) != entry.sha256:
        raise CheckpointError(f"{path} does not match the sha256 registered for {what}; the "
                              "file is corrupt or was replaced: reinstall monkeyanim (from a "
                              "source checkout: git checkout checkpoints/)")
    return path


HF_PREFIX = "hf://"
DEFAULT_HUB_FILE = "model.safetensors"


def parse_hub_spec(spec: str) -> tuple[str, str, str | None]:
    """'hf://owner/repo[/path/file][@revision]', or with the revision after the repo as
    huggingface_hub's file system writes it ('hf://owner/repo@revision/path/file') ->
    (repo_id, filename, revision)."""
    body = spec.removeprefix(HF_PREFIX)
    body, at, revision = body.partition("@")
    if _revision_first(body, revision):  # owner/repo@revision/path/file
        segments = revision.split("/")
        take = 3 if segments[0] == "refs" else 1  # refs/pr/N, refs/convert/X
        revision, body = "/".join(segments[:take]), "/".join([body, *segments[take:]])
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2 or at and not revision:
        raise CheckpointError(f"{spec!r} is not hf://owner/repo[/file][@revision]")
    filename = "/".join(parts[2:]) or DEFAULT_HUB_FILE
    return f"{parts[0]}/{parts[1]}", filename, revision or None


def _revision_first(repo: str, after: str) -> bool:
    """Whether 'owner/repo@AFTER' puts the revision before the file (hf://owner/repo@v1/x.pth):
    the @ right after the repo and AFTER ending in a checkpoint's name. Otherwise AFTER is
    all revision, slashes too (refs/pr/1, feature/x), as the file comes before it."""
    return (len([p for p in repo.split("/") if p]) == 2 and "/" in after
            and after.lower().endswith((".safetensors", *AUTHOR_SUFFIXES)))


def download_from_hub(spec: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Fetch a checkpoint with huggingface_hub into its standard cache (HF_HOME, HF_ENDPOINT,
    HF_TOKEN and HF_HUB_OFFLINE apply). A file the Hub stores under its sha256 (LFS) is
    checked against it where the cache links to its blob (see ``_damaged``), and fetched
    again once if its cached copy is damaged; a file named like a registered one must be
    it. ``suffixes``: the file names taken, checked first."""
    repo_id, filename, revision = parse_hub_spec(spec)
    if suffixes and not filename.lower().endswith(suffixes):
        raise CheckpointError(f"{spec} names {Path(filename).name}, not a checkpoint file "
                              f"({', '.join(suffixes)})")
    path = _hub_download(spec, repo_id, filename, revision)
    if _damaged(path):
        from huggingface_hub import constants

        damaged = (f"the cached copy of {spec} is damaged (it does not match the sha256 the "
                   f"Hub gave it)")
        if constants.HF_HUB_OFFLINE:
            raise CheckpointError(f"{damaged}: delete {path.resolve()} and run again online")
        try:
            path = _hub_download(spec, repo_id, filename, revision, force=True)
        except CheckpointError as error:
            raise CheckpointError(f"{damaged} and fetching it again failed ({error}): delete "
                                  f"{path.resolve()} and run again") from None
        if _damaged(path):
            raise CheckpointError(f"{spec} arrived damaged twice (it does not match the sha256 "
                                  "the Hub gives it); try again later")
    registered = [(name, entry) for name, entry in [*_MODELS.items(), *_PREDICTORS.items()]
                  if entry.file == Path(filename).name]
    digest = _blob_sha256(path) or (sha256_file(path) if registered else "")  # checked above
    for name, entry in registered:
        if digest != entry.sha256:
            raise CheckpointError(f"{spec} is named like the registered {name!r} but is not that "
                                  "file (another sha256): a file of a registered name must be "
                                  "it; give another model another name")
    return path


def cached_hub_checkpoints() -> list[tuple[str, Path]]:
    """The monkeyanim checkpoints in huggingface_hub's cache (HF_HOME, HF_HUB_CACHE), each as
    the hf:// address that loads it (revision main left out) and its cached path; other
    files there (other libraries' models) are left out. Reads no network."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from .checkpoint import FORMAT, file_format

    try:
        repos = scan_cache_dir().repos
    except (CacheNotFound, OSError, ValueError):  # nothing downloaded yet, a cache that
        # cannot be read, or a file where the cache's folder belongs
        return []
    found = []
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            refs = sorted(revision.refs)
            at = "" if "main" in refs else f"@{refs[0] if refs else revision.commit_hash}"
            for file in sorted(revision.files, key=lambda f: f.file_name):
                name = file.file_path.relative_to(revision.snapshot_path).as_posix()
                if "@" in name:  # no address names it: hf://owner/repo/m@2.safetensors reads
                    continue  # as revision 2.safetensors of file m
                if name.lower().endswith(".safetensors") and file_format(file.file_path) == FORMAT:
                    found.append((f"{HF_PREFIX}{repo.repo_id}/{name}{at}", file.file_path))
    return found


def _blob_sha256(path: Path) -> str | None:
    """The sha256 that huggingface_hub names a cached file's blob by (an LFS file's, which a
    snapshot links to; other blobs are named by a git hash): None where it has none. A cache
    without links (Windows without developer mode) holds no blob names."""
    blob = path.resolve()
    is_sha256 = len(blob.name) == 64 and all(c in "0123456789abcdef" for c in blob.name)
    return blob.name if is_sha256 else None


def _damaged(path: Path) -> bool:
    """Whether a cached file no longer matches the sha256 its blob is named by (where it is:
    see ``_blob_sha256``)."""
    expected = _blob_sha256(path)
    return expected is not None and sha256_file(path) != expected


def _hub_download(spec: str, repo_id: str, filename: str, revision: str | None,
                  force: bool = False) -> Path:
    """hf_hub_download, its errors turned into one CheckpointError line each."""
    from huggingface_hub import get_token, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"{repo_id}@{revision}" if revision else repo_id
    _check_reachable(repo_id, filename, revision, where)
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, force_download=force))
    except LocalEntryNotFoundError as exc:  # before its parent EntryNotFoundError
        raise CheckpointError(f"{_unreachable(exc)} and {filename} from {where} is not in the "
                              "local cache") from None
    except EntryNotFoundError:
        default = (f" (the file taken when the address names none: hf://{repo_id}/FILE names "
                   "another)" if filename == DEFAULT_HUB_FILE else "")
        raise CheckpointError(f"{filename} not found in Hub repo {where}{default}") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"revision {revision!r} not found in Hub repo {repo_id}") from None
    except GatedRepoError:  # before its parent RepositoryNotFoundError
        raise CheckpointError(f"Hub repo {repo_id} is gated: accept its terms on the Hub, then "
                              "set HF_TOKEN to a token of that account"
                              + ("" if get_token() else " (HF_TOKEN is not set)")) from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"Hub repo {repo_id} not found, or " + (
            "private and HF_TOKEN gives no access to it" if get_token()
            else "private: set HF_TOKEN")) from None
    except Interrupted:  # Ctrl-C or a kill: said as such, and its exit code kept
        raise
    except Exception as exc:  # noqa: BLE001 - the HTTP client's own (a connection cut
        # mid-file, a timeout), an HTTP status, a cache that cannot be written: none is a bug
        # (a forced download that failed says "due to the above error": that one is the why)
        why = exc.__cause__ if isinstance(exc, ValueError) and exc.__cause__ else exc
        where = f" ({why.filename})" if isinstance(why, OSError) and why.filename else ""
        raise CheckpointError(f"download of {spec} failed: {first_line(why)}{where}") from None


def _check_reachable(repo_id: str, filename: str, revision: str | None, where: str) -> None:
    """Where nothing is cached, ask the Hub once, within HF_HUB_ETAG_TIMEOUT (10 s): with no
    cached copy, huggingface_hub retries a Hub that does not answer (a firewall dropping
    packets, a hung proxy) five times with a 60 s timeout each, minutes of silence. An
    answer, even an error, is left to hf_hub_download to read."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE or isinstance(
            try_to_load_from_cache(repo_id, filename, revision=revision), str):
        return
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision),
                             timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:
        return
    except Interrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - the HTTP client's own: no answer came
        raise CheckpointError(f"cannot reach the Hub ({first_line(exc) or type(exc).__name__})"
                              f" and {filename} from {where} is not in the local cache") from None


def _unreachable(error: Exception) -> str:
    """Why huggingface_hub could not ask the Hub for a file, from what its error wraps."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    cause = error.__cause__
    if isinstance(cause, OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    response = getattr(cause, "response", None) if isinstance(cause, HfHubHTTPError) else None
    if response is not None:  # httpx names the reason reason_phrase, requests reason
        reason = getattr(response, "reason_phrase", None) or getattr(response, "reason", "")
        return f"the Hub answered {response.status_code} {reason}".rstrip()
    return "cannot reach the Hub" + (f" ({first_line(cause)})" if cause is not None else "")


def resolve_config(config: str | Path | ModelConfig) -> ModelConfig:
    """A preset name (one of the authors' eight), a JSON file, an authors' YAML config, or a
    ModelConfig."""
    if isinstance(config, ModelConfig):
        return config
    name = str(config)
    if name.lower().startswith(HF_PREFIX):
        raise ConfigError(f"a config is a preset name or a file on this machine, not {name}: "
                          "download it first")
    if name in AUTHOR_PRESETS:
        return get_preset(name)
    if name.endswith((".json", *YAML_SUFFIXES)) or Path(name).is_file():
        return load_config_file(name)
    return get_preset(name)  # raises, listing the valid names


def _refuse_run_files(path: Path) -> None:
    """A training run's folder, or the optimisers' state in it, given for its weights: say
    which file holds them."""
    if path.is_dir():
        weights = sorted(p.name for p in path.glob("*.safetensors"))
        hint = f": give a checkpoint in it ({', '.join(weights)})" if weights else ""
        raise CheckpointError(f"{path} is a folder, not a checkpoint{hint}")
    if path.name == STATE_FILE and (path.parent / MODEL_FILE).is_file():
        raise CheckpointError(f"{path} is a training run's optimiser state, for --resume; its "
                              f"weights are {path.parent / MODEL_FILE}")


def _check_config_given(name: str, config) -> None:
    """ConfigError unless ``config`` comes with an authors' checkpoint, and with it alone."""
    file = (parse_hub_spec(name)[1] if name.startswith(HF_PREFIX) else name).lower()
    authors = file.endswith(AUTHOR_SUFFIXES)
    if config is not None and not authors:
        raise ConfigError(f"a config is for authors' checkpoints (.pth.tar): {Path(file).name} "
                          "carries its own architecture; leave --config out")
    if config is None and authors:
        raise ConfigError(f"{Path(name).name} is an authors' checkpoint: give its config "
                          f"({', '.join(sorted(AUTHOR_PRESETS))}, their .yaml config or "
                          "a .json file)")


def load_model(path_or_name: str | Path, config: str | Path | ModelConfig | None = None,
               device: str | torch.device | None = None) -> MonkeyNet:
    """Load a model in eval mode from a project ``.safetensors`` file, an authors' checkpoint
    (``.pth.tar``, with ``config``: preset name or JSON file), a registry name, or
    ``hf://owner/repo[/file][@revision]`` on the Hugging Face Hub. Its weights are in
    channels_last, the layout the convolutions run fastest in (inputs may be either)."""
    device = None if device is None else resolve_device(device)  # before the work of loading
    name = str(path_or_name)
    if not name.startswith(HF_PREFIX) and name not in _MODELS:  # (a folder named like a
        _refuse_run_files(Path(name))  # registered checkpoint is no run folder)
    _check_config_given(name, config)  # before a download: the file's name tells
    architecture = None if config is None else resolve_config(config)  # (and a bad one)
    if name.startswith(HF_PREFIX):
        name = str(download_from_hub(name, (".safetensors", *AUTHOR_SUFFIXES)))
    path = Path(name)
    if name.lower().endswith(".safetensors"):
        model = load_checkpoint(path)
    elif name.lower().endswith(AUTHOR_SUFFIXES):
        model = convert_authors_checkpoint(path, architecture)
    elif name in _MODELS:
        model = load_checkpoint(bundled_path(name))
    else:
        valid = ", ".join(available_models()) or "none bundled yet"
        hub = ("" if not name.strip().lower().startswith(HF_PREFIX) else
               " (a Hub address starts with hf://, in lower case, with no space before it)")
        raise CheckpointError(f"unknown checkpoint {name!r}: not a .safetensors or .pth.tar "
                              f"file, nor a registered name ({valid}){hub}")
    # about 17% faster inference on CPU than NCHW weights fed channels_last frames
    return model.to(device=device, memory_format=torch.channels_last)
