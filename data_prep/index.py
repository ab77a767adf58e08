"""Index a dataset's videos once, up front: ``python -m data_prep.index --config ucf101_st4.yaml``.

Opens every video of the configured dataset (all subsets) in parallel, records frame count,
fps, size and label in the manifest next to the data (``data.manifest``), and prints how
many files are usable and which were excluded, by reason. Training reads the manifest and
only probes files that are new or changed since; running this first just moves that work
out of the first training start.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from vidgan.config import ConfigError, load_config
from vidgan.data import (DataError, geometry, list_videos, manifest_path, reason_kind,
                         select_usable, summarize_excluded)
from vidgan.data.manifest import index_videos


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo.yaml", help="a YAML file or a name in configs/")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel probes (default data.index_workers, 0 = CPU count)")
    parser.add_argument("--rebuild", action="store_true", help="probe every file again")
    parser.add_argument("--show", type=int, default=5, help="example files per reason")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=PATH")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        videos = list_videos(cfg, "all")
        path = manifest_path(cfg)
        if args.rebuild and path.exists():
            path.unlink()
        workers = cfg.data.index_workers if args.workers is None else args.workers
        manifest = index_videos(videos.root, videos.label_names(), path, workers)
    except (ConfigError, FileNotFoundError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    keep, excluded = select_usable(videos, manifest, geometry(cfg, False).span)
    print(f"{cfg.data.dataset} '{videos.root}': {len(keep)} usable videos, "
          f"{summarize_excluded(excluded)}")
    print(f"manifest: {path}")
    by_reason = defaultdict(list)
    for file, reason in excluded:
        by_reason[reason_kind(reason)].append(f"{file}: {reason}")
    for kind, lines in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        print(f"  {kind} ({len(lines)}):")
        for line in lines[:args.show]:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
