"""Writing media with PyAV: MP4 (H.264 or MPEG-4 part 2 video, AAC audio) and WAV bytes.

Used by the demo corpus (:mod:`vatt.data.synth`), by ``vatt data prepare`` when it cuts long
videos into clips, and by tests that need files with known content.
"""

from __future__ import annotations

import io
import wave
from fractions import Fraction

import numpy as np

SAMPLE_RATE = 16000


def encode_mp4(frames: np.ndarray | None, fps: float, audio: np.ndarray | None, rate: int = SAMPLE_RATE,
               codec: str = "libx264", audio_codec: str = "aac", pix_fmt: str = "yuv420p",
               container: str = "mp4", times: "list[float] | None" = None, gop: int | None = None,
               fast_decode: bool = False, crf: int = 20) -> bytes:
    """Encode media into file bytes with PyAV.

    Args:
        frames: uint8 ``[N, H, W, 3]`` RGB at ``fps`` frames/s, or None for no video track.
        audio: float32 ``[N]`` (mono) or ``[C, N]`` in [-1, 1] at ``rate`` Hz, or None.
        codec: ``libx264`` (H.264) or ``mpeg4`` (MPEG-4 part 2); ``pix_fmt`` ``yuv444p`` allows odd sizes.
        times: presentation time of each frame in seconds (variable frame rate); default ``i / fps``.
        gop: frames between keyframes; default one second's worth, which keeps seeking to a
            random window cheap for the loader (FFmpeg must decode from the previous keyframe).
        fast_decode: H.264 with x264's ``tune=fastdecode`` (CAVLC instead of CABAC, no deblocking
            filter, no weighted prediction): ~3x cheaper to decode, ~10-20% larger at the same CRF.
        crf: x264 constant rate factor (quality; lower is better and larger, 23 is x264's default).
    """
    import av

    buf = io.BytesIO()
    if audio is not None:
        audio = np.asarray(audio, np.float32)
        audio = audio[None] if audio.ndim == 1 else audio
        layout = {1: "mono", 2: "stereo", 6: "5.1"}[audio.shape[0]]
    with av.open(buf, "w", format=container) as c:
        vs = a_s = None
        if frames is not None:
            g = str(gop or max(1, round(fps)))
            opts = {"preset": "veryfast", "crf": str(crf), "threads": "1", "g": g} if codec == "libx264" else {"g": g}
            if fast_decode and codec == "libx264":
                opts["tune"] = "fastdecode"
            # With explicit times, a millisecond clock carries the variable frame timing.
            vrate = 1000 if times is not None else Fraction(fps).limit_denominator(1001)
            vs = c.add_stream(codec, rate=vrate, options=opts)
            vs.height, vs.width = frames.shape[1], frames.shape[2]
            vs.pix_fmt = pix_fmt
            vs.codec_context.thread_count = 1
        if audio is not None:
            a_s = c.add_stream(audio_codec, rate=rate, layout=layout)
        if vs is not None:
            for i, img in enumerate(frames):
                fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                fr.pts = i if times is None else int(round(times[i] * 1000))
                c.mux(vs.encode(fr))
            c.mux(vs.encode())
        if a_s is not None:
            step = 1024
            for k in range(0, audio.shape[1], step):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, k : k + step]), format="fltp", layout=layout)
                af.sample_rate, af.pts = rate, k
                c.mux(a_s.encode(af))
            c.mux(a_s.encode())
    return buf.getvalue()


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """16-bit PCM mono WAV bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()
