"""``python -m dmnreid.data_prep``: inspect, partition per camera, build one device's folder,
or make synthetic data."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from dmnreid.data_prep.datasets import DATASETS, read_dataset
from dmnreid.data_prep.device import write_device_node
from dmnreid.data_prep.partition import META, write_partition
from dmnreid.data_prep.records import SPLITS, DatasetError
from dmnreid.data_prep.summary import summarise
from dmnreid.data_prep.synthetic import CAMERAS_PER_ID, SyntheticConfig, generate, train_ids_for


def _summary(args: argparse.Namespace) -> None:
    dataset = read_dataset(args.dataset, args.root)
    table = summarise(dataset)
    for split, paths in dataset.missing.items():
        if paths:
            print(f"warning: {split}: {len(paths)} file(s) named by the metadata are absent, "
                  f"e.g. {paths[0]}", file=sys.stderr)
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{dataset.name} at {dataset.root}")
    print(f"{'split':<8} {'images':>8} {'ids':>6} {'cameras':>8} {'tracklets':>10}")
    for split in SPLITS:
        row = table[split]
        print(f"{split:<8} {row['images']:>8} {row['ids']:>6} {row['cameras']:>8} "
              f"{row['tracklets']:>10}")


def _partition(args: argparse.Namespace) -> None:
    dataset = read_dataset(args.dataset, args.root)
    meta = write_partition(
        dataset, args.out, target_camera=args.target_camera, seed=args.seed,
        allow_missing=args.allow_missing,
        on_corrupt="skip" if args.skip_corrupt else "error",
        force=args.force, progress=not args.quiet,
    )
    print(f"{len(meta['nodes'])} node folders under {args.out} "
          f"(target camera {meta['target_camera']}):")
    for node in meta["nodes"]:
        print(f"  {node['node']}: {node['tracklets']} tracklets, {node['images']} images")
    skipped = meta.get("skipped_corrupt", [])
    if skipped:
        print(f"warning: {len(skipped)} unreadable image(s) left out (--skip-corrupt); "
              f'listed under "skipped_corrupt" in {args.out / META}', file=sys.stderr)


def _device(args: argparse.Namespace) -> None:
    info = write_device_node(args.tracklets, args.out, args.camera, args.target_camera,
                             args.target_images, args.seed, args.force,
                             "skip" if args.skip_corrupt else "error", not args.quiet)
    print(f"{args.out}: camera {info['camera']}, {info['tracklets']} tracklets, "
          f"{info['images']} images, {info['target_domain_images']} target-camera images "
          f"(target camera {info['target_camera']})")
    if info["skipped_corrupt"]:
        print(f"warning: {len(info['skipped_corrupt'])} unreadable image(s) left out "
              f"(--skip-corrupt), e.g. {info['skipped_corrupt'][0]}", file=sys.stderr)


def _synthetic(args: argparse.Namespace) -> None:
    config = SyntheticConfig(
        cameras=args.cameras, train_ids=args.train_ids, test_ids=args.test_ids,
        frames_per_tracklet=(args.min_frames, args.max_frames),
        image_width=args.width, image_height=args.height,
        distractors=args.distractors, junk=args.junk, seed=args.seed,
        min_cameras_per_id=args.min_cameras_per_id, max_cameras_per_id=args.max_cameras_per_id,
        cameras_per_id=args.cameras_per_id,
    )
    if args.ids_per_camera:
        config = replace(config, train_ids=train_ids_for(args.ids_per_camera, config))
    meta = generate(Path(args.out), config, progress=not args.quiet)
    print(json.dumps(meta.get("counts", meta), indent=2))
    print(f"contact sheet: {Path(args.out) / 'contact_sheet.png'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dmnreid.data_prep",
        description="Prepare person re-ID data for dmnreid: inspect a dataset, split it into "
        "one node folder per camera, or generate the built-in synthetic camera network.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = SyntheticConfig()

    def dataset_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", required=True, choices=DATASETS,
                       help="which dataset layout to read")
        p.add_argument("--root", required=True, type=Path,
                       help="dataset folder as its authors ship it (or its parent folder, "
                       "as torchreid expects it)")

    p = sub.add_parser("summary", help="count images, ids, cameras and tracklets per split")
    dataset_args(p)
    p.add_argument("--json", action="store_true",
                   help="print JSON {split: {images, ids, cameras, tracklets}}")
    p.set_defaults(func=_summary)

    p = sub.add_parser("partition", help="write one node folder per camera plus the evaluator")
    dataset_args(p)
    p.add_argument("--out", required=True, type=Path,
                   help="folder to create (or an empty one), outside the dataset folder")
    p.add_argument("--target-camera", type=int, default=1,
                   help="camera whose style every node learns to imitate (default 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of tracklet sampling and local label order (default 0)")
    p.add_argument("--allow-missing", action="store_true",
                   help="partition what is present when the metadata names absent files")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out unreadable images instead of stopping")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out made with other settings, or damaged; only "
                   "a folder holding nothing but a partition is ever replaced")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_partition)

    p = sub.add_parser("device", help="build this device's node folder from its own "
                       "camera's tracklets (one folder per tracklet) and the target camera's "
                       "images")
    p.add_argument("--tracklets", required=True, type=Path,
                   help="this camera's tracklets: one folder per tracklet, frames inside")
    p.add_argument("--camera", required=True, type=int, help="this camera's number (from 1)")
    p.add_argument("--target-camera", type=int, default=1,
                   help="the camera whose style every node learns (default 1)")
    p.add_argument("--target-images", type=Path,
                   help="the target camera's images, handed to every device at set-up "
                   "(not needed on the target camera's own device)")
    p.add_argument("--out", required=True, type=Path, help="the node folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the local label order")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out unreadable images instead of stopping")
    p.add_argument("--force", action="store_true", help="replace an existing node folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_device)

    p = sub.add_parser("synthetic", help="generate the synthetic multi-camera network")
    p.add_argument("--out", required=True, type=Path, help="folder to create")
    p.add_argument("--seed", type=int, default=defaults.seed, help="generator seed")
    p.add_argument("--cameras", type=int, default=defaults.cameras, help="number of cameras")
    train = p.add_mutually_exclusive_group()
    train.add_argument("--train-ids", type=int, default=defaults.train_ids,
                       help="training identities")
    train.add_argument("--ids-per-camera", type=int, default=0,
                       help="training identities per camera, on average, in place of "
                       "--train-ids: their total follows from it")
    p.add_argument("--test-ids", type=int, default=defaults.test_ids,
                   help="test identities (query/gallery)")
    p.add_argument("--cameras-per-id", choices=CAMERAS_PER_ID, default=defaults.cameras_per_id,
                   help="how many cameras see an identity: uniform between the bounds, or "
                   "poisson: 1 + Poisson(2) within them, as MSMT17 (default uniform)")
    p.add_argument("--min-cameras-per-id", type=int, default=defaults.min_cameras_per_id,
                   help="fewest cameras that see an identity; 1 allows training identities "
                   "in one camera only (test identities: at least 2)")
    p.add_argument("--max-cameras-per-id", type=int, default=defaults.max_cameras_per_id,
                   help="most cameras that see an identity (default: all)")
    p.add_argument("--min-frames", type=int, default=defaults.frames_per_tracklet[0],
                   help="fewest frames per tracklet")
    p.add_argument("--max-frames", type=int, default=defaults.frames_per_tracklet[1],
                   help="most frames per tracklet")
    p.add_argument("--width", type=int, default=defaults.image_width, help="image width (px)")
    p.add_argument("--height", type=int, default=defaults.image_height,
                   help="image height (px)")
    p.add_argument("--distractors", type=int, default=defaults.distractors,
                   help="distractor images (pid 0) in the gallery")
    p.add_argument("--junk", type=int, default=defaults.junk,
                   help="junk images (pid -1) in the gallery")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_synthetic)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # partitioning reports leftovers of killed runs it removes as warnings: one line each
    logging.basicConfig(format="note: %(message)s")
    try:
        args.func(args)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
