"""``python -m film_color.slim SRC DST``: a checkpoint without its training state.

Writes :func:`film_color.weights.slim_checkpoint` of ``SRC`` to ``DST`` and prints both sizes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from film_color.weights import slim_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m film_color.slim",
        description="drop the optimizer, scheduler and callback state of a checkpoint",
    )
    parser.add_argument("src", type=Path, help="a film-color fit checkpoint")
    parser.add_argument("dst", type=Path, help="where to write the weights-only checkpoint")
    args = parser.parse_args(argv)
    before = args.src.stat().st_size
    after = slim_checkpoint(args.src, args.dst).stat().st_size
    print(f"{args.dst}: {after / 2**20:.1f} MiB ({before / 2**20:.1f} MiB with training state)")


if __name__ == "__main__":
    main()
