"""The video index: one probe per file, cached in a manifest next to the data.

Probing a video (open it, count its frames, decode its last frame) costs ~10 ms to seconds;
13,320 UCF101 files would make every start-up slow. The manifest stores each file's frame
count, fps, size and label under its size and mtime, so a dataset only probes files that are
new or changed since the last run. ``python -m data_prep.index`` builds it up front.

A file that cannot be used is kept in the manifest with an ``error`` (the reason), so it is
neither probed again nor read during training.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from tqdm import tqdm

FORMAT = "vidgan-manifest/1"
MANIFEST_NAME = "vidgan_manifest.json"
# Frame-size sanity bounds for "odd size": a side under MIN_SIDE pixels or an aspect ratio
# beyond MAX_ASPECT cannot give a sensible square crop (UCF101 is 320x240, 4:3).
MIN_SIDE = 16
MAX_ASPECT = 4.0


@dataclass
class VideoInfo:
    size: int  # bytes
    mtime_ns: int
    frames: int = 0
    fps: float = 0.0
    height: int = 0
    width: int = 0
    label: str = ""  # class name as the dataset's listing gives it ("" = unlabelled)
    error: str = ""  # why the file is unusable; "" = usable

    def matches(self, stat: os.stat_result) -> bool:
        """Still describes the file? (A changed size or mtime invalidates the entry.)"""
        return self.size == stat.st_size and self.mtime_ns == stat.st_mtime_ns


def error_reason(err: BaseException) -> str:
    """The last line of an exception's message (decord/FFmpeg put the cause there), short."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(err).__name__


def _declared_frames(path: Path) -> tuple:
    """(frames the container header declares, fps) read with PyAV; frames 0 if unknown."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        return int(stream.frames or 0), fps


def probe_video(path: str | Path, label: str = "") -> VideoInfo:
    """Open ``path`` and return what the dataset needs, or the reason it is unusable.

    Reasons ("kind: detail"): empty file; not a video (the demuxer rejects it); damaged
    (decord cannot read its packets or decode the last frame); truncated (fewer frames than the header declares, or the last frame does
    not decode); odd size (a side < MIN_SIDE or aspect > MAX_ASPECT). "Too short" depends on
    the config (T and the frame stride), so the dataset decides that from ``frames``.
    """
    import decord

    path = Path(path)
    stat = path.stat()
    info = VideoInfo(size=stat.st_size, mtime_ns=stat.st_mtime_ns, label=label)
    if stat.st_size == 0:
        info.error = "empty file: 0 bytes"
        return info
    try:
        declared, info.fps = _declared_frames(path)
    except Exception as err:  # PyAV raises InvalidDataError, OSError, ...
        reason = error_reason(err).replace(f": '{path}'", "")
        info.error = f"not a video: {reason}"
        return info
    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        info.frames = len(reader)
        info.fps = float(reader.get_avg_fps()) or info.fps
        if info.frames == 0:
            info.error = "damaged: no decodable frames"
            return info
        # Some muxers round the declared count; a real truncation loses many frames.
        if declared and info.frames + max(2, declared // 50) < declared:
            info.error = f"truncated: header declares {declared} frames, {info.frames} present"
            return info
        ends = reader.get_batch([0, info.frames - 1]).asnumpy()
        info.height, info.width = int(ends.shape[1]), int(ends.shape[2])
    except Exception as err:  # decord raises DECORDError / RuntimeError on damaged streams
        info.error = f"damaged: {error_reason(err)}"
        return info
    short, long = sorted((info.height, info.width))
    if short < MIN_SIDE or long / short > MAX_ASPECT:
        info.error = (f"odd size: {info.width}x{info.height} (expected sides >= {MIN_SIDE} px "
                      f"and aspect <= {MAX_ASPECT:g}:1)")
    return info


class Manifest:
    """``{relative path: VideoInfo}`` for one data root, stored as JSON (written atomically)."""

    def __init__(self, path: str | Path, entries: Optional[Dict[str, VideoInfo]] = None):
        self.path = Path(path)
        self.entries: Dict[str, VideoInfo] = entries or {}

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """The manifest at ``path``; empty if it does not exist or is not one of ours."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            entries = {rel: VideoInfo(**fields) for rel, fields in data["entries"].items()}
        except FileNotFoundError:
            entries = {}
        except (ValueError, KeyError, TypeError) as err:
            # A damaged index only costs a re-probe; it must never stop training.
            tqdm.write(f"warning: manifest {path} is unreadable ({err}); re-indexing")
            entries = {}
        return cls(path, entries)

    def save(self) -> bool:
        """Write atomically; False (with a warning) if the location is not writable."""
        data = {"format": FORMAT, "entries": {k: asdict(v) for k, v in sorted(self.entries.items())}}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data, indent=0))
            os.replace(tmp, self.path)
            return True
        except OSError as err:
            tqdm.write(f"warning: cannot write the video manifest {self.path} ({err}); it will "
                       f"be rebuilt next time. Set data.manifest to a writable path.")
            return False

    def stale(self, root: Path, files: Iterable[str]) -> list:
        """The existing files whose entry is missing or no longer matches the file on disk
        (one stat each); entries of files that no longer exist are dropped."""
        out = []
        for rel in files:
            try:
                stat = (root / rel).stat()
            except FileNotFoundError:  # gone: forget it, nothing to probe
                self.entries.pop(rel, None)
                continue
            entry = self.entries.get(rel)
            if entry is None or not entry.matches(stat):
                out.append(rel)
        return out


def index_videos(root: str | Path, files: Dict[str, str], manifest_path: str | Path,
                 workers: int = 0, progress: bool = True) -> Manifest:
    """Bring the manifest up to date for ``files`` ({relative path: label}), probing in parallel
    only what is new or changed, and save it. Files that no longer exist are left out.

    Probes run in worker processes: on some corrupt streams libavcodec fails an assertion
    and aborts the process that decodes, which must be a worker and not the run. Every
    reader is closed (and every worker gone) before this returns.
    """
    root = Path(root)
    manifest = Manifest.load(manifest_path)
    todo = manifest.stale(root, files)
    if not todo:
        return manifest
    workers = workers or min(32, os.cpu_count() or 1)
    with tqdm(total=len(todo), desc=f"indexing {root}", disable=not progress,
              dynamic_ncols=True) as bar:
        for rel, info in probe_isolated(root, files, todo, workers, bar.update):
            manifest.entries[rel] = info
    manifest.save()
    return manifest


def probe_isolated(root: Path, files: Dict[str, str], todo: List[str], workers: int,
                   done=lambda n: None):
    """(relative path, VideoInfo) for each of ``todo``, probed in ``workers`` forked
    processes. When a probe kills its worker (the pool breaks), every file without a result
    is probed again alone in a process of its own, and one that kills that process too is
    recorded as damaged, with the signal, and never opened again."""
    context = multiprocessing.get_context("fork")
    left = list(todo)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                 mp_context=context) as pool:
            futures = {pool.submit(probe_video, root / rel, files[rel]): rel for rel in todo}
            for future in as_completed(futures):
                rel = futures[future]
                yield rel, future.result()
                left.remove(rel)
                done(1)
    except BrokenProcessPool:
        pass
    for rel in left:
        yield rel, _probe_alone(root / rel, files[rel], context)
        done(1)


def _probe_in_child(connection, path: Path, label: str) -> None:
    connection.send(probe_video(path, label))
    connection.close()


def _probe_alone(path: Path, label: str, context) -> VideoInfo:
    """``probe_video`` in a process of its own; a probe that kills it makes the file
    "damaged: the decoder crashed"."""
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_probe_in_child, args=(send, path, label), daemon=True)
    child.start()
    send.close()
    try:
        info = receive.recv()
    except EOFError:  # the child died before it sent anything
        info = None
    child.join()
    receive.close()
    if info is not None:
        return info
    stat = path.stat()
    code = child.exitcode
    how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return VideoInfo(size=stat.st_size, mtime_ns=stat.st_mtime_ns, label=label,
                     error=f"damaged: the decoder crashed the process that read it ({how})")
