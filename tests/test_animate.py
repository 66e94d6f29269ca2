"""`monkeyanim animate` end to end on real videos, real PyAV, and the real console script."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

import monkeyanim
from monkeyanim.framing import frame_batches
from monkeyanim.pipeline import Animator, best_frame, relative_keypoints, to_tensor
from monkeyanim.video import fit_frame, open_video, read_source

from conftest import (sigint_default, assert_one_line_error, probe, run_cli, stream_seconds,
                      run_cli_on_terminal, write_video)


@pytest.fixture(scope="module")
def source_png(face_frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "portrait.png"
    cv2.imwrite(str(path), cv2.cvtColor(face_frames[30], cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def short_mp4(face_frames, tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("drv") / "talk.mp4", face_frames[:24], fps=25)


@pytest.mark.parametrize("suffix, codec, audio", [(".mp4", "h264", "aac"), (".mov", "h264", "aac"),
                                                  (".mkv", "h264", "aac"),
                                                  (".webm", "vp9", "opus")])  # AAC transcoded
def test_animate_keeps_rate_length_and_audio(small_model, source_png, face_video, tmp_path,
                                             suffix, codec, audio):
    out = tmp_path / f"out{suffix}"
    result = run_cli("animate", source_png, face_video, "-o", out, "-c", small_model)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and "125 frames" in result.stdout  # one summary line
    info = probe(out)
    assert (info["frames"], info["height"], info["width"], info["fps"]) == (125, 64, 64, 25.0)
    assert info["codec"] == codec and info["audio_codec"] == audio
    if suffix in (".mp4", ".mov"):  # the index first, so that playback starts while loading
        boxes = top_level_boxes(out)
        assert boxes.index("moov") < boxes.index("mdat"), boxes
    assert abs(info["audio_seconds"] - info["video_seconds"]) < 0.05
    assert not list(tmp_path.glob(".*"))  # no temp file left


def top_level_boxes(path: Path) -> list[str]:
    """The kinds of an MP4/MOV file's top-level boxes, in file order."""
    import struct

    data, kinds, at = path.read_bytes(), [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if size == 1:  # a 64-bit size follows the kind
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
        kinds.append(kind.decode("latin-1"))
        at += size or len(data)
    return kinds


def test_an_fps_that_is_the_driving_rate_keeps_the_sound(small_model, source_png, tmp_path):
    """--fps 25 on a 25 fps video (or 25.0001, as a rate typed short) changes no timing: the
    sound stays (it was dropped); another rate drops it, with a warning (into a format that
    could hold it)."""
    driving = write_clip_with_audio(tmp_path / "driving.mp4", 0.0, "aac", 0.0, 0.0)
    for fps, audio, suffix in (("25", "aac", "mp4"), ("25.0001", "aac", "mp4"),
                               ("24", None, "mp4"), ("24", None, "gif")):
        out = tmp_path / f"out{fps}.{suffix}"
        result = run_cli("animate", source_png, driving, "-o", out, "-c", small_model,
                         "--fps", fps)
        assert result.returncode == 0, result.stderr
        info = probe(out)
        assert (info["frames"], info["audio_codec"]) == (25, audio), fps
        if suffix == "mp4":  # (a gif's delays are in hundredths of a second: 24 is no rate)
            assert info["fps"] == float(fps if audio is None else 25)
        left_out = "warning: the driving video's sound is left out: --fps 24 is not its rate"
        assert (left_out in result.stderr) == (audio is None and suffix == "mp4"), result.stderr


def test_audio_a_container_cannot_hold_is_converted(face_video, tmp_path):
    """AAC into webm becomes Opus, Opus into mov becomes AAC, Opus into mkv is copied as it
    is; each cut to the video's 2 s."""
    from monkeyanim.videowriter import VideoWriter

    source = face_video
    for name, audio in (("a.webm", "opus"), ("b.mov", "aac"), ("c.mkv", "opus")):
        with VideoWriter(tmp_path / name, 25, audio_from=source) as writer:
            for i in range(50):
                writer.write(np.full((32, 48, 3), i * 5, np.uint8))
        info = probe(tmp_path / name)
        assert (info["frames"], info["audio_codec"]) == (50, audio)
        assert abs(info["audio_seconds"] - 2) < 0.05
        source = tmp_path / "a.webm"


def write_clip_with_audio(path: Path, video_start_s: float, audio_codec: str,
                          audio_start_s: float, tone_from_s: float, audio_s: float = 2.0,
                          rate: int = 44100, layout: str = "stereo") -> Path:
    """25 grey frames at 25 fps from ``video_start_s``, and ``audio_s`` seconds of audio from
    ``audio_start_s``: silent, then a 440 Hz tone from ``tone_from_s`` on (times in the
    file's own timeline, as a recording or broadcast stream that starts late has them)."""
    fps, samples_per_frame = 25, 1024
    index_first = {"movflags": "+faststart"} if path.suffix == ".mp4" else {}
    with av.open(str(path), "w", options=index_first) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream(audio_codec, rate=rate, layout=layout)
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), "rgb24")
            frame.pts, frame.time_base = i + round(video_start_s * fps), Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        channels = len(av.AudioLayout(layout).channels)
        for at in range(0, int(audio_s * rate), samples_per_frame):
            times = audio_start_s + np.arange(at, at + samples_per_frame) / rate
            wave = np.where(times >= tone_from_s, 0.5 * np.sin(2 * np.pi * 440 * times), 0)
            frame = av.AudioFrame.from_ndarray(
                np.tile(wave.astype(np.float32), (channels, 1)), format="fltp", layout=layout)
            frame.sample_rate, frame.time_base = rate, Fraction(1, rate)
            frame.pts = round(audio_start_s * rate) + at
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def loudness(path: Path, start_s: float, end_s: float) -> float:
    """Mean absolute sample of the file's audio heard between ``start_s`` and ``end_s`` (0
    where none is)."""
    heard = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            samples = frame.to_ndarray().reshape(-1, frame.samples)  # (channels, samples)
            times = frame.time + np.arange(frame.samples) / frame.sample_rate
            heard.append(np.abs(samples[:, (times >= start_s) & (times < end_s)]).ravel())
    heard = np.concatenate(heard)
    return float(heard.mean()) if heard.size else 0.0


@pytest.mark.parametrize("video_start_s, audio_codec, audio_start_s, output", [
    (1.0, "aac", 0.0, "out.mp4"),  # the video starts a second in: the audio of 0-1 s is not its
    (1.0, "pcm_s16le", 0.0, "out.mp4"),  # the same, converted to AAC
    (10.0, "aac", 10.0, "out.webm"),  # both start at 10 s (a broadcast recording), to Opus
    (0.0, "pcm_s16le", 0.5, "out.mp4"),  # the audio starts half a second after the picture
])
def test_audio_stays_with_the_frames_it_was_heard_with(tmp_path, video_start_s, audio_codec,
                                                       audio_start_s, output):
    """The tone starts with the first frame, or half a second in when the audio does; what
    comes out plays with the frames it played with in the driving video, copied or
    converted."""
    from monkeyanim.videowriter import VideoWriter

    tone_from_s = max(video_start_s, audio_start_s)
    driving = write_clip_with_audio(tmp_path / "driving.mkv", video_start_s, audio_codec,
                                    audio_start_s, tone_from_s)
    reader = open_video(driving)
    assert reader.start_s == pytest.approx(video_start_s)
    with VideoWriter(tmp_path / output, reader.fps, audio_from=driving,
                     audio_start_s=reader.start_s) as writer:
        for frame in reader.frames():
            writer.write(frame)
    delay_s = tone_from_s - video_start_s  # when the tone should be heard in the output
    assert loudness(tmp_path / output, delay_s + 0.1, 0.95) > 0.2
    if delay_s:
        assert loudness(tmp_path / output, 0, delay_s - 0.1) < 0.01
    assert abs(stream_seconds(tmp_path / output, "audio") - (1 - delay_s)) < 0.06


def write_flash_and_tone_ts(path: Path, fps: int = 25, flash_frame: int = 62) -> Path:
    """4 s of MPEG-TS: grey frames with two white ones from ``flash_frame`` on, and a tone
    that starts with the flash; open GOPs of 50 frames with B-frames, as camcorders write."""
    x264 = {"g": "50", "bf": "3", "threads": "1",
            "x264-params": "open-gop=1:keyint=50:min-keyint=50:scenecut=0"}
    rate, samples_per_frame = 48000, 1024
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options=x264)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="stereo")
        for i in range(100):
            grey = 255 if flash_frame <= i < flash_frame + 2 else 60 + i % 40
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), grey, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for at in range(0, 4 * rate, samples_per_frame):
            times = np.arange(at, at + samples_per_frame) / rate
            wave = np.where(times >= flash_frame / fps, 0.5 * np.sin(2 * np.pi * 300 * times), 0)
            frame = av.AudioFrame.from_ndarray(np.tile(wave.astype(np.float32), (2, 1)),
                                               format="fltp", layout="stereo")
            frame.sample_rate, frame.time_base, frame.pts = rate, Fraction(1, rate), at
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def test_audio_of_a_recording_cut_mid_gop_starts_with_its_first_frame(small_model, source_png,
                                                                      tmp_path):
    """A transport stream cut at any byte (a split recording) starts with packets that cannot
    be decoded alone: the picture starts at the first frame that decodes, so must the audio,
    or the sound plays a moment the picture does not show (it was 0.9 s off)."""
    whole = write_flash_and_tone_ts(tmp_path / "whole.ts").read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(whole[len(whole) // 4 // 188 * 188:])  # on a TS packet's boundary
    reader = open_video(cut)
    assert reader.first_frame_s() > reader.start_s + 0.3  # packets that decode to nothing
    out = tmp_path / "out.mp4"
    result = run_cli("animate", source_png, cut, "-o", out, "-c", small_model, "--side-by-side")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as container:  # the flash, in the driving video's panel
        flash_s = next(frame.time for frame in container.decode(video=0)
                       if frame.to_ndarray(format="rgb24")[:, :64].mean() > 240)
    with av.open(str(out)) as container:  # the first loud sample
        tone_s = next(frame.time + np.argmax(loud) / frame.sample_rate
                      for frame in container.decode(audio=0)
                      if (loud := np.abs(frame.to_ndarray()[0]) > 0.2).any())
    assert abs(tone_s - flash_s) < 0.03, (flash_s, tone_s)


def test_non_square_pixels_are_read_as_displayed(tmp_path):
    """A camcorder's 1440x1080 (HDV, AVCHD) or anamorphic DVD stores pixels wider than high
    (the sample aspect ratio) that players stretch: frames are read as shown, or every
    picture comes out squeezed. Here 120x96 pixels of 4:3 show a 160x96 picture in which a
    disc is round."""
    shown = np.full((96, 160, 3), 40, np.uint8)
    cv2.circle(shown, (80, 48), 30, (250, 250, 250), -1)
    stored = cv2.resize(shown, (120, 96), interpolation=cv2.INTER_AREA)
    path = tmp_path / "anamorphic.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 120, 96, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(4, 3)
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, "rgb24")))
        container.mux(stream.encode(None))
    frame = next(open_video(path).frames())
    assert frame.shape == (96, 160, 3)
    rows, columns = np.nonzero(frame[..., 0] > 150)  # the disc: as wide as high again
    assert abs((columns.max() - columns.min()) - (rows.max() - rows.min())) <= 3
    bogus = tmp_path / "bogus.mkv"  # a damaged header's 200:1 would make 24,000-px frames
    with av.open(str(bogus), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 120, 96, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(200, 1)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, "rgb24")))
        container.mux(stream.encode(None))
    assert next(open_video(bogus).frames()).shape == (96, 120, 3)


def test_audio_codecs_by_what_they_are_not_their_decoders_names(tmp_path):
    """MP3 (whose decoder FFmpeg names mp3float) is copied into mp4; 192 kHz PCM, beyond
    AAC, becomes AAC at 96 kHz; mono stays mono. An mkv whose audio outlasts its picture is
    no 'cut short' file."""
    from monkeyanim.videowriter import VideoWriter

    for codec, rate, layout, expected in (("libmp3lame", 44100, "stereo", ("mp3", 44100, 2)),
                                          ("pcm_s16le", 192000, "mono", ("aac", 96000, 1))):
        driving = write_clip_with_audio(tmp_path / "driving.mkv", 0, codec, 0, 0, audio_s=3,
                                        rate=rate, layout=layout)
        reader = open_video(driving)
        with VideoWriter(tmp_path / "out.mp4", reader.fps, audio_from=driving) as writer:
            for frame in reader.frames():
                writer.write(frame)
        assert reader.ended_early() is None
        with av.open(str(tmp_path / "out.mp4")) as container:
            audio = container.streams.audio[0]
            assert (audio.codec_context.codec.id, audio.rate, audio.channels) == (
                av.Codec(expected[0], "r").id, *expected[1:])
        (tmp_path / "out.mp4").unlink()


def test_a_cut_download_leaves_out_its_torn_audio_packet(tmp_path):
    """The last audio packet of a file cut short is incomplete (the demuxer flags it corrupt):
    copied, it would stop players decoding the output's audio."""
    from monkeyanim.videowriter import VideoWriter

    whole = write_clip_with_audio(tmp_path / "whole.mp4", 0, "aac", 0, 0, audio_s=3)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.3)])  # 0.8 s of audio
    reader = open_video(cut)
    with VideoWriter(tmp_path / "out.mp4", reader.fps, audio_from=cut) as writer:
        for frame in reader.frames():
            writer.write(frame)
    assert loudness(tmp_path / "out.mp4", 0, 10) > 0.2  # every packet decodes


def test_gif_fps_size_and_side_by_side(small_model, source_png, short_mp4, tmp_path):
    out = tmp_path / "out.gif"
    result = run_cli("animate", source_png, short_mp4, "-o", out, "-c", small_model, "--fps", "10",
                     "--size", "96", "--side-by-side")
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert (info["frames"], info["height"], info["width"]) == (24, 96, 288)
    assert info["fps"] == 10.0
    # the middle panel is the (still) source
    source = fit_frame(cv2.imread(str(source_png))[..., ::-1], (96, 96))
    assert np.abs(info["first"][:, 96:192].astype(int) - source).mean() < 12


def gif_delays(path: Path) -> list[int]:
    """Each frame's delay in the GIF's hundredths of a second, the last one's included."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [b.pts - a.pts for a, b in zip(frames, frames[1:])] + [frames[-1].duration]


@pytest.mark.parametrize("fps, frames, delays", [(10, 12, {10}), (30, 30, {3, 4}),
                                                 (120, 30, {2})])
def test_gif_keeps_the_video_duration_with_frames_at_least_20_ms_apart(tmp_path, fps, frames,
                                                                       delays):
    """GIF delays are whole hundredths of a second and browsers slow down shorter ones than
    two: a 120 fps video (phone slow motion) keeps every 2.4th frame, once crashed the writer."""
    from monkeyanim.videowriter import VideoWriter

    with VideoWriter(tmp_path / "out.gif", fps) as writer:
        for i in range(frames):
            writer.write(np.full((16, 16, 3), i * 8, np.uint8))
    written = gif_delays(tmp_path / "out.gif")
    assert set(written) == delays
    assert abs(sum(written) - 100 * frames / fps) <= 1  # the last frame lasts two ticks too


@pytest.mark.parametrize("suffix, fps", [(".gif", 30), (".gif", 15), (".gif", Fraction(30000, 1001)),
                                         (".gif", 7.5), (".mkv", 30),
                                         (".mkv", Fraction(30000, 1001)),
                                         (".webm", Fraction(24000, 1001))])
def test_a_steady_rate_in_coarse_ticks_reads_back_as_written(tmp_path, suffix, fps):
    """A gif stores 30 fps as delays of 30, 30 and 40 ms (mkv 33, 33, 34): FFmpeg's rate is
    the commonest delay's (33.3 fps), which made the output 10% shorter than the input."""
    from monkeyanim.videowriter import VideoWriter

    with VideoWriter(tmp_path / f"steady{suffix}", fps) as writer:
        for i in range(60):
            writer.write(np.full((16, 16, 3), i * 4, np.uint8))
    reader = open_video(tmp_path / f"steady{suffix}")
    frames = list(reader.frames())
    assert reader.fps == pytest.approx(float(fps), rel=2e-3) and len(frames) == 60
    assert np.allclose([f.mean() for f in frames], [i * 4 for i in range(60)], atol=2)  # in order


@pytest.mark.parametrize("delays, fps", [([12] * 40, Fraction(25, 3)), ([8] * 40, Fraction(25, 2)),
                                         ([50, 120], None), ([20, 20, 50, 50], None)])
def test_gif_delays_give_their_own_rate(tmp_path, delays, fps):
    """Equal delays of 12 cs are 25/3 fps (read as 8: each frame within half a tick of
    12.5 cs, but 20 ticks off over 40); a 2- or 4-frame gif of two delays had no delay within
    a tick of their median, and failed with ZeroDivisionError."""
    from PIL import Image

    frames = [Image.fromarray(np.full((16, 16, 3), i * 6, np.uint8)) for i in range(len(delays))]
    frames[0].save(tmp_path / "timed.gif", save_all=True, append_images=frames[1:],
                   duration=[10 * d for d in delays], loop=0)
    reader = open_video(tmp_path / "timed.gif")
    assert len(list(reader.frames())) >= len(delays)
    if fps is not None:
        assert reader.fps == fps


def test_a_relative_name_with_a_colon_is_a_file_not_a_protocol(small_model, source_png,
                                                                short_mp4, tmp_path):
    """FFmpeg read '12:30.mp4' as the protocol '12': 'Protocol not found'. (Made absolute
    without resolving '..': 'link/../x' is x beside the link's target, as the OS finds it.)"""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    shutil.copy(short_mp4, tmp_path / "real" / "12:30.mp4")
    result = run_cli("reconstruct", "link/../12:30.mp4", "-o", "r.mp4", "-c", small_model,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shutil.copy(short_mp4, tmp_path / "12:30.mp4")
    shutil.copy(source_png, tmp_path / "shot:1.png")
    result = run_cli("animate", "shot:1.png", "12:30.mp4", "-o", "out:1.mp4", "-c", small_model,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert open_video(tmp_path / "out:1.mp4").num_frames == open_video(short_mp4).num_frames


def test_webp_output_loops_at_the_video_rate(small_model, face_frames, tmp_path):
    """Animated WebP: lossy, a seventh of a gif's size, read back by monkeyanim itself."""
    import cv2

    from monkeyanim.videowriter import VideoWriter

    frames = [np.ascontiguousarray(f[:96, :96]) for f in face_frames[:12]]
    frames[5:8] = [frames[4]] * 3  # a still moment: libwebp stores one frame 4 times as long
    with VideoWriter(tmp_path / "out.webp", 12) as writer:
        for frame in frames:
            writer.write(frame)
    assert len(cv2.imreadanimation(str(tmp_path / "out.webp"))[1].frames) == 9
    reader = open_video(tmp_path / "out.webp")
    assert (reader.kind, reader.fps) == ("animation", 12)
    decoded = list(reader.frames())
    assert len(decoded) == 12 and all(np.array_equal(decoded[4], f) for f in decoded[5:8])
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(decoded, frames)]) < 3
    assert cv2.imreadanimation(str(tmp_path / "out.webp"))[1].loop_count == 0  # forever
    result = run_cli("keypoints", tmp_path / "out.webp", "-o", tmp_path / "kp.webp",
                     "-c", small_model)
    assert result.returncode == 0, result.stderr
    assert open_video(tmp_path / "kp.webp").num_frames == 12


def test_gif_from_a_120_fps_video(small_model, face_frames, tmp_path):
    driving = write_video(tmp_path / "slowmo.mp4", face_frames[:24], fps=120)  # 0.2 s
    out = tmp_path / "kp.gif"
    result = run_cli("keypoints", driving, "-o", out, "-c", small_model)
    assert result.returncode == 0, result.stderr
    assert gif_delays(out) == [2] * 10


def test_streamed_batches_equal_direct_generation(small_model, face_frames):
    """Cached source features + batching give the frames of the plain API (fp32, 1e-5)."""
    model = monkeyanim.load_model(small_model)
    frames = [fit_frame(f, (64, 64)) for f in face_frames[:13]]
    source = to_tensor([frames[5]])[0]
    animator = Animator(model, source, mode="relative")
    streamed = torch.cat([animator(to_tensor(frames[i:i + 4])) for i in range(0, 13, 4)])
    drive = to_tensor(frames)
    kp_driving, kp_source = model.keypoints(drive), model.keypoints(source[None])
    direct = model.generate(source, kp_source, relative_keypoints(kp_source, kp_driving,
                                                                  kp_driving[:1])).frames
    assert (streamed - direct).abs().max().item() <= 1e-5
    absolute = Animator(model, source, mode="absolute")
    assert torch.equal(absolute.transfer(kp_driving).mean, kp_driving.mean)
    # (random weights barely move keypoints, so the frames differ only slightly)
    assert (absolute(drive) - direct).abs().max().item() > 1e-4


def test_every_convolution_gets_channels_last_input(small_model, face_frames):
    """A layout switch before a conv costs a copy of its input; load_model's weights and the
    pipeline's frames are channels_last, and no conv of animate sees anything else."""
    model = monkeyanim.load_model(small_model)
    frames = to_tensor([fit_frame(f, (64, 64)) for f in face_frames[:4]])
    animator = Animator(model, frames[0])
    seen = []

    def record(module, inputs):
        x = inputs[0]
        if x.shape[1] > 1 and x.shape[-1] * x.shape[-2] > 1:  # both layouts at once otherwise
            seen.append(x.is_contiguous(memory_format=torch.channels_last))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    animator(frames)
    for hook in hooks:
        hook.remove()
    assert len(seen) > 30 and all(seen), f"{seen.count(False)} of {len(seen)} NCHW"


def test_best_frame_finds_the_source_pose(small_model, face_frames):
    model = monkeyanim.load_model(small_model)
    frames = to_tensor([fit_frame(f, (64, 64)) for f in face_frames[:20]])
    kp = model.keypoints(frames)
    assert best_frame(kp[11:12], kp) == 11
    # batch by batch, keeping only the closest so far: the same frame and keypoints
    from monkeyanim.pipeline import best_driving_frame

    for source in (kp[11:12], kp[2:3], kp[19:20]):
        index, found = best_driving_frame(model, source, frames.split(3))
        assert index == best_frame(source, kp)
        assert torch.allclose(found.mean, kp.mean[index:index + 1], atol=1e-6)
        assert torch.allclose(found.covar, kp.covar[index:index + 1], atol=1e-6)


def test_find_best_frame_and_adapt_scale_run(small_model, source_png, short_mp4, tmp_path):
    out = tmp_path / "best.mp4"
    result = run_cli("animate", source_png, short_mp4, "-o", out, "-c", small_model,
                     "--find-best-frame", "--adapt-scale", "--batch-size", "5")
    assert result.returncode == 0, result.stderr
    assert probe(out)["frames"] == 24
    assert re.search(r", best_frame \d+", result.stdout), result.stdout  # which one it took


def test_relative_motion_options_are_refused_in_absolute_mode(source_png, short_mp4, tmp_path):
    """mgif runs absolute by default, where --find-best-frame and --adapt-scale would change
    nothing: refused, with the way to have them, before any output is made."""
    out = tmp_path / "o.mp4"
    result = run_cli("animate", source_png, short_mp4, "-o", out, "-c", "mgif",
                     "--find-best-frame", "--adapt-scale")
    assert_one_line_error(result, "--adapt-scale and --find-best-frame work on relative motion",
                          "(mgif's default)", "--mode relative")
    result = run_cli("animate", source_png, short_mp4, "-o", out, "-c", "shapes", "--mode",
                     "absolute", "--adapt-scale")
    assert_one_line_error(result, "--adapt-scale works on relative motion")
    assert not out.exists()
    model = monkeyanim.load_model("shapes")
    with pytest.raises(monkeyanim.InputError, match="absolute"):
        Animator(model, torch.zeros(3, 64, 64), "absolute", scale_motion=True)


def test_a_crop_box_that_misses_a_frame_names_it(small_model, face_frames, short_mp4, tmp_path):
    """A box that fits the source but not the driving video: the error says which one."""
    height, width = face_frames[0].shape[:2]
    large = tmp_path / "large.png"
    cv2.imwrite(str(large), cv2.resize(face_frames[0], (width * 2, height * 2))[..., ::-1])
    box = f"0,0,{width + 10},{height + 10}"
    result = run_cli("animate", large, short_mp4, "-o", tmp_path / "o.mp4", "-c", small_model,
                     "--crop", box)
    assert_one_line_error(result, "lies outside frame 0 of talk.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_a_batch_never_writes_among_its_inputs(small_model, source_png, short_mp4, tmp_path):
    """-o naming the driving (or source) folder would have the next run animate its own
    results; a video in a folder of sources is left out with a warning."""
    drivings, sources = tmp_path / "drivings", tmp_path / "sources"
    drivings.mkdir()
    sources.mkdir()
    (drivings / "talk.mp4").symlink_to(short_mp4)
    (sources / "portrait.png").symlink_to(source_png)
    (sources / "clip.mp4").symlink_to(short_mp4)
    for output in (drivings, sources):
        result = run_cli("animate", sources, drivings, "-o", output, "-c", small_model)
        assert_one_line_error(result, "is the folder of the inputs")
    for command in ("reconstruct", "keypoints"):
        result = run_cli(command, drivings, "-o", drivings, "-c", small_model)
        assert_one_line_error(result, "is the folder of the inputs")
    assert sorted(p.name for p in drivings.iterdir()) == ["talk.mp4"]
    result = run_cli("animate", sources, drivings, "-o", tmp_path / "out", "-c", small_model)
    assert result.returncode == 0, result.stderr
    assert "1 video in" in result.stderr and "left out: a folder of sources takes images" \
        in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["portrait__talk.mp4"]
    # a link among the outputs to an input of another pair (here of another source, and of
    # a video for reconstruct): --overwrite wrote through it, and the pairs after read the
    # damage; refused before any work
    (sources / "other.png").symlink_to(source_png)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "other__talk.mp4").symlink_to(sources / "portrait.png")
    (linked / "speech.mp4").symlink_to(drivings / "talk.mp4")
    before = source_png.read_bytes()
    result = run_cli("animate", sources, drivings, "-o", linked, "-c", small_model, "--overwrite")
    assert_one_line_error(result, "other__talk.mp4 is the input", "(through a link)")
    (drivings / "speech.mp4").write_bytes(short_mp4.read_bytes())
    result = run_cli("reconstruct", drivings, "-o", linked, "-c", small_model, "--overwrite")
    assert_one_line_error(result, "speech.mp4 is the input", "talk.mp4 itself (through a link)")
    assert source_png.read_bytes() == before


@pytest.mark.parametrize("kind", [".mov", ".webm", ".mkv", ".avi", ".gif", "strip", "folder",
                                  "odd-size", "vfr", "one-frame", "animated.webp",
                                  "animated.png"])
def test_driving_formats(kind, small_model, source_png, face_frames, tmp_path):
    frames = [cv2.resize(f, (96, 96)) for f in face_frames[:8]]
    if kind.startswith("."):
        driving = write_video(tmp_path / f"d{kind}", frames, fps=12)
    elif kind == "strip":
        driving = tmp_path / "strip.png"
        cv2.imwrite(str(driving), cv2.cvtColor(np.concatenate(frames, axis=1), cv2.COLOR_RGB2BGR))
    elif kind == "folder":
        driving = tmp_path / "frames"
        driving.mkdir()
        for i, frame in enumerate(frames):
            cv2.imwrite(str(driving / f"{i:04d}.jpg"), frame[..., ::-1])
    elif kind == "odd-size":
        driving = write_video(tmp_path / "odd.mkv", [f[:77, :95] for f in face_frames[:8]], codec="ffv1")
    elif kind == "vfr":
        driving = write_video(tmp_path / "vfr.mkv", frames, pts=[0, 40, 60, 140, 150, 230, 300, 310])
    elif kind.startswith("animated"):
        driving = write_animation(tmp_path / kind, frames, [80] * len(frames))
    else:
        driving = write_video(tmp_path / "one.mp4", frames[:1])
    # the vfr file stores its times in 25ths of a second (0, 40, 80, 160, 160, 240, 320, 320
    # ms, the last lasting 40): 9 frame times, each showing the frame on screen then
    expected = {"one-frame": 1, "vfr": 9}.get(kind, 8)
    out = tmp_path / "out.mp4"
    # one frame moves nothing relative to itself (refused, test_still_image_driving): it poses
    mode = ["--mode", "absolute"] if kind == "one-frame" else []
    result = run_cli("animate", source_png, driving, "-o", out, "-c", small_model, *mode)
    assert result.returncode == 0, result.stderr
    assert probe(out)["frames"] == expected
    if kind.startswith("animated"):
        assert probe(out)["fps"] == 12.5  # 80 ms a frame


def write_animation(path: Path, frames: list[np.ndarray], durations_ms: list[int]) -> Path:
    """An animated WebP or PNG (by suffix) of RGB or RGBA frames, written by OpenCV."""
    animation = cv2.Animation()
    animation.frames = [cv2.cvtColor(f, cv2.COLOR_RGBA2BGRA if f.shape[2] == 4 else
                                     cv2.COLOR_RGB2BGR) for f in frames]
    animation.durations = durations_ms
    assert cv2.imwriteanimation(str(path), animation)
    return path


def test_animated_images_are_videos_on_white(face_frames, tmp_path):
    """FFmpeg decodes no animated WebP and only the first frame of an animated PNG: both are
    read with OpenCV, transparency on white, at the rate their durations give; as a source, an
    animated WebP gives its first frame."""
    from monkeyanim.video import read_image

    rgba = [cv2.cvtColor(f[:48, :40], cv2.COLOR_RGB2RGBA) for f in face_frames[:3]]
    for frame in rgba:
        frame[:, :20, 3] = 0  # left half transparent
    expected = [f[..., :3].copy() for f in rgba]
    for frame in expected:
        frame[:, :20] = 255
    # frames lasting 2 and 3 frame times (a still run merged, as libwebp and gif optimisers
    # do) are read back that many times: the motion keeps its timing
    apng = write_animation(tmp_path / "a.png", rgba, [40, 80, 120])
    reader = open_video(apng)
    assert (reader.kind, reader.fps, reader.num_frames) == ("animation", 25, 6)
    restored = [expected[i] for i in (0, 1, 1, 2, 2, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(reader.frames(), restored, strict=True))
    # durations that are no whole number of the shortest: each frame once, at the mean rate
    uneven = open_video(write_animation(tmp_path / "b.png", rgba, [40, 60, 40]))
    assert (uneven.fps, uneven.num_frames, len(list(uneven.frames()))) == (21.5, 3, 3)
    webp = write_animation(tmp_path / "a.webp", rgba, [40, 40, 40])
    assert open_video(webp).fps == 25
    first = read_image(webp).astype(int)
    assert first.shape == (48, 40, 3) and (first[:, :20] == 255).all()
    assert np.abs(first[:, 20:] - expected[0][:, 20:]).mean() < 8  # lossy WebP


def test_a_gif_with_merged_still_runs_keeps_its_timing(face_frames, tmp_path):
    """Gif optimisers store a still moment as one longer frame: read back, it lasts as many
    frame times (here 40, 80 and 120 ms: 6 frames at 25 fps, not 3 at 16.7)."""
    frames = [np.ascontiguousarray(f[:48, :48]) for f in face_frames[:5:2]]
    reader = open_video(write_animation(tmp_path / "a.gif", frames, [40, 80, 120]))
    assert (reader.kind, reader.fps, reader.num_frames) == ("video", 25, 6)
    decoded = list(reader.frames())
    assert len(decoded) == 6 and reader.ended_early() is None
    assert [int(np.array_equal(decoded[i], decoded[i + 1])) for i in range(5)] == [0, 1, 0, 1, 1]
    # OpenCV's gif writer dithers to a fixed palette: the frames' mean colours stay
    for i, j in ((0, 0), (1, 1), (3, 2), (5, 2)):
        assert np.abs(decoded[i].mean((0, 1)) - frames[j].mean((0, 1))).max() < 10


def test_a_video_that_drops_repeated_frames_keeps_its_timing(face_frames, datasets_dir,
                                                              tmp_path):
    """Some encoders leave out a frame that repeats the last one and let that last longer: a
    30 fps mp4 whose fourth frame is missing plays 6 frame times, so it is read as 6 frames at
    30 fps (not 5 at 25) and its audio stays in step. Two of the 39 real face videos do this."""
    frames = [np.ascontiguousarray(f[:64, :64]) for f in face_frames[:5]]
    reader = open_video(write_video(tmp_path / "gap.mp4", frames, fps=30,
                                    pts=[0, 33, 67, 133, 167]))
    decoded = list(reader.frames())
    assert (reader.fps, len(decoded)) == (30, 6) and decoded[3] is decoded[2]
    assert [np.abs(decoded[i].astype(int) - frames[j]).mean() < 4
            for i, j in ((0, 0), (2, 2), (4, 3), (5, 4))] == [True] * 4
    for name, fps, count in (("retalking-1.mp4", 30, 183), ("vexpress-rd-radio10.mp4",
                                                           Fraction(30000, 1001), 62)):
        reader = open_video(datasets_dir / "faces" / name)
        assert reader.fps == fps and len(list(reader.frames())) == count
        assert count / fps == pytest.approx(reader.duration_s, abs=0.05)


def test_a_variable_frame_rate_video_keeps_in_step_with_its_timestamps(tmp_path):
    """A phone filming at 30 fps that slows to 24 in the dark: read at the rate of its
    typical frames (within a tick of the median: 42 and 43 ms), output frame n is the frame
    on screen at n frame times (nearest), so the motion keeps in step with the audio; frames
    shorter than half a frame time drop out."""
    starts_ms = [0]
    for i in range(1, 40):
        starts_ms.append(starts_ms[-1] + (33 if i < 15 else 42) + (i % 3 == 0))
    frames = [np.full((16, 16, 3), 6 * i, np.uint8) for i in range(40)]
    reader = open_video(write_video(tmp_path / "vfr.mkv", frames, fps=1000, pts=starts_ms))
    decoded = [round(int(f[8, 8, 0]) / 6) for f in reader.frames()]
    durations = [b - a for a, b in zip(starts_ms, starts_ms[1:])]
    typical = [d for d in durations if abs(d - 42) <= 1]  # the median frame lasts 42 ms
    assert float(reader.fps) == pytest.approx(1000 * len(typical) / sum(typical), rel=2e-3)
    frame_ms = 1000 / float(reader.fps)
    on_screen = [max(i for i, start in enumerate(starts_ms) if start <= (n + 0.5) * frame_ms)
                 for n in range(len(decoded))]
    # the last frame too shows its own length (43 ms: a tick past one frame time)
    assert decoded == on_screen and abs(len(decoded) * frame_ms - starts_ms[-1]) <= frame_ms + 1
    assert 2 not in decoded and 20 in decoded  # dropped at 30 fps, every frame at 24


def test_a_long_gap_in_the_timestamps_is_held_and_said(small_model, tmp_path):
    """One frame shown for a minute (a pause in a screen recording, or a damaged timestamp)
    is held as players hold it, with a warning, since the output is that much longer."""
    frames = [np.full((16, 16, 3), 12 * i, np.uint8) for i in range(10)]
    starts_ms = [40 * i for i in range(9)] + [40 * 8 + 60_000]
    path = write_video(tmp_path / "gap.mkv", frames, fps=1000, pts=starts_ms)
    reader = open_video(path)
    assert "one frame shows for 60 s" in reader.hold_note()
    assert reader.expected_frames > 60 * 25
    assert open_video(write_video(tmp_path / "steady.mkv", frames, fps=1000,
                                  pts=[40 * i for i in range(10)])).hold_note() is None
    result = run_cli("reconstruct", path, "-o", tmp_path / "out.mp4", "-c", small_model)
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "shows for 60 s" in result.stderr
    # a jump of hours is damage: refused at once (it made a 20-frame clip 40 minutes' work)
    broken = write_video(tmp_path / "broken.mkv", frames, fps=1000,
                         pts=[40 * i for i in range(9)] + [40 * 8 + 5 * 3_600_000])
    result = run_cli("reconstruct", broken, "-o", tmp_path / "broken.mp4", "-c", small_model)
    assert_one_line_error(result, "broken.mkv: one frame shows for 300 min", "refused past 10 "
                                  "min", "setpts=N/FRAME_RATE/TB")
    # but a last frame shown long is no gap: a gif's pause at its end (65535 cs, its longest)
    from PIL import Image

    still = [Image.fromarray(np.full((16, 16, 3), c, np.uint8)) for c in (0, 80, 160, 240)]
    still[0].save(tmp_path / "pause.gif", save_all=True, append_images=still[1:],
                  duration=[100, 100, 100, 655_350], loop=0)
    assert "shows for 655 s" in open_video(tmp_path / "pause.gif").hold_note()
    # with B-frames, an mp4's last frame shown carried the gap as its duration (those are in
    # decoding order): it was held 12 s more, past the 12.6 s the file states
    bframes = {"x264-params": "bframes=2:b-adapt=0:scenecut=0"}
    path = write_video(tmp_path / "bframes.mp4", frames[:6], fps=10, options=bframes,
                       pts=[0, 100, 200, 12_300, 12_400, 12_500])
    reader = open_video(path)
    assert (reader.fps, reader.duration_s) == (10, pytest.approx(12.6))
    decoded = [round(int(f[8, 8, 0]) / 12) for f in reader.frames()]
    assert len(decoded) == reader.expected_frames == 126 and decoded[-2:] == [4, 5]


@pytest.mark.parametrize("durations, repeats, fps", [
    ([40, 80, 120], [1, 2, 3], 25),  # exact multiples
    ([83, 83, 84, 333, 83], [1, 1, 1, 4, 1], 12),  # 12 fps in whole ms, a run of 4 merged
    ([3, 7, 10, 3, 4], [1, 2, 3, 1, 1], 30),  # 30 fps in gif hundredths, runs of 2 and 3
    ([33, 34, 33, 34], [1, 1, 1, 1], 30),  # jitter is no run
    ([40, 60, 40], [1, 1, 1], 21.5),  # no whole multiples: each once at the mean rate
    ([250, 249], [1, 1], 4),  # every frame a run: nothing tells, so the rate is as stored
    # 10 ms is a short frame, not a steady 100 fps; 26.5 fps gives 151 ms in all, to a tick
    ([40, 20, 80, 10], [1, 1, 1, 1], 26.5),
    ([0, 40, 40], [1, 1, 1], 25)])  # a frame without a duration: the others' mean rate
def test_frame_timing(durations, repeats, fps):
    from monkeyanim.frametiming import frame_timing

    ticks_per_s = 100 if max(durations) < 20 else 1000
    found, rate = frame_timing(durations, ticks_per_s)
    assert found == repeats and float(rate) == pytest.approx(fps, abs=0.01)


@pytest.mark.parametrize("kind", ["jpg", "webp", "gray", "rgba", "odd"])
def test_source_formats(kind, small_model, face_frames, short_mp4, tmp_path):
    image = face_frames[3][..., ::-1]
    if kind == "gray":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif kind == "rgba":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    elif kind == "odd":
        image = image[:301, :233]
    source = tmp_path / f"s.{'png' if kind in ('gray', 'rgba', 'odd') else kind}"
    cv2.imwrite(str(source), image)
    out = tmp_path / "out.mp4"
    result = run_cli("animate", source, short_mp4, "-o", out, "-c", small_model)
    assert result.returncode == 0, result.stderr
    assert probe(out)["frames"] == 24


def test_transparent_pixels_of_an_image_come_out_white(face_frames, tmp_path):
    from monkeyanim.video import read_image

    rgb = face_frames[3][:48, :40]  # (48, 40, 3) RGB
    bgra = cv2.cvtColor(rgb[..., ::-1], cv2.COLOR_BGR2BGRA)
    cv2.imwrite(str(tmp_path / "opaque.png"), bgra)
    assert np.array_equal(read_image(tmp_path / "opaque.png"), rgb)
    bgra[:, :20, 3] = 0  # left half transparent (its colour channels still hold the face)
    bgra[:, 20:, 3] = 128  # right half half-transparent
    cv2.imwrite(str(tmp_path / "cut-out.png"), bgra)
    image = read_image(tmp_path / "cut-out.png").astype(int)
    assert (image[:, :20] == 255).all()
    expected = np.round(rgb[:, 20:] * (128 / 255) + 255 * (127 / 255))
    assert np.abs(image[:, 20:] - expected).max() <= 1


def test_bad_inputs_give_one_line_errors(small_model, source_png, short_mp4, tmp_path):
    out = tmp_path / "out.mp4"
    cases = []
    cases.append(((tmp_path / "nope.png", short_mp4), "not found"))
    cases.append(((source_png, tmp_path / "nope.mp4"), "video not found"))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000))
    cases.append(((source_png, corrupt), "cannot read video"))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(short_mp4.read_bytes()[:3000])
    cases.append(((source_png, truncated), "video"))
    empty = tmp_path / "empty.mp4"
    write_video(empty, [])
    cases.append(((source_png, empty), "no frames"))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases.append(((text, short_mp4), "cannot read image"))
    # cut short: a JPEG (FFmpeg painted its lower part green, silently), an animated WebP
    # (OpenCV logged asserts before the error) and PNG (it was read as a still image)
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), cv2.imread(str(source_png)))
    (tmp_path / "half.jpg").write_bytes(photo.read_bytes()[:photo.stat().st_size // 2])
    cases.append(((tmp_path / "half.jpg", short_mp4), "cannot read image"))
    frames = list(open_video(short_mp4).frames())
    for suffix in (".webp", ".png"):
        whole = write_animation(tmp_path / f"whole{suffix}", frames, [80] * len(frames))
        half = tmp_path / f"half{suffix}"
        half.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
        cases.append(((source_png, half), f"cannot read the animation in {half}"))
    pipe, dangling, loop = tmp_path / "pipe.mp4", tmp_path / "dangling.mp4", tmp_path / "loop.mp4"
    os.mkfifo(pipe)  # read more than once, as videos are, it would give nothing the 2nd time
    dangling.symlink_to(tmp_path / "moved.mp4")
    loop.symlink_to(loop)
    cases += [((source_png, pipe), "is not a regular file (a pipe, device or socket)"),
              ((pipe, short_mp4), "source"),
              ((source_png, dangling), "is a link to"),
              ((source_png, loop), "which leads back to it")]
    for (source, driving), fragment in cases:
        result = run_cli("animate", source, driving, "-o", out, "-c", small_model)
        assert_one_line_error(result, fragment)
        assert not out.exists()
    assert not list(tmp_path.glob(".out*"))


def test_bad_outputs_and_options_are_refused_before_the_model_loads(source_png, short_mp4,
                                                                         tmp_path):
    # without -c the default checkpoint would load first and say so on stderr: one line only
    folder = tmp_path / "taken.mp4"
    folder.mkdir()
    out = tmp_path / "new"
    out.mkdir()
    train_only = tmp_path / "split"
    (train_only / "train").mkdir(parents=True)
    for args, error in ((("animate", source_png, short_mp4, "-o", out / "o.avi"),
                         "must end in .mp4, .mov, .mkv, .webm, .gif or .webp"),
                        (("reconstruct", short_mp4, "-o", out / "o.flv"),
                         "must end in .mp4, .mov, .mkv, .webm, .gif or .webp"),
                        (("keypoints", short_mp4, "-o", out / "o.bmp"),
                         "must end in .mp4, .mov, .mkv, .webm, .gif, .webp, .png, .jpg or .jpeg"),
                        (("animate", source_png, short_mp4, "-o", folder, "--overwrite"),
                         "is a folder"),
                        (("animate", source_png, short_mp4, "-o", out / "o.mp4", "--batch-size",
                          "0"), "--batch-size must be at least 1"),
                        (("reconstruct", short_mp4, "-o", out / "o.mp4", "--batch-size", "0"),
                         "--batch-size must be at least 1"),
                        (("keypoints", short_mp4, "-o", out / "o.mp4", "--batch-size", "-2"),
                         "--batch-size must be at least 1"),
                        (("evaluate", out, "--batch-size", "0"),
                         "--batch-size must be at least 1"),
                        *((("animate", source_png, short_mp4, "-o", out / "o.mp4", "--fps",
                            fps), "--fps must be between 0.01 and 1000 frames a second")
                          for fps in ("nan", "inf", "0", "1e-300", "5000")),
                        (("predict", source_png, "--predictor", tmp_path / "p.safetensors", "-o",
                          out / "p.mp4", "--fps", "-inf"), "--fps must be between"),
                        (("animate", source_png, short_mp4, "-o", out / "o.mp4", "--size", "1"),
                         "--size must be at least 2"),
                        # (past the encoders' largest side: a cv2 traceback)
                        (("animate", source_png, short_mp4, "-o", out / "o.mp4", "--size",
                          "2147483648"), "--size must be at most 16,383"),
                        (("crop", short_mp4, "-o", out / "clips", "--size", "99999"),
                         "--size must be at most 16,383"),
                        (("animate", source_png, short_mp4, "-o", out / "o.mp4", "--format",
                          "gif"), "takes its format from its suffix (o.mp4)"),
                        (("reconstruct", short_mp4, "-o", out / "o.gif", "--format", "webp"),
                         "takes its format from its suffix (o.gif)"),
                        (("reconstruct", short_mp4.parent, "-o", out / "folder", "--crop",
                          "1,2"), "--crop expects auto, none or x,y,w,h"),
                        (("evaluate", out, "--crop", "1,2"), "--crop expects"),
                        (("evaluate", tmp_path / "nope"), "data folder not found"),
                        (("evaluate", out), "holds no videos, frame strips or frame folders"),
                        (("evaluate", train_only), "has train/ but no test/ folder"),
                        (("evaluate", out, "--fid-weights", tmp_path / "nope.pt"),
                         "FID weights not found")):
        result = run_cli(*args)
        assert_one_line_error(result, error)
    assert not list(out.iterdir()) and folder.is_dir() and not list(folder.iterdir())


def test_help_and_missing_inputs_answer_without_importing_torch(source_png, tmp_path):
    """`--help` and a mistyped path are answered in about a second, not after torch's import."""
    cases = [(("--help",), None), (("animate", "--help"), None), (("-h",), None),
             (("crop", "-h"), None), (("--version",), None),
             (("animate", tmp_path / "nope.png", tmp_path / "d.mp4", "-o", tmp_path / "o.mp4"),
              "source image not found"),
             (("animate", source_png, tmp_path / "nope.mp4", "-o", tmp_path / "o.mp4"),
              "video not found"),
             (("reconstruct", tmp_path / "nope.mp4", "-o", tmp_path / "o.mp4"), "not found"),
             (("keypoints", tmp_path / "nope.mp4", "-o", tmp_path / "o.mp4"), "not found")]
    for args, error in cases:
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "monkeyanim",
                                 *map(str, args)], capture_output=True, text=True, timeout=60)
        imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")]
        assert "monkeyanim.cli" in imported and "torch" not in imported, args
        messages = [line for line in result.stderr.splitlines()
                    if not line.startswith("import time:")]
        if args == ("--version",):
            assert result.returncode == 0
            assert result.stdout == f"monkeyanim {monkeyanim.__version__}\n"
        elif error is None:
            assert result.returncode == 0 and "Usage" in result.stdout and not messages
            # flags are plain: no --no- twin, no <bool> beside them (only --help's, Typer's own)
            assert "--no-" not in result.stdout and result.stdout.count("<bool>") <= 1
        else:
            assert result.returncode == 1 and len(messages) == 1 and error in messages[0], messages


def test_existing_output_and_unwritable_folder(small_model, source_png, short_mp4, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    result = run_cli("animate", source_png, short_mp4, "-o", out, "-c", small_model)
    assert_one_line_error(result, "already exists", "--overwrite")
    assert out.read_bytes() == b"keep me"
    result = run_cli("animate", source_png, short_mp4, "-o", out, "-c", small_model, "--overwrite")
    assert result.returncode == 0 and probe(out)["frames"] == 24
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("animate", source_png, short_mp4, "-o", blocker / "out.mp4", "-c", small_model)
    assert_one_line_error(result, "does not exist")
    if os.geteuid() != 0:  # root may write anywhere, so only a normal user can see this one
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        result = run_cli("animate", source_png, short_mp4, "-o", locked / "o.mp4", "-c", small_model)
        assert_one_line_error(result, "not writable")
    if os.access("/sys", os.W_OK):  # root: the permission bits say yes, sysfs says no
        result = run_cli("animate", source_png, short_mp4, "-o", "/sys/o.mp4", "-c", small_model)
        assert_one_line_error(result, "output folder is not writable: /sys")
    result = run_cli("animate", source_png, short_mp4, "-o", tmp_path / "o.avi", "-c", small_model)
    assert_one_line_error(result, ".mp4, .mov, .mkv, .webm, .gif or .webp")
    result = run_cli("animate", source_png, short_mp4, "-o", tmp_path / "o.mp4", "-c", "nope")
    assert_one_line_error(result, "unknown checkpoint")


def test_an_output_folder_that_cannot_be_made_is_one_line(small_model, short_mp4, tmp_path):
    """-o for a batch names a folder to make: when it cannot be made (a read-only disk, a
    parent the user may not write to) that is one line, not an OSError's traceback."""
    if os.geteuid() == 0:  # root may write anywhere but /proc, which holds no folders of ours
        parent = Path("/proc")
    else:
        parent = tmp_path / "locked"
        parent.mkdir(mode=0o555)
    result = run_cli("reconstruct", short_mp4.parent, "-o", parent / "monkeyanim-out", "-c",
                     small_model)
    assert_one_line_error(result, "cannot make the output folder", "monkeyanim-out")


def test_usage_errors_are_one_line(source_png, short_mp4, tmp_path):
    """What the command line's parser refuses (a missing option, a bad number, a misspelt
    command or option) is one line naming the help to read, exit code 2 as click's."""
    out = tmp_path / "o.mp4"
    for args, error in ((("animate", source_png, short_mp4), "Missing option '--output'"),
                        (("animate", source_png, short_mp4, "-o", out, "--size", "abc"),
                         "'--size'"),
                        (("animat",), "No such command 'animat'"),
                        (("animate", source_png, short_mp4, "-o", out, "--sizes", "3"),
                         "No such option: --sizes")):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert_one_line_error(result, error, "--help'")
    assert not out.exists()


def test_an_audio_file_with_cover_art_is_no_video(tmp_path):
    """A song's mp4 (m4a) shows its cover as a video stream of one picture: no motion to
    take, said as such (it was a one-frame video at 90,000 frames a second)."""
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 90, np.uint8), "rgb24")
        for packet in [*cover.encode(picture), *cover.encode(None)]:
            container.mux(packet)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = 48000, i * 1024
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    with pytest.raises(monkeyanim.InputError, match="holds no video, only a cover picture"):
        open_video(path)
    # as a SOURCE named .m4a (read as an image, not a video) it is no image either
    song = path.rename(tmp_path / "song.m4a")
    with pytest.raises(monkeyanim.InputError, match="holds no image, only the cover picture"):
        read_source(song)


def test_the_moving_stream_is_read_not_a_thumbnail_before_it(tmp_path):
    """A file with a one-frame thumbnail beside its video stream, before or after it and
    flagged as the default or not: the video is read."""
    for thumb_first in (True, False):
        path = tmp_path / f"thumb_{thumb_first}.mkv"
        with av.open(str(path), "w") as container:
            codecs = [("mjpeg", 1), ("libx264", 25)]
            made = [container.add_stream(codec, rate=rate)
                    for codec, rate in (codecs if thumb_first else codecs[::-1])]
            thumb, video = made if thumb_first else made[::-1]
            thumb.width, thumb.height, thumb.pix_fmt = 32, 32, "yuvj420p"
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            thumb.disposition = av.stream.Disposition(0 if thumb_first else 1)  # 1: default
            video.disposition = av.stream.Disposition(0)
            still = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 90, np.uint8), "rgb24")
            for packet in [*thumb.encode(still), *thumb.encode(None)]:
                container.mux(packet)
            for i in range(10):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8),
                                                   "rgb24")
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
        frames = list(open_video(path).frames())
        assert len(frames) == 10 and frames[0].shape == (48, 64, 3), thumb_first


def test_the_longest_file_names_are_written(small_model, source_png, short_mp4, tmp_path):
    """An output name of up to 255 bytes is legal: its temp file (a dot, the name, 8 random
    characters) must not be what fails for being longer."""
    from monkeyanim.videowriter import VideoWriter

    for name in ("a" * 251 + ".mp4", "é" * 125 + "a.mp4"):  # 255 bytes each
        assert len(name.encode()) == 255
        result = run_cli("animate", source_png, short_mp4, "-o", tmp_path / name, "-c",
                         small_model)
        assert result.returncode == 0, result.stderr
        assert probe(tmp_path / name)["frames"] == 24
    odd = tmp_path / os.fsdecode(b"\xff\xfe" + b"b" * 249 + b".mp4")  # not UTF-8: a name too
    with VideoWriter(odd, 25) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
    assert probe(odd)["frames"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_output_that_is_a_link_is_written_through_it(small_model, source_png, short_mp4,
                                                        tmp_path):
    """-o naming a symbolic link writes the file it points to, as any program writing through
    a link does, and leaves the link a link; a link to nothing is an existing output too."""
    real, link = tmp_path / "real.mp4", tmp_path / "link.mp4"
    real.write_bytes(b"old")
    link.symlink_to(real)
    result = run_cli("animate", source_png, short_mp4, "-o", link, "-c", small_model)
    assert_one_line_error(result, "already exists", "--overwrite")
    result = run_cli("animate", source_png, short_mp4, "-o", link, "-c", small_model,
                     "--overwrite")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and probe(real)["frames"] == 24
    ghost, missing = tmp_path / "ghost.mp4", tmp_path / "missing.mp4"
    ghost.symlink_to(missing)
    result = run_cli("animate", source_png, short_mp4, "-o", ghost, "-c", small_model)
    assert_one_line_error(result, "already exists, as a link to", "--overwrite")
    assert not missing.exists()
    result = run_cli("animate", source_png, short_mp4, "-o", ghost, "-c", small_model,
                     "--overwrite")
    assert result.returncode == 0, result.stderr
    assert ghost.is_symlink() and probe(missing)["frames"] == 24
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_still_image_driving(small_model, source_png, short_mp4, tmp_path):
    """One still frame moves nothing in relative mode: refused, with a hint when the source is
    a video (the two arguments swapped); in absolute mode it poses the source (one frame). A
    video of one frame is refused the same way."""
    out = tmp_path / "out.mp4"
    swapped = run_cli("animate", short_mp4, source_png, "-o", out, "-c", small_model)
    assert_one_line_error(swapped, "still image", "arguments look swapped")
    still = run_cli("animate", source_png, source_png, "-o", out, "-c", small_model)
    assert_one_line_error(still, "still image", "--mode absolute")
    assert not out.exists()
    posed = run_cli("animate", source_png, source_png, "-o", out, "-c", small_model,
                    "--mode", "absolute")
    assert posed.returncode == 0, posed.stderr
    assert probe(out)["frames"] == 1
    # so does a video of one frame (a gif thumbnail), in relative mode
    one_frame = write_video(tmp_path / "one.gif", [cv2.imread(str(source_png))[..., ::-1]])
    single = run_cli("animate", source_png, one_frame, "-o", tmp_path / "one.mp4", "-c",
                     small_model)
    assert_one_line_error(single, "one.gif has a single frame", "--mode absolute")


def test_output_that_is_an_input_is_refused(small_model, source_png, short_mp4, tmp_path):
    """--overwrite replaces outputs, never what is being read: an output that is an input
    (by its own name, through a link, or a batch written into its own folder), or a --json
    naming the output, is refused before anything runs, and the input is left byte for byte."""
    driving = tmp_path / "drive.mp4"
    driving.write_bytes(short_mp4.read_bytes())
    link = tmp_path / "link.mp4"
    link.symlink_to(driving)
    source = tmp_path / "portrait.png"
    source.write_bytes(source_png.read_bytes())
    before = {p: p.read_bytes() for p in (driving, source)}
    common = ("-c", small_model, "--overwrite")
    for args in (("animate", source, driving, "-o", driving),
                 ("animate", source, driving, "-o", link),
                 ("animate", source, driving, "-o", source),
                 ("keypoints", driving, "-o", driving), ("keypoints", source, "-o", source),
                 ("reconstruct", driving, "-o", link)):
        result = run_cli(*args, *common)
        assert_one_line_error(result, "is the input", "name another file")
    result = run_cli("reconstruct", tmp_path, "-o", tmp_path, *common)
    assert_one_line_error(result, "is the folder of the inputs", "name another folder")
    same = tmp_path / "out.mp4"  # --json and -o naming one file: one would clobber the other
    for command, source_file in (("keypoints", driving), ("reconstruct", driving)):
        result = run_cli(command, source_file, "-o", same, "--json", same, *common)
        assert_one_line_error(result, "--json", "names an output file itself")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive.mp4", "link.mp4", "portrait.png"]


def test_a_write_that_fails_is_one_line_and_keeps_the_old_output(small_model, source_png,
                                                                  short_mp4, tmp_path):
    """A disk that fills up (here a file-size limit, which fails writes as a full disk does)
    stops the command in one line naming the output; the old file stays, no temp is left."""
    for name in ("out.mp4", "out.gif", "keypoints.png"):
        (tmp_path / name).write_bytes(b"old")
    for args in (("animate", source_png, short_mp4, "--size", "512", "-o", tmp_path / "out.mp4"),
                 ("animate", source_png, short_mp4, "-o", tmp_path / "out.gif"),
                 ("keypoints", source_png, "-o", tmp_path / "keypoints.png")):
        result = run_cli(*args, "-c", small_model, "--overwrite", max_file_bytes=2000)
        assert_one_line_error(result, f"cannot write {args[-1]}", "File too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keypoints.png", "out.gif", "out.mp4"]
    assert all(p.read_bytes() == b"old" for p in tmp_path.iterdir())


def test_running_out_of_memory_is_one_line_and_keeps_the_old_output(small_model, source_png,
                                                                     short_mp4, tmp_path):
    """A real failed allocation: the process may map 3 GiB, and frames resized to 16,000 px
    take 768 MB each. One line saying what to lower; the old output stays, no temp is left;
    in a batch the pair is reported as failed."""
    (tmp_path / "out.mp4").write_bytes(b"old")
    result = run_cli("animate", source_png, short_mp4, "-c", small_model, "--size", "16000",
                     "-o", tmp_path / "out.mp4", "--overwrite", max_memory_bytes=3 * 2 ** 30)
    assert_one_line_error(result, "out of memory (an allocation of",
                          "try a smaller --batch-size or --size")
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "face.png").write_bytes(source_png.read_bytes())
    (tmp_path / "driving").mkdir()
    (tmp_path / "driving" / "clip.mp4").write_bytes(short_mp4.read_bytes())
    result = run_cli("animate", tmp_path / "sources", tmp_path / "driving", "-c", small_model,
                     "--size", "16000", "-o", tmp_path / "batch", max_memory_bytes=3 * 2 ** 30)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "failed: face.png + clip.mp4: out of memory" in result.stderr, result.stderr
    assert "0 of 1 succeeded" in result.stdout
    # the folder the batch made, left empty, went again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driving", "out.mp4", "sources"]
    assert (tmp_path / "out.mp4").read_bytes() == b"old"


def test_failed_allocations_are_told_apart_from_other_errors():
    """PyTorch's, NumPy's and OpenCV's own errors for a failed allocation (raised for real),
    and the wording of PyTorch's CUDA one, become OutOfMemory; other errors do not."""
    from monkeyanim.errors import out_of_memory

    def raised(allocate) -> BaseException:
        with pytest.raises(Exception) as caught:
            allocate()
        return caught.value

    tera = 2 ** 40
    assert str(out_of_memory(raised(lambda: torch.empty(tera, dtype=torch.uint8)))) == \
        "out of memory (an allocation of 1024.0 GiB failed)"
    assert str(out_of_memory(raised(lambda: np.empty(tera, np.uint8)))) == "out of memory"
    assert "1024.0 GiB" in str(out_of_memory(raised(
        lambda: cv2.resize(np.zeros((2, 2), np.uint8), (2 ** 20, 2 ** 20)))))
    cuda = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has "
                                  "a total capacity of 139.81 GiB of which 1.2 GiB is free.")
    assert str(out_of_memory(cuda)) == "out of GPU memory (an allocation of 20.00 GiB failed)"
    assert out_of_memory(ValueError("bad frame")) is None
    assert out_of_memory(RuntimeError("shape mismatch")) is None


@pytest.mark.parametrize("signum, exit_code, said", [(signal.SIGINT, 130, "interrupted"),
                                                     (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_or_kill_leaves_nothing(small_model, source_png, face_frames, tmp_path, signum,
                                       exit_code, said):
    long_video = write_video(tmp_path / "long.mp4", face_frames * 20)  # 800 frames
    out = tmp_path / "out.mp4"
    out_existing = tmp_path / "kept.mp4"
    out_existing.write_bytes(b"old")
    for target, flags in ((out, []), (out_existing, ["--overwrite"])):
        process = subprocess.Popen(
            [sys.executable, "-m", "monkeyanim", "animate", str(source_png), str(long_video),
             "-o", str(target), "-c", str(small_model), "--batch-size", "2", *flags],
            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=sigint_default)
        deadline = time.time() + 60
        while not list(tmp_path.glob(f".{target.name}.*")) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == exit_code, stderr
        assert "Traceback" not in stderr and said in stderr
        assert not list(tmp_path.glob(f".{target.name}.*"))
    assert not out.exists()
    assert out_existing.read_bytes() == b"old"


def test_batch_folders(small_model, face_frames, short_mp4, tmp_path):
    sources, drivings, out = tmp_path / "sources", tmp_path / "drivings", tmp_path / "results"
    sources.mkdir(), drivings.mkdir()
    for i in (0, 20):
        cv2.imwrite(str(sources / f"face{i}.png"), face_frames[i][..., ::-1])
    (drivings / "talk.mp4").write_bytes(short_mp4.read_bytes())
    (drivings / "broken.mp4").write_bytes(b"garbage" * 100)
    write_video(drivings / "camcorder.mts", face_frames[:6], codec="libx264")  # AVCHD's MPEG-TS
    result = run_cli("animate", sources, drivings, "-o", out, "-c", small_model)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "4 of 6 succeeded" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["face0__camcorder.mp4", "face0__talk.mp4",
                                                     "face20__camcorder.mp4", "face20__talk.mp4"]
    assert result.stderr.count("failed:") == 2
    # --format: every output of the batch a gif, as long as its mp4
    result = run_cli("animate", sources, drivings, "-o", tmp_path / "gifs", "-c", small_model,
                     "--format", "gif")
    assert "4 of 6 succeeded" in result.stdout
    gifs = sorted((tmp_path / "gifs").glob("*talk*"))
    assert [p.name for p in gifs] == ["face0__talk.gif", "face20__talk.gif"]
    assert probe(gifs[0])["codec"] == "gif"
    assert probe(gifs[0])["frames"] == probe(out / "face0__talk.mp4")["frames"]
    # -o naming a file (a likely slip with folders of inputs) is refused, nothing made
    result = run_cli("animate", sources, drivings, "-o", tmp_path / "result.mp4", "-c", small_model)
    assert_one_line_error(result, "result.mp4 looks like a file")
    assert not (tmp_path / "result.mp4").exists()
    # a bad option is refused once, before any pair is tried
    result = run_cli("animate", sources, drivings, "-o", tmp_path / "other", "-c", small_model,
                     "--mode", "sideways")
    assert_one_line_error(result, "unknown mode 'sideways'; choose relative or absolute")
    result = run_cli("animate", sources, drivings, "-o", tmp_path / "other", "-c", small_model,
                     "--format", "avi")
    assert_one_line_error(result, "--format must be one of mp4, mov, mkv, webm, gif, webp, not 'avi'")
    for command in (("animate", sources), ("reconstruct",)):
        result = run_cli(*command, drivings, "-o", tmp_path / "other", "-c", small_model,
                         "--precision", "fp8")
        assert_one_line_error(result, "unknown precision 'fp8'")
    # a batch that fails before writing anything leaves no folder it made behind...
    for command in (("animate", sources, drivings), ("reconstruct", drivings),
                    ("keypoints", drivings)):
        result = run_cli(*command, "-o", tmp_path / "other", "-c", "nope")
        assert_one_line_error(result, "unknown checkpoint 'nope'")
    assert not (tmp_path / "other").exists()
    # ... and keeps one that was there, empty or not
    (tmp_path / "other").mkdir()
    result = run_cli("animate", sources, drivings, "-o", tmp_path / "other", "-c", "nope")
    assert result.returncode == 1 and (tmp_path / "other").is_dir()


def test_frame_batches_stream(face_video):
    reader = open_video(face_video)
    sizes = [len(frames) for frames, _ in frame_batches(reader, (64, 64), 16)]
    assert sizes == [16] * 7 + [13]


def test_paste_back_blends_inside_the_box_only(face_frames):
    from monkeyanim.jobs import PasteBack

    image = cv2.resize(face_frames[0], (640, 480))  # (480, 640, 3) uint8, a photo
    box = (200, 100, 240, 240)
    paste = PasteBack(image, box)
    edge = int(PasteBack.FEATHER * 240)
    square = np.zeros((240, 240), np.float32)
    square[edge:-edge, edge:-edge] = 1  # the feathered mask, blurred as a whole
    assert np.abs(paste.mask[..., 0] - cv2.GaussianBlur(square, (0, 0), edge / 2)).max() < 1e-5
    out = paste(face_frames[10][:64, :64])
    assert out.shape == image.shape and out.dtype == np.uint8
    outside = np.ones(image.shape[:2], bool)
    outside[100:340, 200:440] = False
    assert np.array_equal(out[outside], image[outside])  # untouched, to the bit
    patch = cv2.resize(face_frames[10][:64, :64], (240, 240), interpolation=cv2.INTER_CUBIC)
    inner = 3 * edge  # 4 sigmas of the fade inside the mask's edge: the crop alone
    centre = (slice(100 + inner, 340 - inner), slice(200 + inner, 440 - inner))
    assert np.abs(out[centre].astype(int) - patch[inner:-inner, inner:-inner]).max() <= 1


def test_the_encoder_queue_holds_few_frames_when_they_are_large(tmp_path):
    from monkeyanim.video import QUEUE_FRAMES
    from monkeyanim.videowriter import QUEUE_BYTES, VideoWriter

    frames = np.full((3, 3000, 3000, 3), 90, np.uint8)  # 27 MB each: a pasted-back photo
    with VideoWriter(tmp_path / "big.mp4", 25) as writer:
        for frame in frames:
            writer.write(frame)
        assert writer._queue.maxsize == QUEUE_BYTES // frames[0].nbytes < QUEUE_FRAMES
    info = probe(tmp_path / "big.mp4")
    assert (info["frames"], info["height"], info["width"]) == (3, 3000, 3000)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_outputs_say_how_their_colours_were_encoded(tmp_path, suffix):
    """Frames are turned into YUV with the BT.601 matrix; the stream says so (and that the
    pixels are sRGB), so a player does not guess BT.709, as it does for untagged HD video,
    and shift a red of (200, 40, 40) to about (212, 54, 36)."""
    from monkeyanim.videowriter import VideoWriter

    red = np.full((720, 1280, 3), (200, 40, 40), np.uint8)
    with VideoWriter(tmp_path / f"red{suffix}", 25) as writer:
        writer.write(red)
    with av.open(str(tmp_path / f"red{suffix}")) as container:
        context = container.streams.video[0].codec_context
        tags = (context.colorspace, context.color_primaries, context.color_trc,
                context.color_range)
        frame = next(container.decode(video=0))
    assert tags == (6, 1, 13, 1)  # smpte170m (BT.601), bt709 primaries, sRGB curve, limited
    as_tagged = frame.reformat(format="rgb24", src_colorspace=tags[0]).to_ndarray()
    assert np.abs(as_tagged[360, 640].astype(int) - (200, 40, 40)).max() <= 3


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_frames_too_large_for_ffmpeg_are_one_error(tmp_path, suffix):
    """FFmpeg refuses frames over about 268 M pixels (padding included; e.g. --size 20000 or a
    pasted-back 200 MP photo): an OutputError naming the size, nothing left on disk. A
    2 x 2,100,000 frame crosses that bound in 12 MB."""
    from monkeyanim.videowriter import VideoWriter

    with pytest.raises(monkeyanim.OutputError, match="cannot encode 2100000x2 frames .* large"):
        with VideoWriter(tmp_path / f"wide{suffix}", 25) as writer:
            writer.write(np.zeros((2, 2_100_000, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".mp4", ".webp"])
def test_frames_wider_than_the_encoder_takes_are_one_error(tmp_path, suffix):
    """x264 and libwebp refuse frames wider than about 16,384 px (a pasted-back panorama),
    one when it opens, the other at the first frame."""
    from monkeyanim.videowriter import VideoWriter

    with pytest.raises(monkeyanim.OutputError,
                       match=r"cannot encode 16400x2 frames .* \(at most 16,383 px a side\)"):
        with VideoWriter(tmp_path / f"wide{suffix}", 25) as writer:
            writer.write(np.zeros((2, 16_400, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_bf16_close_to_fp32(small_model, face_frames):
    """bf16 autocast on CPU: mean abs difference to fp32 at most 0.02, max 0.25 (pixels in
    [0, 1]); bf16 keeps 8 bits of mantissa, so a few pixels move visibly, most do not."""
    model = monkeyanim.load_model(small_model)
    frames = to_tensor([fit_frame(f, (64, 64)) for f in face_frames[:8]])
    fp32 = Animator(model, frames[0])(frames)
    bf16 = Animator(model, frames[0], precision="bf16")(frames).float()
    diff = (fp32 - bf16).abs()
    assert diff.mean().item() <= 0.02 and diff.max().item() <= 0.25


def test_crop_box(small_model, source_png, short_mp4, tmp_path):
    out = tmp_path / "crop.mp4"
    result = run_cli("animate", source_png, short_mp4, "-o", out, "-c", small_model,
                     "--crop", "100,50,300,300")
    assert result.returncode == 0, result.stderr
    assert probe(out)["frames"] == 24
    result = run_cli("animate", source_png, short_mp4, "-o", out, "-c", small_model,
                     "--crop", "400,400,300,300", "--overwrite")
    assert_one_line_error(result, "outside the source portrait.png (512x512)")
    result = run_cli("animate", source_png, short_mp4, "-o", out, "-c", small_model, "--crop", "1,2")
    assert_one_line_error(result, "x,y,w,h")
    frame = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    assert np.array_equal(fit_frame(frame, (10, 20), (5, 4, 20, 10)), frame[4:14, 5:25])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precision_close_to_fp32(precision, small_model, face_frames):
    """On CUDA: mean abs difference to fp32 at most 0.02, max 0.25 (pixels in [0, 1])."""
    model = monkeyanim.load_model(small_model, device="cuda")
    frames = to_tensor([fit_frame(f, (64, 64)) for f in face_frames[:8]], "cuda")
    fp32 = Animator(model, frames[0])(frames)
    half = Animator(model, frames[0], precision=precision)(frames).float()
    diff = (fp32 - half).abs()
    assert diff.mean().item() <= 0.02 and diff.max().item() <= 0.25


def test_transfer_mode_defaults_to_the_checkpoints(small_model, source_png, short_mp4, tmp_path):
    """A checkpoint whose metadata says default_mode 'absolute' (MGif, as in the paper) is
    animated in absolute mode unless --mode says otherwise."""
    from monkeyanim.jobs import AnimateSettings, animate_file

    model = monkeyanim.load_model(small_model)
    model.provenance["default_mode"] = "absolute"
    decoded = {}
    for name, mode in (("default", None), ("absolute", "absolute"), ("relative", "relative")):
        out = tmp_path / f"{name}.mp4"
        animate_file(model, source_png, short_mp4, out, AnimateSettings(mode=mode))
        decoded[name] = np.stack(list(open_video(out).frames())).astype(int)
    assert np.array_equal(decoded["default"], decoded["absolute"])
    assert np.abs(decoded["default"] - decoded["relative"]).mean() > 0.3  # 0 if the same


def test_whole_files_from_python_with_plain_strings(small_model, source_png, short_mp4,
                                                    tmp_path):
    """The CLI's three jobs are one call each from Python, paths given as str or Path."""
    import json

    model = monkeyanim.load_model(small_model)
    out, drawn, tracks = (str(tmp_path / name) for name in ("a.webm", "kp.mp4", "kp.json"))
    result = monkeyanim.animate_file(model, str(source_png), str(short_mp4), out,
                                     monkeyanim.AnimateSettings(side_by_side=True))
    assert result.frames == 24 and result.output == Path(out)
    info = probe(Path(out))
    assert (info["frames"], info["width"], info["codec"]) == (24, 3 * 64, "vp9")
    scores = monkeyanim.reconstruct_file(model, str(short_mp4), None).extra
    assert 0 < scores["l1"] < 1 and scores["static_l1"] > 0
    monkeyanim.keypoints_file(model, str(short_mp4), drawn, tracks)
    assert probe(Path(drawn))["frames"] == 24
    assert len(json.loads(Path(tracks).read_text())["frames"]) == 24


def test_progress_bar_on_a_terminal_and_one_line_without(small_model, source_png, short_mp4,
                                                        tmp_path):
    out = tmp_path / "o.mp4"
    code, shown, stdout = run_cli_on_terminal("animate", source_png, short_mp4, "-o", out,
                                              "-c", small_model, tmp_path=tmp_path)
    assert code == 0, shown
    assert "o.mp4" in shown and "━" in shown and "24/24" in shown  # every frame counted
    assert stdout.startswith(f"wrote {out} (24 frames")
    result = run_cli("animate", source_png, short_mp4, "-o", tmp_path / "p.mp4",
                     "-c", small_model)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"wrote {tmp_path / 'p.mp4'} (24 frames")


def test_phone_rotations_are_applied(face_frames, tmp_path):
    """Phones store portrait videos and photos sideways with a rotation to apply on display:
    an mp4 display matrix, a JPEG's EXIF orientation. Frames come out as shown."""
    import av
    from PIL import Image, ImageOps

    from monkeyanim.video import read_source

    landscape = cv2.resize(face_frames[0], (128, 96))  # (96, 128, 3), wider than tall
    with av.open(str(tmp_path / "portrait.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv444p"
        stream.set_display_rotation(90)  # counter-clockwise, as a phone held upright records
        for frame in [landscape] * 3:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    frames = list(open_video(tmp_path / "portrait.mp4").frames())
    assert len(frames) == 3 and frames[0].shape == (128, 96, 3)
    assert np.abs(frames[0].astype(int) - np.rot90(landscape)).mean() < 2

    photo = Image.fromarray(landscape)
    exif = photo.getexif()
    exif[0x0112] = 6  # EXIF orientation 6: turn 90 degrees clockwise to show
    photo.save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "photo.jpg")).convert("RGB"))
    assert shown.shape == (128, 96, 3)
    # (the two JPEG decoders differ a little in chroma upsampling)
    assert np.abs(read_source(tmp_path / "photo.jpg").astype(int) - shown).mean() < 2
