"""Image-to-video commands: train the keypoint-sequence GRU, then predict a video from one
image (registered on cli.app)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .cli import (CheckpointOpt, ConfigOpt, CropOpt, DeviceOpt, FidWeightsOpt, OutputOpt,
                  OverwriteOpt, app, console, counted, err_console, flag, load_checkpoint,
                  progress_bar, quiet_hub_logs, report_result, require_all, warn_unreadable)
from .errors import InputError, Interrupted
from .files import check_output
from .stops import StopRequest

MAX_FRAMES = 100_000  # --frames: over an hour at 25 fps (and far from an int64 overflow)
MAX_HIDDEN = 16_384  # --hidden: 16 times the paper's GRU
DEFAULT_HIDDEN = 1024  # the paper's GRU
DEFAULT_FRAMES = 32  # the authors' sequence length


@app.command("train-predictor")
def train_predictor(data_dir: Annotated[Path, typer.Argument(
                        help="Folder with train/ videos, or a folder of videos.")],
                    output: OutputOpt, checkpoint: CheckpointOpt = None,
                    config: ConfigOpt = None, device: DeviceOpt = "auto",
                    epochs: Annotated[int, typer.Option(help="Passes over the videos.")] = 1000,
                    frames: Annotated[int | None, typer.Option(
                        help=f"Sequence length [default: {DEFAULT_FRAMES}].")] = None,
                    hidden: Annotated[int | None, typer.Option(
                        help=f"GRU units (paper: 1024) [default: {DEFAULT_HIDDEN}].")] = None,
                    batch_size: Annotated[int, typer.Option(
                        "--batch-size", help="Keypoint sequences per step.")] = 256,
                    predict_variance: Annotated[bool, flag(
                        "--predict-variance",
                        help="Also roll out the keypoints' covariances (the authors do for "
                             "shapes); else each keeps the first frame's.")] = False,
                    init: Annotated[str | None, typer.Option(
                        "--init", help="A predictor to train further (a file, hf://... or the "
                                       "name of a checkpoint that ships one), its architecture "
                                       "kept: --epochs more.")] = None,
                    half: Annotated[bool, flag(
                        "--half",
                        help="Store the weights as float16: half the file, scored as "
                             "stored.")] = False,
                    crop: CropOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Train the image-to-video GRU on keypoints of DATA_DIR/train's videos (or DATA_DIR's).

    OUT.partial.safetensors holds what it has learnt, every 5% of the epochs: go on with --init."""
    from .data import list_videos, training_folder
    from .faces import parse_crop
    from .models.predictor import KPPredictor, PredictorConfig
    from .prediction import keypoints_id, save_predictor, to_half_precision

    check_output(output, overwrite, (".safetensors",),
                 inputs=tuple(Path(p) if p else None for p in (checkpoint, config, init)))
    start, so_far, init_path = _starting_predictor(init, hidden, frames, predict_variance)
    _check_partial(partial_path(output), init_path, overwrite)
    hidden = DEFAULT_HIDDEN if hidden is None else hidden
    frames = DEFAULT_FRAMES if frames is None else frames
    _check_sizes(epochs, frames, hidden, batch_size)
    box = parse_crop(crop)
    folder = training_folder(data_dir)
    list_videos(folder)  # before the model loads: a folder with nothing to read
    model = load_checkpoint(checkpoint, config, device)
    if start is not None:
        _check_pair(start, so_far, model)
    net = start or KPPredictor(PredictorConfig(
        num_kp=model.config.num_kp, kp_variance=str(model.config.kp_variance),
        num_features=hidden, num_frames=frames, predict_variance=predict_variance))
    tracks = _train_tracks(model, folder, net.config.num_frames, box)
    test_tracks = _test_tracks(model, data_dir, box)  # before training: a test/ it cannot use
    provenance = {"videos": len(tracks), "epochs": so_far.get("epochs", 0),
                  "checkpoint": model.provenance.get("name", ""),
                  "checkpoint_keypoints": keypoints_id(model),
                  **({"init": Path(init).name} if init else {})}
    partial = partial_path(output)  # not OUT itself: --overwrite replaces it only when done
    done = _fit(net, tracks, epochs, batch_size,
                lambda epoch: save_predictor(net, partial, {**provenance, "epochs":
                                                            provenance["epochs"] + epoch}, half))
    if half:
        net = to_half_precision(net)
    provenance["epochs"] += done.epochs
    stopped = done.reason and done.epochs < epochs  # (one in the last epoch cost nothing)
    # a stop keeps an earlier OUT (--overwrite replaces it only when the run is done)
    target = partial if stopped and output.exists() else output
    save_predictor(net, target, {**provenance, **_held_out(net, test_tracks)}, half)
    if target == output and partial.is_file() and not _carried_on(partial, init_path):
        partial.unlink()  # (kept where it was --init's file: an input)
    written = f"wrote {target} (trained on {counted(len(tracks), 'video')}"
    if stopped:
        kept = f"; {output} kept as it was" if target == partial else ""
        raise Interrupted(f"{done.reason} after epoch {done.epochs} of {epochs}: {written}"
                          f"{kept})", done.exit_code)
    console.print(escape(written + ")"))


@dataclass
class _Done:
    epochs: int = 0
    reason: str | None = None  # why it stopped early (Ctrl-C, a kill)
    exit_code: int = 130  # the signal's: 130 for Ctrl-C, 143 for SIGTERM


def _fit(net, tracks: list, epochs: int, batch_size: int, save) -> _Done:
    """Train ``net`` further for ``epochs``, printing the loss and calling ``save(epochs
    done)`` every 5% of them (the last excepted). Ctrl-C ends the epoch under way; a second
    one stops at once."""
    from .prediction import train_predictor as fit

    every, done = max(1, epochs // 20), _Done()

    def report(epoch: int, loss: float) -> None:
        done.epochs = epoch
        if epoch % every == 0 or epoch == epochs:
            console.print(f"epoch {epoch}/{epochs} L1 {loss:.5f}")
        if epoch % every == 0 and epoch < epochs:
            save(epoch)  # what it has learnt so far, should the run be killed
    with StopRequest(None, "interrupted again: stopped at once; nothing more was saved") as stop:
        fit(tracks, net.config, epochs, batch_size, on_epoch=report, should_stop=stop,
            start=net)
    done.reason, done.exit_code = stop.reason, stop.exit_code or 130
    return done


def _starting_predictor(init: str | None, hidden: int | None, frames: int | None,
                        predict_variance: bool):
    """The predictor --init names, what its file says of its training and its path, or
    (None, {}, None); InputError where --hidden, --frames or --predict-variance ask for
    another architecture."""
    from .hub import predictor_path
    from .prediction import load_predictor, predictor_provenance

    if init is None:
        return None, {}, None
    if init.startswith("hf://"):
        quiet_hub_logs()
    path = predictor_path(init)
    start, so_far = load_predictor(path), predictor_provenance(path)
    kept = start.config
    for option, given, its in (("--hidden", hidden, kept.num_features),
                               ("--frames", frames, kept.num_frames)):
        if given is not None and given != its:
            raise InputError(f"{option} {given} differs from the predictor given to --init "
                             f"({its}): its architecture is kept; leave {option} out")
    if predict_variance and not kept.predict_variance:
        raise InputError("--predict-variance: the predictor given to --init does not roll out "
                         "covariances, and its architecture is kept; leave it out")
    return start, so_far, path


def _check_partial(partial: Path, init_path: Path | None, overwrite: bool) -> None:
    """A stopped run's progress left beside OUT is not trained over unawares (but with
    --overwrite, or when it is the --init file carried on)."""
    if overwrite or not partial.exists() or _carried_on(partial, init_path):
        return
    raise InputError(f"{partial} holds a stopped run's progress: carry it on with --init "
                     f"{partial}, or delete it (or use --overwrite to replace it)")


def _carried_on(partial: Path, init_path: Path | None) -> bool:
    """Whether the progress file ``partial`` (which exists) is the --init file, carried on."""
    return init_path is not None and init_path.exists() and partial.samefile(init_path)


def partial_path(output: Path) -> Path:
    """Where train-predictor keeps what it has learnt while it runs: OUT.partial.safetensors
    beside OUT, removed once OUT is written."""
    return output.with_name(f"{output.stem}.partial{output.suffix}")


def _check_sizes(epochs: int, frames: int, hidden: int, batch_size: int) -> None:
    if min(epochs, hidden, batch_size) < 1 or frames < 2:
        raise InputError("--epochs, --hidden and --batch-size must be at least 1, --frames at "
                         "least 2 (the first frame is given, the others predicted)")
    if frames > MAX_FRAMES or hidden > MAX_HIDDEN:
        raise InputError(f"--frames must be at most {MAX_FRAMES:,} and --hidden at most "
                         f"{MAX_HIDDEN:,}")


def _train_tracks(model, folder: Path, frames: int, crop) -> list:
    """The keypoints of the videos in ``folder`` of at least ``frames`` frames, with a progress
    bar; the others are counted in a warning."""
    from .prediction import extract_keypoints

    with progress_bar("keypoints", unit="videos") as progress:
        tracks, short, unreadable = extract_keypoints(model, folder, frames, crop=crop,
                                                      progress=progress)
    if short:
        err_console.print(f"warning: skipped {short} video(s) shorter than {frames} frames")
    warn_unreadable(unreadable)
    return tracks


def _test_tracks(model, data_dir: Path, crop) -> list | None:
    """The keypoints of DATA_DIR/test/'s videos (None without one); InputError when none of
    them can be read or has 2 frames."""
    from .prediction import extract_keypoints

    if not (data_dir / "test").is_dir():
        return None
    with progress_bar("test keypoints", unit="videos") as progress:
        tracks, _, unreadable = extract_keypoints(model, data_dir / "test", 2, crop=crop,
                                                  progress=progress)
    warn_unreadable(unreadable)
    return tracks


def _held_out(predictor, tracks: list | None) -> dict:
    """With test videos' keypoints: the predictor's keypoint L1 on them against the first
    frame kept still, printed and returned for the file's metadata; else nothing."""
    from .prediction import score_predictor

    if tracks is None:
        return {}
    scores = score_predictor(predictor, tracks)
    console.print(f"test: keypoint L1 {scores.l1:.4f} against {scores.static_l1:.4f} for the "
                  f"first frame kept still; the predicted keypoints move {scores.moved:.4f} "
                  f"from it, the real ones {scores.static_l1:.4f} ({scores.videos} videos)")
    return {"test_l1": scores.l1, "test_static_l1": scores.static_l1,
            "test_moved": scores.moved, "test_videos": scores.videos}


@app.command()
def predict(source: Annotated[Path, typer.Argument(
                help="Still image to bring to life (of a video: its first frame).")],
            output: OutputOpt, predictor: Annotated[str | None, typer.Option(
                help="A file from train-predictor (or hf://...); default: the one that ships "
                     "with the checkpoint.")] = None,
            checkpoint: CheckpointOpt = None, config: ConfigOpt = None,
            frames: Annotated[int, typer.Option(help="Frames to generate.")] = 32,
            fps: Annotated[float, typer.Option(help="Output frame rate.")] = 25.0,
            crop: CropOpt = None,
            device: DeviceOpt = "auto",
            fid_reference: Annotated[Path | None, typer.Option(
                help="Real videos (a folder, its test/ split, or one video) to measure the FID "
                     "of the generated frames against (measured with --fid-weights).")] = None,
            fid_weights: FidWeightsOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Image-to-video: predict a keypoint sequence from SOURCE and generate its frames."""
    from .evaluation import ReferenceFID
    from .faces import parse_crop
    from .hub import bundled_predictor, predictor_path
    from .jobs import predict_file, prepare_prediction
    from .prediction import load_predictor, predictor_provenance
    from .videowriter import VIDEO_OUTPUTS, check_fps

    check_output(output, overwrite, VIDEO_OUTPUTS,
                 inputs=(source, Path(predictor) if predictor else None, fid_reference))
    if fid_reference is not None and fid_reference.is_dir():
        _check_outside(output, fid_reference)
    if not 1 <= frames <= MAX_FRAMES:
        raise InputError(f"--frames must be 1 to {MAX_FRAMES:,}")
    check_fps(fps)
    if fid_weights is not None and fid_reference is None:
        raise InputError("--fid-weights needs --fid-reference: the real videos to compare with")
    box = parse_crop(crop)
    require_all((source, "source image"), (fid_weights, "FID weights"),
                 (fid_reference, "FID reference"))
    if predictor and predictor.startswith("hf://"):
        quiet_hub_logs()  # (as load_checkpoint does for the checkpoint)
    net_path = predictor_path(predictor) if predictor else None  # before the model loads
    model = load_checkpoint(checkpoint, config, device)  # first: a mistyped name is named as such
    if net_path is None:  # the one that ships with the model, however it was named
        net_path = bundled_predictor(model.provenance.get("name") or str(checkpoint))
    net = load_predictor(net_path)
    _check_pair(net, predictor_provenance(net_path), model)
    scorer = ReferenceFID(model, fid_weights, fid_reference, box) if fid_reference else None
    prepared = prepare_prediction(model, net, source, frames, box)  # its errors first
    if scorer is not None:  # then the reference, which may be minutes of face tracking
        with progress_bar("FID reference", unit="videos") as progress:
            scorer.read_reference(progress=progress)
    with progress_bar(output.name) as progress:
        result = predict_file(model, net, source, output, frames, fps, box,
                              inspect=scorer.add_generated if scorer else None,
                              progress=progress, prepared=prepared)
    if scorer is not None:
        result.extra["fid"] = scorer.result()
    report_result(result)


def _check_outside(output: Path, folder: Path) -> None:
    """The generated video must not land among the real ones it is scored against."""
    if output.resolve().is_relative_to(folder.resolve()):
        raise InputError(f"-o {output} is inside the FID reference folder {folder}: it would "
                         "be scored as a real video next time; name a file elsewhere")


def _check_pair(net, trained: dict, model) -> None:
    """prediction.check_pair, its warning printed."""
    from .prediction import check_pair

    warning = check_pair(net, trained, model)
    if warning:
        err_console.print(escape(f"warning: {warning}"))
