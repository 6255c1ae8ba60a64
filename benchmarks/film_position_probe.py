"""Do FILM's image features know which of two same-shaped objects is the left (or top) one?

"The left circle is red and the right circle is blue": FiLM's ``gamma`` and ``beta`` are the
same at every location (Eq. 3), so the image features must tell the two circles apart before
the caption can bind a colour to each. This benchmark measures whether they do, per checkpoint:

* **relative position probe**: on CapShapes scenes where every object after the first shares
  the noun of an earlier one when it can (``shared_noun_prob=1``, 2-4 objects), each object
  that shares its noun with exactly one other is labelled by where it lies relative to that
  other along the axis that separates them more (the caption's rule,
  :func:`chromalab.text.describe_scene`): left, right, top or bottom (chance 1/4). Each
  block's conditioned output is averaged over the object's mask (area-resized) and a linear
  softmax probe (``film_table1_probes.linear_probe``) predicts the label: 80% of the objects to
  fit, 20% to score.
* the same probe on the object's **absolute** centroid ``(x, y, x^2, y^2, xy)``, without any
  network: what knowing only where an object lies in the frame gives.
* **manipulation accuracy** (``film_table1_probes.manipulation_outcomes``) on the 512 default
  validation scenes, split between objects whose noun another object shares and the others.

A block whose probe is no better than the absolute-centroid row has no relative position to
offer FiLM.

    python benchmarks/film_position_probe.py --ckpt NAME=PATH [NAME=PATH ...] [--scenes 1500]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import machine_description, markdown_table, named_paths, write_results
from film_table1_probes import linear_probe, manipulation_outcomes
from torch import Tensor

from chromalab.color import rgb_to_l_ab
from chromalab.data import CapShapes
from film_color.module import FilmColorModule
from film_color.weights import read_weights, trained_scene_size, trained_steps

LABELS = ("left", "right", "top", "bottom")


def pair_labels(masks: Tensor, shape_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Objects sharing their shape with exactly one other: ``(scene, object, label)`` indices,
    the label indexing :data:`LABELS`, and the objects' centroids ``(N, 2)`` in ``[0, 1]``."""
    area = masks.sum((-2, -1))
    h, w = masks.shape[-2:]
    xs = torch.linspace(0, 1, w)
    ys = torch.linspace(0, 1, h)
    centroid = (
        torch.stack(
            [torch.einsum("bkhw,w->bk", masks, xs), torch.einsum("bkhw,h->bk", masks, ys)], -1
        )
        / area.clamp(min=1)[..., None]
    )
    real = (shape_ids >= 0) & (area > 0)
    same = (shape_ids[:, :, None] == shape_ids[:, None, :]) & real[:, :, None] & real[:, None, :]
    same &= ~torch.eye(shape_ids.shape[1], dtype=torch.bool)
    scene, obj = torch.nonzero(same.sum(-1) == 1, as_tuple=True)
    other = same[scene, obj].float().argmax(-1)
    offset = centroid[scene, other] - centroid[scene, obj]  # towards the other object
    along_x = offset[:, 0].abs() >= offset[:, 1].abs()
    label = torch.where(
        along_x, (offset[:, 0] < 0).long(), 2 + (offset[:, 1] < 0).long()
    )  # the other lies right of it -> it is the left one (0), ...
    return torch.stack([scene, obj, label], 1), centroid[scene, obj], label


@torch.no_grad()
def relative_position_probe(module: FilmColorModule, size: int, scenes: int) -> dict[str, float]:
    data = CapShapes(length=scenes, size=size, seed=5, shared_noun_prob=1.0, min_objects=2)
    pooled: dict[int, list[Tensor]] = {}
    labels, centroids = [], []
    for start in range(0, scenes, 100):
        items = [data[i] for i in range(start, min(start + 100, scenes))]
        l, _ = rgb_to_l_ab(torch.stack([x["rgb"] for x in items]))
        masks = torch.stack([x["masks"] for x in items]).float()
        index, centroid, label = pair_labels(masks, torch.stack([x["shape_ids"] for x in items]))
        scene, obj = index[:, 0], index[:, 1]
        blocks = module.features(l, [x["caption"] for x in items])
        for b, z in enumerate(blocks):
            z = z.float()
            m = F.interpolate(masks, size=z.shape[2:], mode="area")
            mean = torch.einsum("bkhw,bchw->bkc", m, z) / m.sum((-2, -1)).clamp(min=1e-6)[..., None]
            pooled.setdefault(b, []).append(mean[scene, obj])
        labels.append(label)
        centroids.append(centroid)
    y = torch.cat(labels)
    train = int(0.8 * len(y))
    xy = torch.cat(centroids)
    absolute = torch.cat([xy, xy**2, xy[:, :1] * xy[:, 1:]], 1)
    row = {"objects": len(y), "absolute centroid (%)": 100 * linear_probe(absolute, y, train, 4)}
    for b in sorted(pooled):
        row[f"block {b + 1} (%)"] = 100 * linear_probe(torch.cat(pooled[b]), y, train, 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", required=True, help="NAME=PATH of FILM checkpoints")
    parser.add_argument("--scenes", type=int, default=1500, help="probe scenes")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ckpts = dict(item.split("=", 1) for item in args.ckpt)
    rows = []
    for name, path in ckpts.items():
        module = FilmColorModule.load_from_checkpoint(path, map_location="cpu").eval()
        if not module.uses_captions:
            raise SystemExit(f"{path}: an FCNN has no caption to bind; give FILM checkpoints")
        blob = read_weights(path)
        size = trained_scene_size(blob) or 64
        row: dict[str, object] = {"model": name, "steps": trained_steps(blob), "scenes (px)": size}
        outcomes = manipulation_outcomes(module, 512, size)
        row["manipulation (%)"] = outcomes["new colour (%)"]
        row["shared noun (%)"] = outcomes["acc, shared noun (%)"]
        row["own noun (%)"] = outcomes["acc, own noun (%)"]
        row.update(relative_position_probe(module, size, args.scenes))
        rows.append(row)
        print(row)
    md = [
        "# Do FILM's image features tell two same-shaped objects apart?",
        "",
        f"Machine: {machine_description()}. Checkpoints: "
        + named_paths(ckpts)
        + ". Method: see the docstring of `benchmarks/film_position_probe.py`. Probe columns: "
        "accuracy of a linear probe telling left / right / top / bottom of two objects sharing "
        "a noun (chance 25%).",
        "",
        markdown_table(rows),
    ]  # fmt: skip
    csv_path, md_path = write_results("film_position_probe", rows, "\n".join(md))
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
