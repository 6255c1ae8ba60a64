"""Why FILM and CONCAT miss colour words on CapShapes: where the binding breaks down.

Run after ``benchmarks/film_table1.py`` (it reads the checkpoints under
``outputs/film_color-bench/{fcnn,concat,film}``, or those given with ``--ckpt NAME=PATH``).
Four measurements per checkpoint, all on CapShapes scenes never seen in training:

* **manipulation outcomes**: the colour words of the validation captions are swapped
  (:func:`chromalab.metrics.manipulate_batch`) and every swapped object's colorized colour is
  classed as the new colour (correct), its old colour, another colour of the same caption (a
  binding error) or something else; the accuracy is also split by the number of objects, and
  between objects whose noun is shared in the scene (told apart only by position words, e.g.
  "the left circle") and objects whose noun is theirs alone. Scenes are drawn at the size each
  checkpoint was trained on (:func:`film_color.weights.trained_scene_size`).
* **caption probe**: does ``h``, the caption encoding FiLM and CONCAT see, tell the colour of
  each shape? A linear softmax probe (L-BFGS, L2 1e-3) per shape predicts the colour of that
  shape from ``h``, over captions that give it a colour (complete and partial levels, shape
  named once); trained on 5000 captions, scored on 1000 others (chance about 1/8).
* **pair probe**: the same, on captions of scenes where two objects often share a noun
  (:func:`pair_captions`): per shape, on the same number of captions, the colour of that shape
  when it is named once, and the colour of the left (or top) one of two objects sharing it
  ("a red circle on the left", "the top circle is red"); 80% to fit, 20% to score.
* **shape probe**: do the image features tell the eight shapes apart? The output of each
  conditioned block is averaged over each object's mask (area-resized), and a linear probe
  predicts the object's shape (80% of the objects of 1200 scenes to fit, 20% to score; chance
  1/8).

One reference row, without a checkpoint: how far a caption encoder of the same size gets on the
pair probe's questions when trained on them alone (:func:`direct_binding`, ``--direct-steps``
steps, 0 to skip; about 4 CPU minutes for 5000), i.e. how learnable the binding is for a
BiLSTM's last state at all.

Results: ``benchmarks/results/film_table1_probes.{csv,md}`` (the csv holds the checkpoint rows).

    python benchmarks/film_table1_probes.py [--ckpt FILM=path.ckpt ...] [--scenes 512]
"""

from __future__ import annotations

import argparse
import random
import re
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import machine_description, markdown_table, named_paths, write_results
from torch import Tensor
from torch.utils.data import DataLoader

from chromalab.color import rgb_to_l_ab
from chromalab.data import CapShapes
from chromalab.data.capshapes import SHAPES
from chromalab.data.collate import collate_skip_bad
from chromalab.metrics import manipulate_batch
from chromalab.text import CHROMATIC_COLORS, COLOR_LEXICON, ab_centers
from film_color.language import CaptionEncoder, Vocabulary
from film_color.module import FilmColorModule
from film_color.weights import read_weights, trained_scene_size, trained_steps

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "outputs" / "film_color-bench"
DEFAULT_RUNS = {"FCNN": "fcnn", "CONCAT": "concat", "FILM": "film", "FILM, longer": "film-long"}
OUTCOMES = ("new colour", "old colour", "another caption colour", "other")


def linear_probe(x: Tensor, y: Tensor, train: int, classes: int) -> float:
    """Accuracy on ``x[train:]`` of a softmax regression fitted on ``x[:train]``."""
    mean, std = x[:train].mean(0), x[:train].std(0) + 1e-6
    x = torch.cat([(x - mean) / std, torch.ones(len(x), 1)], 1)
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x[:train] @ weight, y[:train]) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((x[train:] @ weight).argmax(1) == y[train:]).float().mean())


@torch.no_grad()
def manipulation_outcomes(module: FilmColorModule, scenes: int, size: int) -> dict[str, float]:
    centers, ids = ab_centers(CHROMATIC_COLORS), torch.tensor(CHROMATIC_COLORS)
    outcomes: Counter[str] = Counter()
    by_count: dict[int, list[int]] = {}  # objects in the scene -> [right, seen]
    by_noun: dict[str, list[int]] = {"shared": [0, 0], "own": [0, 0]}
    loader = DataLoader(
        CapShapes(length=scenes, size=size, seed=1),
        batch_size=64,
        collate_fn=collate_skip_bad,
    )
    for batch in loader:
        l, ab = rgb_to_l_ab(batch["rgb"])
        new = manipulate_batch(batch, random.Random(int(batch["index"][0])))
        pred_ab = F.interpolate(
            module.colorize(l, new["caption"] if module.uses_captions else None),
            size=ab.shape[2:],
            mode="bilinear",
        )
        masks = batch["masks"].float()
        area = masks.sum((-2, -1))
        mean = torch.einsum("bkhw,bchw->bkc", masks, pred_ab) / area.clamp(min=1)[..., None]
        named = ids[((mean[:, :, None] - centers) ** 2).sum(-1).argmin(-1)]
        old, target = batch["color_ids"], new["color_ids"]
        swapped = (target != old) & (area > 0)
        count = (old >= 0).sum(1)
        shape_ids = batch["shape_ids"]
        shared = ((shape_ids[:, :, None] == shape_ids[:, None, :]).sum(-1) > 1) & (shape_ids >= 0)
        for b, k in swapped.nonzero().tolist():
            said = set(target[b][batch["mentioned"][b] & (target[b] >= 0)].tolist())
            guess = int(named[b, k])
            if guess == int(target[b, k]):
                outcome = OUTCOMES[0]
            elif guess == int(old[b, k]):
                outcome = OUTCOMES[1]
            else:
                outcome = OUTCOMES[2] if guess in said else OUTCOMES[3]
            outcomes[outcome] += 1
            for tally in (
                by_count.setdefault(int(count[b]), [0, 0]),
                by_noun["shared" if shared[b, k] else "own"],
            ):
                tally[0] += outcome == OUTCOMES[0]
                tally[1] += 1
    total = sum(outcomes.values())
    row = {f"{o} (%)": 100 * outcomes[o] / total for o in OUTCOMES}
    for n, (right, seen) in sorted(by_count.items()):
        row[f"acc, {n} object{'s' if n > 1 else ''} (%)"] = 100 * right / seen
    for kind, (right, seen) in by_noun.items():
        row[f"acc, {kind} noun (%)"] = 100 * right / seen if seen else float("nan")
    row["objects with a shared noun (%)"] = 100 * by_noun["shared"][1] / total
    return row


@torch.no_grad()
def caption_probe(module: FilmColorModule, captions: int = 6000) -> dict[str, float]:
    scenes = CapShapes(length=captions, size=16, seed=5)
    colour = {c: i for i, c in enumerate(CHROMATIC_COLORS)}
    texts, targets = [], torch.full((captions, len(SHAPES)), -1)
    for i in range(captions):
        item = scenes[i]
        texts.append(item["caption"])
        shapes = item["shape_ids"].tolist()
        for k, shape in enumerate(shapes):
            named_once = shape >= 0 and shapes.count(shape) == 1 and bool(item["mentioned"][k])
            if named_once and item["level"] != "scarce":
                targets[i, shape] = colour[int(item["color_ids"][k])]
    tokens, lengths = module.vocabulary.encode(texts, module.hparams.max_caption_length)
    h = module.network.caption_encoder(tokens, lengths)
    test_from = captions - captions // 6  # 5000 / 1000 by default
    out = {}
    for s, name in enumerate(SHAPES):
        keep = targets[:, s] >= 0
        train = int(keep[:test_from].sum())
        accuracy = linear_probe(h[keep], targets[keep, s], train, len(CHROMATIC_COLORS))
        out[f"caption probe: {name} (%)"] = 100 * accuracy
    return out


_FIRST_OF_A_PAIR = (
    re.compile(r"\b(?P<colour>\w+) (?P<noun>\w+) (?:on the left|at the top)\b"),
    re.compile(r"\bthe (?:left|top) (?P<noun>\w+) is (?P<colour>\w+)\b"),
)


def pair_captions(
    captions: int, seed: int
) -> tuple[list[str], list[list[tuple[int, int]]], list[list[tuple[int, int]]]]:
    """Captions of scenes rich in shared nouns, and per shape ``(caption, colour class)`` pairs.

    Returns ``(texts, own, pairs)``: ``own[s]`` lists the captions that name shape ``s`` once,
    with its colour; ``pairs[s]`` those that name two objects of shape ``s``, with the colour of
    the left (or top) one. Scarce captions (no colours) are left out.
    """
    scenes = CapShapes(length=captions, size=16, seed=seed, min_objects=2, shared_noun_prob=0.5)
    index = {c: i for i, c in enumerate(CHROMATIC_COLORS)}  # colour id -> probe class
    colour = {COLOR_LEXICON[c].name: i for c, i in index.items()}  # caption word -> class
    shape = {name: s for s, name in enumerate(SHAPES)}
    texts: list[str] = []
    pairs: list[list[tuple[int, int]]] = [[] for _ in SHAPES]
    own: list[list[tuple[int, int]]] = [[] for _ in SHAPES]
    for i in range(captions):
        item = scenes[i]
        if item["level"] == "scarce":
            continue
        texts.append(item["caption"])
        shapes = item["shape_ids"].tolist()
        for k, s in enumerate(shapes):
            if s >= 0 and shapes.count(s) == 1 and bool(item["mentioned"][k]):
                own[s].append((len(texts) - 1, index[int(item["color_ids"][k])]))
        for pattern in _FIRST_OF_A_PAIR:
            for match in pattern.finditer(item["caption"]):
                s, c = shape.get(match["noun"]), colour.get(match["colour"])
                if s is not None and c is not None and shapes.count(s) == 2:
                    pairs[s].append((len(texts) - 1, c))
    return texts, own, pairs


@torch.no_grad()
def pair_probe(module: FilmColorModule, captions: int = 12000) -> dict[str, float]:
    texts, own, pairs = pair_captions(captions, seed=7)
    tokens, lengths = module.vocabulary.encode(texts, module.hparams.max_caption_length)
    h = module.network.caption_encoder(tokens, lengths)
    counts = [min(len(o), len(p)) for o, p in zip(own, pairs, strict=True)]  # same n per shape
    out = {}
    for kind, samples in (("own noun", own), ("left/top of a shared noun", pairs)):
        accuracies = []
        for s, n in enumerate(counts):
            if n < 10:  # too few captions of this shape to fit and score a probe
                continue
            rows, targets = zip(*samples[s][:n], strict=True)
            accuracies.append(
                linear_probe(
                    h[list(rows)], torch.tensor(targets), int(0.8 * n), len(CHROMATIC_COLORS)
                )
            )
        out[f"pair probe: {kind} (%)"] = (
            100 * sum(accuracies) / len(accuracies) if accuracies else float("nan")
        )
    out["pair probe: captions per shape"] = min(counts)
    return out


def _binding_targets(
    count: int, own: list[list[tuple[int, int]]], pairs: list[list[tuple[int, int]]]
) -> Tensor:
    """``(count, shapes, 2)`` colour classes: ``[..., 0]`` shape named once, ``[..., 1]`` the
    left/top one of a shared noun; -1 where the caption does not say."""
    targets = torch.full((count, len(SHAPES), 2), -1)
    for slot, samples in enumerate((own, pairs)):
        for s, found in enumerate(samples):
            for row, c in found:
                targets[row, s, slot] = c
    return targets


def direct_binding(
    steps: int = 5000,
    train_captions: int = 20000,
    test_captions: int = 3000,
    embedding_dim: int = 64,
    hidden_size: int = 128,
    batch_size: int = 64,
    lr: float = 1e-3,
) -> dict[str, float]:
    """How learnable the binding is for the caption encoder alone (a reference for the probes).

    A fresh :class:`CaptionEncoder` of the CapShapes config's size and a linear readout of its
    ``h`` are trained together (Adam, cross-entropy) to give, for every shape, the colour the
    caption gives it when it is named once and the colour of the left/top one when two objects
    share it: the same questions as the pair probe, now answered by an encoder trained for
    nothing else. Scored on the pair probe's captions, which training never sees.
    """
    generator = torch.Generator().manual_seed(0)
    texts, own, pairs = pair_captions(train_captions, seed=11)
    test_texts, test_own, test_pairs = pair_captions(test_captions, seed=7)
    vocabulary = Vocabulary.build(texts)
    tokens, lengths = vocabulary.encode(texts, 64)
    test_tokens, test_lengths = vocabulary.encode(test_texts, 64)
    targets = _binding_targets(len(texts), own, pairs)
    test_targets = _binding_targets(len(test_texts), test_own, test_pairs)
    torch.manual_seed(0)
    encoder = CaptionEncoder(len(vocabulary), embedding_dim, hidden_size)
    readout = torch.nn.Linear(2 * hidden_size, len(SHAPES) * 2 * len(CHROMATIC_COLORS))
    optimizer = torch.optim.Adam([*encoder.parameters(), *readout.parameters()], lr=lr)
    for _ in range(steps):
        batch = torch.randint(0, len(texts), (batch_size,), generator=generator)
        logits = readout(encoder(tokens[batch], lengths[batch]))
        loss = F.cross_entropy(
            logits.view(-1, len(CHROMATIC_COLORS)), targets[batch].reshape(-1), ignore_index=-1
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = readout(encoder(test_tokens, test_lengths))
        guess = logits.view(len(test_texts), len(SHAPES), 2, -1).argmax(-1)
    out: dict[str, float] = {"steps": steps, "training captions": len(texts)}
    for slot, kind in enumerate(("own noun", "left/top of a shared noun")):
        said = test_targets[..., slot] >= 0
        right = (guess[..., slot] == test_targets[..., slot]) & said
        per_shape = right.sum(0)[said.sum(0) > 0] / said.sum(0)[said.sum(0) > 0]
        out[f"trained directly: {kind} (%)"] = 100 * float(per_shape.mean())
    return out


@torch.no_grad()
def shape_probe(module: FilmColorModule, size: int, scenes: int = 1200) -> dict[str, float]:
    data = CapShapes(length=scenes, size=size, seed=3)
    pooled: dict[int, list[Tensor]] = {}
    labels = []
    for start in range(0, scenes, 100):
        items = [data[i] for i in range(start, min(start + 100, scenes))]
        l, _ = rgb_to_l_ab(torch.stack([x["rgb"] for x in items]))
        masks = torch.stack([x["masks"] for x in items]).float()
        shapes = torch.stack([x["shape_ids"] for x in items])
        captions = [x["caption"] for x in items] if module.uses_captions else None
        blocks = module.features(l, captions)
        visible = (shapes >= 0) & (masks.sum((-2, -1)) > 0)
        for b, z in enumerate(blocks):
            z = z[:, : module.network.block_channels[b]]  # CONCAT: the image channels only
            m = F.interpolate(masks, size=z.shape[2:], mode="area")
            mean = torch.einsum("bkhw,bchw->bkc", m, z) / m.sum((-2, -1)).clamp(min=1e-6)[..., None]
            pooled.setdefault(b, []).append(mean[visible])
        labels.append(shapes[visible])
    y = torch.cat(labels)
    train = int(0.8 * len(y))
    return {
        f"shape probe: block {b + 1} (%)": 100
        * linear_probe(torch.cat(pooled[b]), y, train, len(SHAPES))
        for b in sorted(pooled)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="*", default=[], help="NAME=PATH (default: the bench)")
    parser.add_argument("--scenes", type=int, default=512, help="validation scenes")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--direct-steps",
        type=int,
        default=5000,
        help="steps of the caption encoder trained on the binding alone (0: skip)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ckpts = dict(item.split("=", 1) for item in args.ckpt) or {
        name: str(RUNS / run / "logs" / "version_0" / "checkpoints" / "last.ckpt")
        for name, run in DEFAULT_RUNS.items()
    }
    missing = [path for path in ckpts.values() if not Path(path).is_file()]
    if missing:
        raise SystemExit(f"no checkpoint {missing}: run benchmarks/film_table1.py first")
    rows = []
    for name, path in ckpts.items():
        module = FilmColorModule.load_from_checkpoint(path, map_location="cpu").eval()
        blob = read_weights(path)
        size = trained_scene_size(blob) or 64
        row: dict[str, object] = {"model": name, "steps": trained_steps(blob), "scenes (px)": size}
        row.update(manipulation_outcomes(module, args.scenes, size))
        if module.uses_captions:
            row.update(caption_probe(module))
            row.update(pair_probe(module))
        row.update(shape_probe(module, size))
        rows.append(row)
        print(row)
    direct = direct_binding(args.direct_steps) if args.direct_steps > 0 else None
    if direct is not None:
        print(direct)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    rows = [{k: row.get(k, "N/A") for k in keys} for row in rows]
    split = {
        "manipulation": [k for k in keys if "probe" not in k],
        "caption probe": ["model", *(k for k in keys if k.startswith("caption probe"))],
        "pair probe": ["model", *(k for k in keys if k.startswith("pair probe"))],
        "shape probe": ["model", *(k for k in keys if k.startswith("shape probe"))],
    }
    md = [
        "# Where FILM's colour-word binding breaks down on CapShapes",
        "",
        f"Machine: {machine_description()}. Checkpoints: "
        + named_paths(ckpts)
        + ". Method: see the docstring of `benchmarks/film_table1_probes.py`.",
        "",
    ]  # fmt: skip
    for title, columns in split.items():
        md += [f"## {title}", "", markdown_table([{k: r[k] for k in columns} for r in rows])]
        if title == "pair probe" and direct is not None:
            md += [
                "",
                "The same questions answered by a caption encoder of the CapShapes config's size "
                "(64-d words, 128 LSTM units a direction) trained on them alone, from scratch "
                "(`direct_binding`; batch 64, Adam 1e-3; scored on the captions of 3000 of the "
                "pair probe's scenes, every caption that names the shape):",
                "",
                markdown_table([direct]),
            ]
    csv_path, md_path = write_results("film_table1_probes", rows, "\n".join(md))
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
