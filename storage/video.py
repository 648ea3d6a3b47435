"""Episode video in and out with PyAV (FFmpeg), streamed: one frame at a time, so memory
does not depend on the episode's length.

Reading (`probe_video`, `VideoReader`): frames come with their real presentation
timestamps (pts in the video stream's time base), so a variable frame rate survives. A
packet the decoder rejects, or a file that ends before the duration its header promises,
skips those frames: the reader records each such stretch as a `SkippedRange` (time range
and frame count) and carries on with the next readable frame.

Writing (`EpisodeWriter`): H.264 (libx264) or the best encoder the wheel's FFmpeg has
(`choose_encoder`), a configurable CRF, each frame at the pts it was read with; the
source's audio streams are copied packet for packet (not re-encoded) and interleaved with
the video as it is written. Subtitle, data and attachment streams are not carried over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .sources import SourceError

log = logging.getLogger(__name__)

# Preferred encoders, best first: H.264 where the wheel has it, then HEVC, then MPEG-4 part 2.
ENCODER_PREFERENCE = ("libx264", "libopenh264", "libx265", "mpeg4")
# Options per encoder family: CRF for x264/x265, a quantizer for the others.
_CRF_ENCODERS = {"libx264", "libx265"}


class VideoError(SourceError):
    """The video as a whole cannot be read or written (message names the file)."""


@dataclass
class VideoInfo:
    fps: float  # nominal frame rate (FFmpeg's guess for VFR sources)
    frame_count: int  # frames the header promises (0 when unknown)
    width: int
    height: int
    time_base: Fraction  # of the video stream: pts * time_base = seconds
    start_pts: int
    duration: float | None  # seconds the header promises for the video stream
    codec: str
    audio: list[str] = field(default_factory=list)  # "aac 48000 Hz 2 ch" per audio stream
    dropped: list[str] = field(default_factory=list)  # other streams: "subtitle (mov_text)"

    @property
    def frame_step(self) -> int:
        """One nominal frame period in pts units (at least 1)."""
        return max(1, round(1 / (self.fps * self.time_base)))


@dataclass
class VideoFrame:
    index: int  # position among kept frames (reading order of the episode)
    frame_number: int  # position among decoded frames of the source
    pts: int  # presentation timestamp in VideoInfo.time_base
    timestamp: float  # seconds
    image: np.ndarray  # RGB uint8


@dataclass
class SkippedRange:
    """Frames that could not be read: from `start` (seconds, the first missing frame)
    to `end` (the next readable frame, or the promised end of the video)."""

    start_pts: int
    end_pts: int
    start: float
    end: float
    frames: int
    reason: str

    def message(self, path: str | Path) -> str:
        return (f"{path}: {self.frames} frame(s) from {self.start:.3f} s to {self.end:.3f} s unreadable "
                f"({self.reason}); skipped, the output repeats the last good frame there")


def _open(path: str | Path):
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path}: cannot open video (unsupported or broken file: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _stream_info(container, path: str | Path) -> VideoInfo:
    if not container.streams.video:
        raise VideoError(f"{path}: no video stream")
    stream = container.streams.video[0]
    rate = stream.guessed_rate or stream.average_rate or stream.base_rate
    fps = float(rate) if rate else 24.0
    tb = stream.time_base or Fraction(1, 90000)
    duration = float(stream.duration * tb) if stream.duration else (
        container.duration / av.time_base if container.duration else None)
    audio = [f"{s.codec_context.name} {s.codec_context.sample_rate} Hz {s.codec_context.channels} ch"
             for s in container.streams.audio]
    dropped = [f"{s.type} ({s.codec_context.name if s.codec_context else '?'})" for s in container.streams
               if s.type not in ("video", "audio")] + [f"video ({s.codec_context.name})"
                                                      for s in container.streams.video[1:]]
    return VideoInfo(fps if fps > 0 else 24.0, int(stream.frames or 0), stream.codec_context.width,
                     stream.codec_context.height, tb, int(stream.start_time or 0), duration,
                     stream.codec_context.name, audio, dropped)


def probe_video(path: str | Path) -> VideoInfo:
    """Stream facts of the first video stream; raises VideoError when no frame decodes."""
    container = _open(path)
    try:
        info = _stream_info(container, path)
        try:
            next(container.decode(video=0))
        except (StopIteration, av.error.FFmpegError):
            raise VideoError(f"{path}: video has no decodable frames") from None
        return info
    finally:
        container.close()


class VideoReader:
    """Kept frames of a video in order (every `stride`-th decoded frame, at most
    `max_frames`), as RGB with their pts. After iterating, `skipped` lists the stretches
    that could not be read."""

    def __init__(self, path: str | Path, stride: int = 1, max_frames: int | None = None):
        self.path = Path(path)
        self.stride = stride
        self.max_frames = max_frames
        self.info = probe_video(path)
        self.skipped: list[SkippedRange] = []

    def __iter__(self) -> Iterator[VideoFrame]:
        info, step = self.info, self.info.frame_step
        container = _open(self.path)
        decoded = kept = 0
        errors, error_text = 0, ""
        next_pts = info.start_pts  # where the next frame is expected
        try:
            for frame, failure in self._frames(container):
                if failure is not None:
                    errors, error_text = errors + 1, error_text or failure
                    continue
                pts = frame.pts if frame.pts is not None else next_pts
                if errors and pts > next_pts:
                    self._skip(next_pts, pts, f"{errors} bad packet(s): {error_text}")
                errors, error_text = 0, ""
                if decoded % self.stride == 0:
                    image = frame.to_ndarray(format="rgb24")
                    yield VideoFrame(kept, decoded, int(pts), float(pts * info.time_base), image)
                    kept += 1
                decoded += 1
                next_pts = pts + step
                if self.max_frames is not None and kept >= self.max_frames:
                    return
            self._check_end(next_pts, errors, error_text)
        finally:
            container.close()

    def _frames(self, container) -> Iterator[tuple[av.VideoFrame | None, str | None]]:
        """Decoded frames, or (None, error) for a packet the decoder or demuxer rejects."""
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:  # the container itself breaks off here
                yield None, _first_line(exc)
                return
            try:
                for frame in packet.decode():
                    yield frame, None
            except av.error.FFmpegError as exc:
                yield None, _first_line(exc)

    def _check_end(self, next_pts: int, errors: int, error_text: str) -> None:
        """A file that stops before the duration its header promises lost its tail."""
        info = self.info
        if info.duration is None:
            return
        end_pts = info.start_pts + round(info.duration / info.time_base)
        if end_pts - next_pts >= info.frame_step // 2 + 1:
            reason = f"{errors} bad packet(s): {error_text}" if errors else "file ends early (truncated)"
            self._skip(next_pts, end_pts, reason)

    def _skip(self, start_pts: int, end_pts: int, reason: str) -> None:
        info = self.info
        frames = max(1, round((end_pts - start_pts) / info.frame_step))
        skipped = SkippedRange(start_pts, end_pts, float(start_pts * info.time_base), float(end_pts * info.time_base),
                               frames, reason)
        self.skipped.append(skipped)
        log.warning(skipped.message(self.path))


def iter_video(path: str | Path, stride: int = 1, max_frames: int | None = None) -> Iterator[VideoFrame]:
    """Kept frames of a video (see VideoReader; use the class to see what was skipped)."""
    return iter(VideoReader(path, stride, max_frames))


# --- writing ---------------------------------------------------------------------------------

def choose_encoder(wanted: str = "auto") -> str:
    """`wanted` if this FFmpeg has it as an encoder, else (for "auto") the first of
    ENCODER_PREFERENCE it has."""
    names = ENCODER_PREFERENCE if wanted == "auto" else (wanted,)
    for name in names:
        try:
            av.Codec(name, "w")
        except (av.error.FFmpegError, ValueError):
            continue
        return name
    raise VideoError(f"no video encoder {wanted!r} in this FFmpeg (av {av.__version__}); "
                     f"set export.video_codec to one of: {', '.join(ENCODER_PREFERENCE)}")


class EpisodeWriter:
    """Write frames (RGB, at their pts) to an MP4, copying the audio of `audio_source`.

    Audio packets are muxed as the video reaches their time, so nothing is buffered
    beyond one packet; audio past the last video frame is cut (the video ends there)."""

    def __init__(self, target: str | Path, width: int, height: int, time_base: Fraction, fps: float,
                 codec: str = "auto", crf: int = 18, preset: str = "medium", audio_source: str | Path | None = None):
        self.target = Path(target)
        self.codec = choose_encoder(codec)
        self.notes: list[str] = []
        # yuv420p needs even sides: odd ones are padded by one replicated row/column.
        self.size = (width + width % 2, height + height % 2)
        if self.size != (width, height):
            self.notes.append(f"frame size {width}x{height} padded to {self.size[0]}x{self.size[1]} (4:2:0 needs even sides)")
        self.container = av.open(str(self.target), "w", format="mp4")
        options = {"crf": str(crf), "preset": preset} if self.codec in _CRF_ENCODERS else {"qscale": str(max(1, crf // 6))}
        stream = self.container.add_stream(self.codec, rate=Fraction(fps).limit_denominator(100000), options=options)
        stream.width, stream.height, stream.pix_fmt = *self.size, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        self.video = stream
        self.time_base = time_base
        self.last_seconds = 0.0
        self._audio_in = None
        self._audio_packets: Iterator | None = None
        self._pending = None
        self.audio_streams: list[str] = []
        if audio_source is not None:
            self._open_audio(Path(audio_source))

    def _open_audio(self, source: Path) -> None:
        container = _open(source)
        streams = list(container.streams.audio)
        if not streams:
            container.close()
            return
        pairs = {}
        for stream in streams:
            name = stream.codec_context.name
            if name not in self.container.supported_codecs:
                self.notes.append(f"audio stream {stream.index} ({name}) cannot be stored in MP4; dropped")
                continue
            pairs[stream.index] = self.container.add_stream_from_template(stream)
            self.audio_streams.append(f"{name} (copied)")
        if not pairs:
            container.close()
            return
        self._audio_in, self._audio_out = container, pairs
        self._audio_packets = container.demux([s for s in streams if s.index in pairs])

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Copy audio packets whose time is before `seconds` (None: all that are left)."""
        if self._audio_packets is None:
            return
        while True:
            packet = self._pending
            if packet is None:
                try:
                    packet = next(self._audio_packets)
                except (StopIteration, av.error.FFmpegError):
                    self._audio_packets = None
                    return
            if packet.dts is None:  # demuxer flush packet
                self._pending = None
                continue
            time = float(packet.dts * packet.time_base)
            if seconds is not None and time > seconds:
                self._pending = packet
                return
            self._pending = None
            packet.stream = self._audio_out[packet.stream.index]
            self.container.mux(packet)

    def write(self, rgb: np.ndarray, pts: int) -> None:
        if rgb.shape[1] != self.size[0] or rgb.shape[0] != self.size[1]:
            rgb = np.pad(rgb, ((0, self.size[1] - rgb.shape[0]), (0, self.size[0] - rgb.shape[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = int(pts), self.time_base
        self.last_seconds = float(pts * self.time_base)
        self._mux_audio_until(self.last_seconds)
        for packet in self.video.encode(frame):
            self.container.mux(packet)

    def close(self, end_seconds: float | None = None) -> None:
        """Flush the encoder; audio is copied up to `end_seconds` (default: the last
        frame's time plus one frame)."""
        for packet in self.video.encode():
            self.container.mux(packet)
        if end_seconds is None:
            end_seconds = self.last_seconds + 1 / float(self.video.average_rate or 24)
        self._mux_audio_until(end_seconds)
        self.container.close()
        if self._audio_in is not None:
            self._audio_in.close()
