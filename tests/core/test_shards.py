"""Tests for chromalab.data.shards: WebDataset streaming, splitting, captions, bad members."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from chromalab.data.collate import collate_skip_bad
from chromalab.data.folders import ImageFolderDataset
from chromalab.data.shards import make_shard_dataset
from chromalab.io import ImageLoadError, decode_image, load_image

NUM_SHARDS, PER_SHARD = 8, 5


def colour_array(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 215, size=(1, 1, 3))
    noise = rng.normal(0, 30, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def write_shard(path: Path, samples: list[dict]) -> str:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return str(path)


@pytest.fixture
def shards(tmp_path: Path) -> str:
    """8 shards x 5 samples; keys s<shard>_<i>; PNG and JPEG; .txt or .json captions."""
    for shard in range(NUM_SHARDS):
        samples = []
        for i in range(PER_SHARD):
            key = f"s{shard}_{i}"
            array = colour_array(20, 26, shard * 10 + i)
            sample = {"__key__": key}
            if i % 2:
                sample["jpg"] = encode(array, "JPEG")
            else:
                sample["png"] = encode(array, "PNG")
            if i % 3 == 0:
                sample["txt"] = f"caption of {key}"
            else:
                sample["json"] = {"caption": f"json caption of {key}"}
            samples.append(sample)
        write_shard(tmp_path / f"shard-{shard:04d}.tar", samples)
    return str(tmp_path / "shard-{0000..0007}.tar")


ALL_KEYS = {f"s{shard}_{i}" for shard in range(NUM_SHARDS) for i in range(PER_SHARD)}


def keys_of(loader: DataLoader) -> list[str]:
    return [key for batch in loader if batch is not None for key in batch["key"]]


class TestSplitting:
    @pytest.mark.parametrize("train", [False, True])
    def test_every_sample_once_over_nodes_and_workers(self, shards: str, train: bool) -> None:
        per_rank = []
        for rank in range(2):
            dataset = make_shard_dataset(
                shards, image_size=8, train=train, shuffle_buffer=4, rank=rank, world_size=2
            )
            loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_skip_bad)
            per_rank.append(keys_of(loader))
        counts = Counter(per_rank[0] + per_rank[1])
        assert set(counts) == ALL_KEYS
        assert set(counts.values()) == {1}
        # Each node reads its own half of the shards.
        assert len(per_rank[0]) == len(per_rank[1]) == len(ALL_KEYS) // 2

    def test_single_process_reads_everything_in_order(self, shards: str) -> None:
        keys = [item["key"] for item in make_shard_dataset(shards, image_size=8)]
        expected = [f"s{shard}_{i}" for shard in range(NUM_SHARDS) for i in range(PER_SHARD)]
        assert keys == expected

    def test_more_workers_than_shards(self, tmp_path: Path) -> None:
        url = write_shard(
            tmp_path / "one.tar",
            [{"__key__": "k", "png": encode(colour_array(8, 8, 0), "PNG"), "txt": "c"}],
        )
        loader = DataLoader(make_shard_dataset([url], image_size=8), batch_size=None, num_workers=2)
        assert [item["key"] for item in loader] == ["k"]


class TestDeterminism:
    def test_same_seed_same_stream_new_epoch_new_order(self, shards: str) -> None:
        def run(dataset) -> tuple[list[str], list[torch.Tensor]]:
            items = list(dataset)
            return [x["key"] for x in items], [x["rgb"] for x in items]

        first = make_shard_dataset(shards, image_size=12, train=True, seed=5, shuffle_buffer=8)
        second = make_shard_dataset(shards, image_size=12, train=True, seed=5, shuffle_buffer=8)
        keys0, rgb0 = run(first)
        keys0b, rgb0b = run(second)
        assert keys0 == keys0b
        assert all(torch.equal(a, b) for a, b in zip(rgb0, rgb0b, strict=True))
        assert sorted(keys0) == sorted(ALL_KEYS)
        keys1, _ = run(first)  # the second iter() is epoch 1
        assert keys1 != keys0
        first.set_epoch(0)
        assert run(first)[0] == keys0
        other_seed = make_shard_dataset(shards, image_size=12, train=True, seed=6, shuffle_buffer=8)
        assert run(other_seed)[0] != keys0


class TestDecoding:
    def test_eval_item_matches_folder_pipeline(self, tmp_path: Path) -> None:
        array = colour_array(30, 44, 1)
        png = encode(array, "PNG")
        url = write_shard(tmp_path / "a.tar", [{"__key__": "x", "png": png}])
        folder = tmp_path / "folder"
        folder.mkdir()
        (folder / "x.png").write_bytes(png)
        item = next(iter(make_shard_dataset([url], image_size=16, caption_keys=())))
        assert "caption" not in item
        assert item["url"] == url
        reference = ImageFolderDataset(folder, image_size=16)[0]["rgb"]
        assert torch.equal(item["rgb"], reference)

    def test_decode_bytes_matches_load_image(self, tmp_path: Path) -> None:
        data = encode(colour_array(17, 23, 2), "JPEG")
        (tmp_path / "y.jpg").write_bytes(data)
        decoded = decode_image(data, "y.jpg")
        assert decoded.shape == (3, 17, 23)
        assert torch.equal(decoded, load_image(tmp_path / "y.jpg"))

    @pytest.mark.parametrize(
        "data", [b"", b"definitely not an image", encode(colour_array(32, 32, 3), "JPEG")[:200]]
    )
    def test_decode_bytes_errors(self, data: bytes) -> None:
        with pytest.raises(ImageLoadError, match="member.jpg"):
            decode_image(data, "member.jpg")


class TestCaptions:
    def test_caption_sources(self, tmp_path: Path) -> None:
        png = encode(colour_array(10, 10, 4), "PNG")
        url = write_shard(
            tmp_path / "c.tar",
            [
                {"__key__": "t", "png": png, "txt": "  text caption \n"},
                {"__key__": "j", "png": png, "json": {"caption": "json caption"}},
                {"__key__": "m", "png": png, "json": {"captions": ["one", "two", "three"]}},
                {"__key__": "n", "png": png, "json": {"url": "http://x"}},
                {"__key__": "b", "png": png, "txt": "from txt", "json": {"caption": "json"}},
            ],
        )
        captions = {x["key"]: x["caption"] for x in make_shard_dataset([url], image_size=8)}
        assert captions == {
            "t": "text caption",
            "j": "json caption",
            "m": "one",
            "n": "",
            "b": "from txt",
        }
        json_first = make_shard_dataset([url], image_size=8, caption_keys=("json", "txt"))
        assert {x["key"]: x["caption"] for x in json_first}["b"] == "json"
        train = make_shard_dataset([url], image_size=8, train=True)
        seen = set()
        for _ in range(20):
            seen |= {x["caption"] for x in train if x["key"] == "m"}
        assert seen == {"one", "two", "three"}


class TestBadSamples:
    @pytest.fixture
    def corrupt(self, tmp_path: Path) -> tuple[list[str], set[str]]:
        good = write_shard(
            tmp_path / "good.tar",
            [
                {"__key__": f"g{i}", "png": encode(colour_array(12, 12, i), "PNG"), "txt": "c"}
                for i in range(4)
            ],
        )
        samples = [
            {"__key__": f"c{i}", "jpg": encode(colour_array(12, 12, 10 + i), "JPEG"), "txt": "c"}
            for i in range(5)
        ]
        samples[2]["jpg"] = b"\xff\xd8\xff corrupted bytes"
        bad = write_shard(tmp_path / "bad.tar", samples)
        expected = {f"g{i}" for i in range(4)} | {f"c{i}" for i in (0, 1, 3, 4)}
        return [good, bad], expected

    def test_corrupt_member_skipped_and_counted(self, corrupt, caplog) -> None:
        urls, expected = corrupt
        dataset = make_shard_dataset(urls, image_size=8)
        with caplog.at_level("WARNING", logger="chromalab.data.shards"):
            keys = [x["key"] for x in dataset]
        assert sorted(keys) == sorted(expected)
        assert dataset.skipped == {"unreadable": 1}
        assert any("c2.jpg" in record.getMessage() for record in caplog.records)

    def test_count_reaches_batches_from_workers(self, corrupt) -> None:
        urls, expected = corrupt
        dataset = make_shard_dataset(urls, image_size=8, emit_none_for_bad=True)
        loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_skip_bad)
        batches = [b for b in loader if b is not None]
        assert sorted(k for b in batches for k in b["key"]) == sorted(expected)
        assert sum(b["skipped"] for b in batches) == 1

    def test_grey_sample_counted(self, tmp_path: Path) -> None:
        grey = np.repeat(colour_array(12, 12, 0)[..., :1], 3, axis=-1)
        url = write_shard(
            tmp_path / "g.tar",
            [
                {"__key__": "grey", "png": encode(grey, "PNG")},
                {"__key__": "colour", "png": encode(colour_array(12, 12, 1), "PNG")},
                {"__key__": "noimage", "txt": "caption without image"},
            ],
        )
        dataset = make_shard_dataset([url], image_size=8)
        assert [x["key"] for x in dataset] == ["colour"]
        assert dataset.skipped == {"grayscale": 1, "unreadable": 1}
        unfiltered = make_shard_dataset([url], image_size=8, filter_grayscale=False)
        assert [x["key"] for x in unfiltered] == ["grey", "colour"]
        with_none = make_shard_dataset([url], image_size=8, emit_none_for_bad=True)
        assert [x if x is None else x["key"] for x in with_none] == [None, "colour", None]

    def test_bad_json_caption_counted(self, tmp_path: Path) -> None:
        png = encode(colour_array(8, 8, 0), "PNG")
        url = write_shard(
            tmp_path / "j.tar",
            [{"__key__": "bad", "png": png, "json": b"{oops"}, {"__key__": "ok", "png": png}],
        )
        dataset = make_shard_dataset([url], image_size=8, filter_grayscale=False)
        assert [x["key"] for x in dataset] == ["ok"]
        assert dataset.skipped == {"broken": 1}


class TestArguments:
    def test_errors(self, shards: str) -> None:
        with pytest.raises(ValueError, match="rank"):
            make_shard_dataset(shards, rank=0)
        with pytest.raises(ValueError, match="rank"):
            make_shard_dataset(shards, rank=2, world_size=2)
        with pytest.raises(ValueError, match="no shard"):
            make_shard_dataset([])
        with pytest.raises(ValueError, match="seed"):
            make_shard_dataset(shards, seed=-1)
        with pytest.raises(ValueError, match="epoch"):
            make_shard_dataset(shards).set_epoch(-1)

    def test_url_list_equals_pattern(self, shards: str) -> None:
        urls = [shards.replace("{0000..0007}", f"{i:04d}") for i in range(NUM_SHARDS)]
        from_list = [x["key"] for x in make_shard_dataset(urls, image_size=8)]
        from_pattern = [x["key"] for x in make_shard_dataset(shards, image_size=8)]
        assert from_list == from_pattern
        assert sorted(from_list) == sorted(ALL_KEYS)
