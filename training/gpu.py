"""Train on the lent GPU machine, which has torch and OpenCV but no PyAV and no network.

Only 64 MiB of ignored files travel to it, so the data goes as small H.264 files made here:

    python training/gpu.py prep ../shared/datasets/mgif .gpu/data/mgif64 --size 64
    python training/gpu.py prep ../shared/datasets/taichi .gpu/data/taichi --size 64 --top-half \
        --test copart-0.,copart-5.,copart-9.

and there ``run`` starts monkeyanim's own CLI with video reading done by OpenCV, and
``export`` writes the run's weights as they are committed to training/ (float16, with the
discriminator, so that the next session's ``--init`` carries on; ``--blend`` adds the untrained
blend head to a run trained without it):

    python training/gpu.py run train .gpu/data/mgif64 -o runs/mgif64 --config ... --device cuda \
        --max-minutes 7 && python training/gpu.py export runs/mgif64 $OUT/mgif64.safetensors

Nothing here is part of the package: the CLI needs PyAV everywhere else.
"""

from __future__ import annotations

import argparse
import sys
import types
from fractions import Fraction
from pathlib import Path

# monkeyanim is not installed on the GPU machine: import it from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Near-lossless, and 4:4:4 so that colours are not halved: the model trains on these pixels.
PREP_CRF = 14
PREP_PIXEL_FORMAT = "yuv444p"
PREP_FPS = 25


def prep(source_dir: Path, target_dir: Path, size: int, top_half: bool,
         test: list[str] | None = None, val: list[str] | None = None) -> None:
    """Every video of source_dir/{train,val,test} (any format monkeyanim reads) as an mp4 of
    size x size frames (centre square, or the top square with ``top_half``). With ``test``
    (name prefixes), the videos of source_dir itself are split: those prefixes go to test/,
    and those of ``val`` to val/ (held out for `train --validate-every`)."""
    from monkeyanim.data import list_videos

    if test is None:
        jobs = [(path, split) for split in ("train", "val", "test")
                if (source_dir / split).is_dir() for path in list_videos(source_dir / split)]
    else:
        jobs = [(path, _split(path.name, test, val or []))
                for path in list_videos(source_dir) if not path.is_dir()]
    if not jobs:
        raise SystemExit(f"error: no videos in {source_dir}/train, val or test (--test splits "
                         "the videos of the folder itself)")
    for path, split in jobs:
        (target_dir / split).mkdir(parents=True, exist_ok=True)
        _encode(path, target_dir / split / f"{path.stem}.mp4", size, top_half)


def _split(name: str, test: list[str], val: list[str]) -> str:
    return "test" if name.startswith(tuple(test)) else \
        "val" if name.startswith(tuple(val)) else "train"


def _encode(path: Path, target: Path, size: int, top_half: bool) -> None:
    import av

    from monkeyanim.video import fit_frame, open_video

    with av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=PREP_FPS, options={"crf": str(PREP_CRF)})
        stream.width = stream.height = size
        stream.pix_fmt = PREP_PIXEL_FORMAT
        for frame in open_video(path).frames():
            if top_half:
                frame = frame[:frame.shape[1]]  # the upper (W, W) square
            image = av.VideoFrame.from_ndarray(fit_frame(frame, (size, size)), "rgb24")
            out.mux(stream.encode(image))
        out.mux(stream.encode())


def export(run_dir: Path, target: Path, previous: int | None = None,
           blend: float | None = None, best: bool = False) -> None:
    """A run's latest weights (with ``best``, its best on held-out videos, from
    ``--validate-every``), every network, as float16 (about half the run's file). With
    ``previous``, the run carried on that many earlier iterations through ``--init`` (which
    counts from 0): the file then records the iterations of both as one training. With
    ``blend`` (a weight in (0, 1)), a run trained without the blend head gets it untrained:
    that fixed weight on the warped source everywhere, the rest on the decoder's output (0.5,
    an even blend, did better than training the head; faces128 ships 0.9)."""
    import dataclasses
    import math

    import torch

    from monkeyanim.checkpoint import load_checkpoint, save_checkpoint
    from monkeyanim.models import build_model
    from monkeyanim.finetune import load_initial_weights

    model = load_checkpoint(run_dir / ("best.safetensors" if best else "model.safetensors"))
    if blend is not None and not model.config.generator.blend_source:
        config = dataclasses.replace(model.config, generator=dataclasses.replace(
            model.config.generator, blend_source=True))
        blended = build_model(config, with_discriminator=model.discriminator is not None)
        load_initial_weights(blended, model)
        with torch.no_grad():  # the head's weights stay zero: its bias alone sets the blend
            blended.generator.blend_mask.bias.fill_(math.log(blend / (1 - blend)))
        blended.provenance = dict(model.provenance)  # the run's own, not "initialised from" it
        model = blended
    if previous is not None:
        model.provenance.pop("initialised_from", None)
        model.provenance["iterations"] += previous
    save_checkpoint(model, target, with_discriminator=True, half=True)


def _opencv_video() -> None:
    """Stand in for PyAV: monkeyanim.video reads images and videos with OpenCV instead."""
    import cv2

    fake = types.ModuleType("av")
    fake.FFmpegError, fake.BlockingIOError, fake.EOFError = OSError, BlockingIOError, EOFError
    fake.filter = types.ModuleType("av.filter")
    sys.modules.update({"av": fake, "av.filter": fake.filter})
    from monkeyanim import video
    from monkeyanim.errors import InputError

    def read_image(path):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"cannot read image {path}")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # (H, W, 3)

    def decode(path):  # as video._decode_video: frames, start and end times (unknown here)
        capture = cv2.VideoCapture(str(path))
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), None, None  # (H, W, 3)
        capture.release()

    original_open = video.open_video

    def open_video(path):
        path = Path(path)
        if path.is_dir() or path.suffix.lower() in video.IMAGE_SUFFIXES:
            return original_open(path)  # frames through the read_image above
        if not path.is_file():
            raise InputError(f"video not found: {path}")
        count = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
        return video.VideoReader(path, Fraction(PREP_FPS), count or None)

    video.read_image, video._decode_video, video.open_video = read_image, decode, open_video


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("prep", "run", "export"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "export":
        _opencv_video()  # no PyAV on the GPU machine, should anything export loads import video.py
        parser = argparse.ArgumentParser(prog="gpu.py export")
        parser.add_argument("run_dir", type=Path)
        parser.add_argument("target", type=Path)
        parser.add_argument("--previous", type=int, metavar="ITERATIONS")
        parser.add_argument("--blend", type=float, nargs="?", const=0.5, metavar="WEIGHT",
                            help="add the untrained blend head to a run trained without it, "
                                 "at this weight on the warped source (default 0.5)")
        parser.add_argument("--best", action="store_true",
                            help="the run's best weights on its val/ videos, not its latest")
        args = parser.parse_args(sys.argv[2:])
        if args.blend is not None and not 0 < args.blend < 1:
            parser.error("--blend takes a weight between 0 and 1 (exclusive)")
        return export(args.run_dir, args.target, args.previous, args.blend, args.best)
    if sys.argv[1] == "prep":
        parser = argparse.ArgumentParser(prog="gpu.py prep")
        parser.add_argument("source", type=Path)
        parser.add_argument("target", type=Path)
        parser.add_argument("--size", type=int, required=True)
        parser.add_argument("--top-half", action="store_true")
        parser.add_argument("--test", help="comma-separated name prefixes held out for test/")
        parser.add_argument("--val", help="with --test: name prefixes held out for val/")
        args = parser.parse_args(sys.argv[2:])
        if args.val and not args.test:
            parser.error("--val splits the videos of SOURCE itself, as --test does: name both")
        prep(args.source, args.target, args.size, args.top_half,
             args.test.split(",") if args.test else None,
             args.val.split(",") if args.val else None)
        return
    _opencv_video()
    from monkeyanim.cli import main as cli_main
    sys.argv = ["monkeyanim", *sys.argv[2:]]
    cli_main()


if __name__ == "__main__":
    from monkeyanim.errors import MonkeyAnimError

    try:
        main()
    except MonkeyAnimError as error:  # a missing run folder, a damaged file: one line
        raise SystemExit(f"error: {error}") from None
