"""``privsplit info``: what can be configured, the shipped configs, and the shape of z for a config."""

from __future__ import annotations

import argparse

from ..checks import flag
from .common import add_config_args, chain_text

def cmd_info(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data import DATASETS
    from ..data.base import TaskInfo
    from ..methods import METHODS, build_method
    from ..models.backbones import BACKBONES, output_shape, split_points
    from ..reduction import OPS

    if args.configs:
        return _list_configs()
    cfg = load_config(args.config, args.overrides)
    METHODS.get(cfg.method)
    if args.show_config:
        print(cfg.to_yaml(), end="")
        return 0
    print("backbones and split points:")
    for b in BACKBONES.names():
        print(f"  {b}: {', '.join(split_points(b))}")
    print(f"reduction ops: {', '.join(OPS.names())}")
    print(f"datasets: {', '.join(DATASETS.names())}")
    print(f"methods: {', '.join(METHODS.names())}")
    import math

    import torch

    size = args.image_size or cfg.data.image_size or DATASETS.create(cfg.data.name).default_size
    image = (3, size, size)
    info = TaskInfo(cfg.data.name, DATASETS.create(cfg.data.name).labels, image)
    # Built on the meta device: shapes only, no weights, no data.
    with torch.device("meta"):
        model = build_method(cfg).build(info)
    z = output_shape(model.obfuscator, image)
    print(f"\nthis config: {cfg.method}, {cfg.model.backbone} split {cfg.model.split} on {size}x{size} images")
    if cfg.reduction:
        print(f"  encoder output {model.obfuscator.encoded_shape}; after reduction {chain_text(cfg.reduction)}: z {z}")
    print(f"  z has {math.prod(z)} values, {math.prod(z) / math.prod(image):.3f}x the {math.prod(image)} of the image")
    return 0


def _list_configs() -> int:
    from ..config import shipped_configs

    folder = shipped_configs()
    print(f"configs shipped with privsplit ({folder}); use one with --config NAME:")
    for path in sorted(folder.glob("*.yaml")):
        about = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        print(f"  {path.stem:28s} {about[:90]}")
    return 0



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="list backbones, split points, ops, datasets; show the shape of z for a config",
        description="List what can be configured, and the shape of z for a config without training.",
    )
    add_config_args(p)
    p.add_argument("--image-size", type=flag(int, ge=8, le=1024), help="input image side (default: the config's or the dataset's)")
    p.add_argument("--show-config", action="store_true", help="print the fully resolved config as YAML and exit")
    p.add_argument("--configs", action="store_true", help="list the configs shipped with privsplit (the paper's settings)")
    p.set_defaults(func=cmd_info)
