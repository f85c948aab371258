"""How fast ``video:FOLDER`` turns video files into samples, in one process.

    python benchmarks/video_decode.py                              # 16 clips, 320×240, 3 s
    python benchmarks/video_decode.py --clips 32 --width 640 --height 360 --seconds 10

It writes ``--clips`` H.264 mp4 files of moving noise at 30 fps with PyAV (a GOP of 30
frames, as cameras and encoders often use), then times building the data set (every file's
header and first frame are read) and reading every sample of it twice: centred (evaluation)
and from random starts (pretraining, which seeks in clips longer than ``SEEK_FROM`` frames).
The sampling is the default, 16 frames at stride 4 resized to 64 px; a loader with N workers
reads about N times the samples per second, CPU cores allowing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_clips(root: Path, clips: int, width: int, height: int, seconds: float) -> None:
    import av

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width * 2, 3), dtype=np.uint8)
    for i in range(clips):
        with av.open(str(root / f"c{i:03d}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=30, options={"preset": "veryfast"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.gop_size = 30
            for t in range(round(seconds * 30)):
                shift = (4 * t + 7 * i) % width  # a noise texture panning right
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(base[:, shift : shift + width]), format="rgb24"
                )
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from selfsup.data.video import load_video

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_clips(root, args.clips, args.width, args.height, args.seconds)
        started = time.perf_counter()
        centred = load_video(f"video:{root}", "train")
        build = time.perf_counter() - started
        print(
            f"{len(centred)} train clips of {args.width}×{args.height}, {args.seconds:g} s at "
            f"30 fps; built (headers + first frames) in {build:.2f} s"
        )
        random = load_video(f"video:{root}", "train", random_start=True)
        torch.manual_seed(0)
        for name, data in (("centred", centred), ("random starts", random)):
            started = time.perf_counter()
            shape = None
            for i in range(len(data)):
                shape = tuple(data[i]["video"].shape)
            seconds = time.perf_counter() - started
            print(
                f"{name}: {len(data) / seconds:.1f} samples/s ({1000 * seconds / len(data):.0f} "
                f"ms each), samples {shape} uint8"
            )


if __name__ == "__main__":
    main()
