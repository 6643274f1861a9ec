"""``flamejax track``: argparse options and the command (the CLI module registers them)."""

from __future__ import annotations

import argparse
import sys

from flamejax.track._sequence import TrackConfig

_EXPORTS = ("vhap", "fht", "obj-sequence")


def _exports(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in _EXPORTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown export {unknown[0]!r}; choose from {', '.join(_EXPORTS)}")
    return names


def add_track_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``flamejax track`` on ``parser``."""
    parser.add_argument("source", metavar="VIDEO_OR_FRAME_FOLDER",
                        help="a video file, or a folder of numbered frames (frame_0001.png, ...)")
    parser.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--mode", choices=("landmark", "photometric"), default="landmark",
                        help="landmark: fit the MediaPipe landmarks (photometric tracking is not available yet)")
    parser.add_argument("--fps", type=float, default=None, help="resample the video to N frames per second")
    parser.add_argument("--start", type=float, default=None, metavar="S", help="first second to track")
    parser.add_argument("--end", type=float, default=None, metavar="E", help="second to stop at")
    parser.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=True,
                        help="write OUT/overlay.mp4 (mesh and landmarks over the video)")
    parser.add_argument("--export", type=_exports, default=(), metavar="vhap,fht,obj-sequence",
                        help="extra exports, comma separated")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the checkpoints of an earlier, interrupted run into the same OUT")
    return parser


def run_track_command(args: argparse.Namespace) -> int:
    """Run ``flamejax track``; returns the exit status (one-line messages on stderr for bad input)."""
    from flamejax.perception import PerceptionError
    from flamejax.track._sequence import NoUsableFramesError
    from flamejax.track._video_track import track_video

    if args.mode == "photometric":
        print("flamejax track: --mode photometric is not implemented for videos yet; use --mode landmark",
              file=sys.stderr)
        return 2
    try:
        result = track_video(args.source, args.out, TrackConfig(), start_s=args.start, end_s=args.end,
                             fps=args.fps, overlay=args.overlay, exports=tuple(args.export), resume=args.resume,
                             progress=lambda message: print(message, file=sys.stderr))
    except (PerceptionError, NoUsableFramesError, ValueError) as error:
        print(f"flamejax track: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flamejax track: interrupted; finished steps are saved in {args.out}/checkpoints, run again with "
              f"--resume to continue", file=sys.stderr)
        return 130
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    counts = {s: result.fit.status.count(s) for s in sorted(set(result.fit.status))}
    print(f"tracked {len(result.fit.status)} frames ({', '.join(f'{n} {s}' for s, n in counts.items())}) "
          f"into {args.out}")
    return 0
