"""The paper's video-reconstruction metrics over a test split (section 4.2).

L1 is computed here. AKD / MKR (keypoints of an external detector in real vs generated frames),
AED (distance of identity embeddings) and FID (Inception features) need external models; each
is reported as unavailable, with the reason, when its model cannot run offline on this install.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import bodymetrics, facemetrics, fid
from .data import evaluation_folder, list_videos
from .errors import InputError, Interrupted, check_count
from .framing import crop_mode, frame_batches, video_crops
from .jobs import reconstruct_file
from .models import MonkeyNet
from .pipeline import check_precision, check_refine_steps
from .video import BATCH_FRAMES, check_batch_size, open_video

L1_SCORES = ("l1", "static_l1", "identity_l1")  # the model's, a static source's, frame 1's
REFERENCE_FRAMES = 2048  # real frames read for a prediction's FID, spread over the videos
FID_BATCH_FRAMES = 32  # real frames read, and scored by Inception, at a time


BODY_AED = ("the paper defines AED with a re-identification network for bodies; none ships "
            "offline")
NO_DETECTOR = ("no keypoint detector for this kind of data (checkpoints say face_model or "
               "body_model in their metadata)")


def external_metrics(model: MonkeyNet) -> tuple[object | None, object | None, dict[str, str]]:
    """The external detector and its running scores for this model's kind of data (faces:
    dlib landmarks; bodies: mediapipe pose), and why each metric that cannot be measured is
    unavailable. Detector and scores are None when nothing can be measured."""
    if model.provenance.get("face_model"):
        reason = facemetrics.unavailable_reason()
        if reason is not None:
            return None, None, {"akd": reason, "mkr": reason, "aed": reason}
        return facemetrics.DlibFaces(), facemetrics.FaceScores(), {}
    if model.provenance.get("body_model"):
        reason = bodymetrics.unavailable_reason()
        if reason is not None:
            return None, None, {"akd": reason, "mkr": reason, "aed": BODY_AED}
        return bodymetrics.MediapipeBody(), bodymetrics.BodyScores(), {"aed": BODY_AED}
    return None, None, {"akd": NO_DETECTOR, "mkr": NO_DETECTOR, "aed": NO_DETECTOR}


class _Watcher:
    """Shows each batch of real and generated frames to the external detector (next to the
    static-source baseline: the video's first frame repeated) and to the FID meter."""

    def __init__(self, detector, scores, meter: fid.FIDMeter | None):
        self.detector, self.scores, self.meter = detector, scores, meter
        self.static = type(scores)() if scores is not None else None
        self.first = None  # the detector's view of the current video's first frame
        self.frames = 0  # of the current video, seen so far
        self._marks: list[tuple[object, dict]] = []  # see mark()
        self.active = detector is not None or meter is not None

    def __call__(self, real: np.ndarray, made: np.ndarray) -> None:  # (B, H, W, 3) uint8 each
        self.frames += len(real)
        if self.detector is not None:
            self.first = self.detector(real[0]) if self.first is None else self.first
            for a, b in zip(real, made):
                seen = self.detector(a)
                self.scores.add(seen, self.detector(b))
                self.static.add(seen, self.first)
        if self.meter is not None:
            self.meter.add(real, made)

    def mark(self) -> None:
        """Remember where the running sums stand: a video that fails half-way is rolled
        back to here, so the frames it showed do not count."""
        self.first, self.frames = None, 0
        self._marks = [(part, {key: len(value) if isinstance(value, list) else value
                               for key, value in vars(part).items()})
                       for part in (self.scores, self.static, self.meter) if part is not None]

    def rollback(self) -> None:
        for part, marked in self._marks:
            for key, value in marked.items():
                if isinstance(getattr(part, key), list):
                    del getattr(part, key)[value:]
                else:
                    setattr(part, key, value)

    def results(self) -> dict[str, float | str]:
        """Each metric's value, or why it could not be given; static_* for the baseline."""
        measured = self.scores.result() if self.scores is not None else {}
        if self.static is not None:
            measured.update({f"static_{k}": v for k, v in self.static.result().items()
                             if not isinstance(v, str)})
        if self.meter is not None:
            measured["fid"] = self.meter.result()
        return measured


def evaluate(model: MonkeyNet, data_dir: Path, limit: int | None = None,
             batch_size: int = BATCH_FRAMES,
             crop=None, on_video: Callable[[str, dict], None] | None = None,
             fid_weights: Path | None = None,
             progress: Callable[[int, int], None] | None = None, refine_steps: int = 0,
             should_stop: Callable[[], bool] | None = None, precision: str = "fp32") -> dict:
    """Reconstruct every test video; returns per-video and mean L1 next to the static-source
    baseline and the first frame's own (identity_l1), the external metrics that could be
    measured, and why the others could not. After each video, ``on_video(name, its numbers)``
    and ``progress(videos done, videos in all)``. ``refine_steps``: see
    ``pipeline.KeypointRefiner`` (0: the detector's keypoints, the paper's protocol).
    A video that cannot be read is left out, its reason under 'failed'; InputError if all are.
    'warnings': per video, what the user should know of one that was read (cut short).
    ``should_stop`` is asked after each video (Ctrl-C): when it says yes, the report holds
    the videos measured, and the others under 'not_run'. ``precision``: the networks' (see
    pipeline.PRECISIONS), recorded in the report."""
    _check_settings(model, limit, batch_size, crop, refine_steps, precision)
    folder = evaluation_folder(data_dir)
    videos = list_videos(folder)[:limit] if limit else list_videos(folder)
    detector, scores, unavailable = external_metrics(model)
    meter = _fid_meter(model, fid_weights)
    if isinstance(meter, str):
        unavailable["fid"], meter = meter, None
    watcher, per_video, failed, warned = _Watcher(detector, scores, meter), {}, {}, {}
    done = 0
    for done, video in enumerate(videos, 1):
        outcome = _evaluate_one(model, video, watcher, (batch_size, precision), crop,
                                refine_steps)
        if isinstance(outcome, str):
            failed[video.name] = outcome
        else:
            if warnings := outcome.pop("warnings"):
                warned[video.name] = warnings
            per_video[video.name] = outcome
            if on_video:
                on_video(video.name, outcome)
        if progress:
            progress(len(per_video) + len(failed), len(videos))
        if should_stop is not None and should_stop():
            break
    not_run = [video.name for video in videos[done:]]
    if not per_video and not_run:
        raise Interrupted("stopped before any video was measured: no report")
    if not per_video:
        raise InputError(f"no video in {folder} could be evaluated; {next(iter(failed))}: "
                         f"{next(iter(failed.values()))}")
    report = {"data": str(folder), "videos": per_video, **mean_scores(per_video.values()),
              "refine_steps": refine_steps, "precision": precision,
              "unavailable": unavailable, "failed": failed, "warnings": warned}
    return _add_external(report | ({"not_run": not_run} if not_run else {}), watcher, detector)


def _check_settings(model: MonkeyNet, limit: int | None, batch_size: int, crop,
                    refine_steps: int, precision: str) -> None:
    """InputError for a setting no video could be evaluated with, before the first (it
    would be tried on each, and said as the first video's failure)."""
    if limit is not None:
        check_count(limit, "limit", 1)
    check_batch_size(batch_size)
    crop_mode(crop, model)
    check_refine_steps(refine_steps)
    check_precision(precision, model.device)


def mean_scores(scores, keys: tuple[str, ...] = L1_SCORES) -> dict[str, float]:
    """Each key's mean over ``scores`` (one dict per video: each video's own number a mean
    over its frames, so that a long video counts as much as a short one)."""
    scores = list(scores)
    return {key: sum(one[key] for one in scores) / len(scores) for key in keys}


def reconstruction_report(run: dict, done: dict, failed: dict[str, str],
                          skipped: list[str], not_run: list[str]) -> dict:
    """``reconstruct``'s numbers for its --json: ``run`` (which checkpoint, refinement and
    precision: they change the numbers), each video's L1 (``done``: name -> its
    jobs.JobResult), their means as ``mean_l1``... (None where no video was done), each
    video's frames, scores and crop detector, the failures (a reason each), the warnings
    of those done, and the videos left out (--skip-existing) or not run (a stop)."""
    scores = {name: {key: r.extra[key] for key in L1_SCORES} for name, r in done.items()}
    means = mean_scores(scores.values()) if scores else dict.fromkeys(L1_SCORES)
    details = {name: {"frames": r.frames, "crop_detector": r.extra.get("detector")}
               | scores[name] for name, r in done.items()}
    return (run | {"videos": {name: one["l1"] for name, one in scores.items()}}
            | {f"mean_{key}": value for key, value in means.items()}
            | {"details": details, "failed": failed,
               "warnings": {name: r.warnings for name, r in done.items() if r.warnings}}
            | ({"skipped": skipped} if skipped else {})
            | ({"not_run": not_run} if not_run else {}))


def _add_external(report: dict, watcher: _Watcher, detector) -> dict:
    """Adds the external metrics measured (or why not) and the detectors used to
    ``report``."""
    per_video, unavailable = report["videos"], report["unavailable"]
    measured = watcher.results()
    report.update({k: v for k, v in measured.items() if not isinstance(v, str)})
    unavailable.update({k: v for k, v in measured.items() if isinstance(v, str)})
    if detector is not None:
        report["detector"] = detector.name  # the metrics' (AKD, MKR, AED)
    cropped = {v["crop_detector"] for v in per_video.values()} - {None}
    report["crop_detector"] = ", ".join(sorted(cropped)) or None  # the face crops
    return report


def _evaluate_one(model: MonkeyNet, video: Path, watcher: _Watcher, run: tuple[int, str],
                  crop, refine_steps: int) -> dict | str:
    """One video's L1s (``run``: batch size and precision), or why it could not be evaluated
    (then none of its frames count in the external metrics either)."""
    watcher.mark()
    batch_size, precision = run
    try:
        result = reconstruct_file(model, video, None, batch_size, precision, crop=crop,
                                  refine_steps=refine_steps,
                                  inspect=watcher if watcher.active else None)
    except InputError as exc:
        watcher.rollback()
        return str(exc)
    return {"frames": result.frames, "warnings": result.warnings,
            "crop_detector": result.extra.get("detector")} | {
        key: result.extra[key] for key in L1_SCORES}


def _fid_meter(model: MonkeyNet, weights: Path | None) -> fid.FIDMeter | str:
    """A meter over the given Inception weights, or the reason FID is not measured."""
    found = fid.find_weights(weights)
    return fid.FIDMeter(fid.InceptionFeatures(found, model.device)) if isinstance(found, Path) \
        else found


class ReferenceFID:
    """FID of generated frames (image-to-video) against the real frames of reference videos,
    e.g. a test split; frames are fitted to the model's size as for reconstruction, faces
    cropped where ``crop`` (predict's --crop: see framing.crop_mode) crops the source's. A
    box, which is the source image's, gives the reference videos their centred squares."""

    def __init__(self, model: MonkeyNet, weights: Path | None, reference: Path, crop=None):
        if not reference.exists():
            raise InputError(f"FID reference not found: {reference}")
        self.videos = (list_videos(evaluation_folder(reference)) if reference.is_dir()
                       else [reference])
        self.model, self.meter = model, _fid_meter(model, weights)
        self.crop = crop_mode(crop if crop in (None, "auto") else "none", model)
        self.read = False
        if not isinstance(self.meter, str):  # the videos read_reference reads, before any work
            for video in self.videos[:REFERENCE_FRAMES]:
                open_video(video)

    def read_reference(self, max_frames: int = REFERENCE_FRAMES,
                       progress: Callable[[int, int], None] | None = None) -> None:
        """Score at most ``max_frames`` reference frames, the same share from the start of
        each video; InputError naming a video that cannot be used (no face in it where faces
        are cropped). To call once the source is known to be usable (its errors first) and
        before generating; else the first add_generated calls it. ``progress(videos done,
        videos)``."""
        self.read = True
        if isinstance(self.meter, str):
            return
        videos = self.videos[:max_frames]
        share = max(1, max_frames // len(videos))
        for done, video in enumerate(videos, 1):
            try:
                self._read(video, share)
            except InputError as exc:
                raise InputError(f"FID reference {video.name}: {exc}") from None
            if progress:
                progress(done, len(videos))

    def _read(self, video: Path, share: int) -> None:
        reader = open_video(video)
        crop_at, _, _ = video_crops(reader, self.crop)
        taken = 0
        for frames, _ in frame_batches(reader, self.model.config.frame_size, FID_BATCH_FRAMES,
                                       crop_at):
            self.meter.add_real(np.stack(frames[:share - taken]))  # (B, H, W, 3)
            taken += len(frames[:share - taken])
            if taken >= share:
                break

    def add_generated(self, frames: np.ndarray) -> None:
        """(B, H, W, 3) uint8 generated frames."""
        if not self.read:
            self.read_reference()
        if isinstance(self.meter, fid.FIDMeter):
            self.meter.add_generated(frames)

    def result(self) -> float | str:
        """FID (after read_reference and the generated frames), or why it is unavailable."""
        if isinstance(self.meter, str):
            return f"unavailable ({self.meter})"
        return self.meter.result()
