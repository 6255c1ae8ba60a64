"""Tests for chromalab.data.records: the caption-file importers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chromalab.data.records import (
    CaptionRecord,
    detect_caption_format,
    load_caption_records,
    load_coco_captions,
    load_jsonl,
    load_name_caption_pairs,
    load_name_to_captions,
)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


COCO = {
    "info": {"description": "tiny"},
    "images": [
        {"id": 7, "file_name": "b.jpg", "width": 4, "height": 4},
        {"id": 3, "file_name": "a.jpg", "width": 4, "height": 4},
        {"id": 9, "file_name": "no_caption.jpg", "width": 4, "height": 4},
    ],
    "annotations": [
        {"id": 1, "image_id": 3, "caption": "a red car "},
        {"id": 2, "image_id": 7, "caption": "a blue boat"},
        {"id": 3, "image_id": 3, "caption": "a car that is red"},
    ],
}


class TestCaptionRecord:
    def test_valid(self) -> None:
        record = CaptionRecord(Path("x.jpg"), ("one", "two"))
        assert record.image == Path("x.jpg")
        assert record.captions == ("one", "two")

    @pytest.mark.parametrize("captions", [(), ("",), ("ok", "  ")])
    def test_empty_captions_rejected(self, captions: tuple[str, ...]) -> None:
        with pytest.raises(ValueError, match="x.jpg"):
            CaptionRecord(Path("x.jpg"), captions)

    def test_image_must_be_path(self) -> None:
        with pytest.raises(TypeError):
            CaptionRecord("x.jpg", ("a",))  # type: ignore[arg-type]


class TestCoco:
    def test_groups_by_image(self, tmp_path: Path) -> None:
        path = write_json(tmp_path / "captions.json", COCO)
        records = load_coco_captions(path, tmp_path / "images")
        # Order of "images"; captions in annotation order; captionless image left out.
        assert records == [
            CaptionRecord(tmp_path / "images" / "b.jpg", ("a blue boat",)),
            CaptionRecord(tmp_path / "images" / "a.jpg", ("a red car", "a car that is red")),
        ]

    def test_unknown_image_id(self, tmp_path: Path) -> None:
        data = json.loads(json.dumps(COCO))
        data["annotations"][1]["image_id"] = 42
        path = write_json(tmp_path / "captions.json", data)
        with pytest.raises(ValueError, match=r"captions\.json.*annotations\[1\].*42"):
            load_coco_captions(path, tmp_path)

    def test_missing_field(self, tmp_path: Path) -> None:
        data = json.loads(json.dumps(COCO))
        del data["images"][2]["file_name"]
        path = write_json(tmp_path / "captions.json", data)
        with pytest.raises(ValueError, match=r"images\[2\]"):
            load_coco_captions(path, tmp_path)

    def test_not_coco(self, tmp_path: Path) -> None:
        path = write_json(tmp_path / "captions.json", {"images": []})
        with pytest.raises(ValueError, match="annotations"):
            load_coco_captions(path, tmp_path)


class TestJsonl:
    def test_merge_and_resolve(self, tmp_path: Path) -> None:
        absolute = tmp_path / "elsewhere" / "c.png"
        lines = [
            json.dumps({"image": "a.jpg", "caption": "first"}),
            "",
            json.dumps({"image": "sub/b.jpg", "captions": ["one", "two"], "extra": 1}),
            json.dumps({"image": "a.jpg", "caption": "second"}),
            json.dumps({"image": str(absolute), "caption": "abs"}),
        ]
        path = tmp_path / "data" / "captions.jsonl"
        path.parent.mkdir()
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        expected_default = [
            CaptionRecord(path.parent / "a.jpg", ("first", "second")),
            CaptionRecord(path.parent / "sub" / "b.jpg", ("one", "two")),
            CaptionRecord(absolute, ("abs",)),
        ]
        assert load_jsonl(path) == expected_default
        root = tmp_path / "imgs"
        records = load_jsonl(path, image_root=root)
        assert [r.image for r in records] == [root / "a.jpg", root / "sub" / "b.jpg", absolute]

    @pytest.mark.parametrize(
        "bad_line",
        [
            "{not json",
            json.dumps(["a.jpg", "caption"]),
            json.dumps({"caption": "no image"}),
            json.dumps({"image": "a.jpg"}),
            json.dumps({"image": "a.jpg", "caption": "x", "captions": ["y"]}),
            json.dumps({"image": "a.jpg", "captions": []}),
            json.dumps({"image": "a.jpg", "caption": 3}),
        ],
    )
    def test_malformed_line_number(self, tmp_path: Path, bad_line: str) -> None:
        good = json.dumps({"image": "a.jpg", "caption": "fine"})
        path = tmp_path / "bad.jsonl"
        path.write_text(f"{good}\n\n{bad_line}\n", encoding="utf-8")
        with pytest.raises(ValueError, match=r"bad\.jsonl: line 3"):
            load_jsonl(path)


class TestNameToCaptions:
    def test_load(self, tmp_path: Path) -> None:
        data = {"x.jpg": ["a green tree", "tree that is green"], "y.jpg": [], "z.jpg": ["sky"]}
        path = write_json(tmp_path / "mapping.json", data)
        assert load_name_to_captions(path, tmp_path / "im") == [
            CaptionRecord(tmp_path / "im" / "x.jpg", ("a green tree", "tree that is green")),
            CaptionRecord(tmp_path / "im" / "z.jpg", ("sky",)),
        ]

    def test_malformed_value(self, tmp_path: Path) -> None:
        path = write_json(tmp_path / "mapping.json", {"x.jpg": ["ok"], "y.jpg": "not a list"})
        with pytest.raises(ValueError, match=r"mapping\.json: entry 'y\.jpg'"):
            load_name_to_captions(path, tmp_path)

    def test_not_an_object(self, tmp_path: Path) -> None:
        path = write_json(tmp_path / "mapping.json", [["x.jpg", "cap"]])
        with pytest.raises(ValueError, match="JSON object"):
            load_name_to_captions(path, tmp_path)


class TestNameCaptionPairs:
    def test_load_and_merge(self, tmp_path: Path) -> None:
        data = [["p.jpg", "a yellow bus"], ["q.jpg", "a man in black"], ["p.jpg", "yellow bus"]]
        path = write_json(tmp_path / "pairs.json", data)
        assert load_name_caption_pairs(path, tmp_path) == [
            CaptionRecord(tmp_path / "p.jpg", ("a yellow bus", "yellow bus")),
            CaptionRecord(tmp_path / "q.jpg", ("a man in black",)),
        ]

    @pytest.mark.parametrize("entry", [["p.jpg"], ["p.jpg", "c", "extra"], "p.jpg", [3, "c"]])
    def test_malformed_entry(self, tmp_path: Path, entry: object) -> None:
        path = write_json(tmp_path / "pairs.json", [["ok.jpg", "fine"], ["ok.jpg", "x"], entry])
        with pytest.raises(ValueError, match=r"pairs\.json: entry 2"):
            load_name_caption_pairs(path, tmp_path)


class TestAutoDetection:
    def make_files(self, tmp_path: Path) -> dict[str, Path]:
        # Misleading extensions on purpose: detection must read the content.
        jsonl = tmp_path / "jsonl_as.json"
        jsonl.write_text(
            json.dumps({"image": "a.jpg", "caption": "x"})
            + "\n"
            + json.dumps({"image": "b.jpg", "caption": "y"})
            + "\n",
            encoding="utf-8",
        )
        single = tmp_path / "one_line.jsonl"
        single.write_text(json.dumps({"image": "a.jpg", "captions": ["x", "z"]}), encoding="utf-8")
        return {
            "coco": write_json(tmp_path / "coco_as.jsonl", COCO),
            "jsonl": jsonl,
            "jsonl_single": single,
            "name-to-captions": write_json(tmp_path / "mapping.txt", {"a.jpg": ["x"]}),
            "name-caption-pairs": write_json(tmp_path / "pairs.dat", [["a.jpg", "x"]]),
        }

    def test_detect(self, tmp_path: Path) -> None:
        files = self.make_files(tmp_path)
        for expected, path in files.items():
            assert detect_caption_format(path) == expected.removesuffix("_single")

    def test_auto_matches_explicit_loader(self, tmp_path: Path) -> None:
        files = self.make_files(tmp_path)
        root = tmp_path / "root"
        assert load_caption_records(files["coco"], image_root=root) == load_coco_captions(
            files["coco"], root
        )
        assert load_caption_records(files["jsonl"], image_root=root) == load_jsonl(
            files["jsonl"], root
        )
        assert load_caption_records(
            files["name-to-captions"], image_root=root
        ) == load_name_to_captions(files["name-to-captions"], root)
        assert load_caption_records(
            files["name-caption-pairs"], image_root=root
        ) == load_name_caption_pairs(files["name-caption-pairs"], root)
        # Default image root: the caption file's folder.
        assert load_caption_records(files["name-caption-pairs"]) == [
            CaptionRecord(tmp_path / "a.jpg", ("x",))
        ]

    def test_explicit_format_overrides_detection(self, tmp_path: Path) -> None:
        files = self.make_files(tmp_path)
        with pytest.raises(ValueError, match="images"):
            load_caption_records(files["name-to-captions"], format="coco")

    def test_unknown_format(self, tmp_path: Path) -> None:
        files = self.make_files(tmp_path)
        with pytest.raises(ValueError, match="'yaml'.*'name-to-captions', 'name-caption-pairs'"):
            load_caption_records(files["name-to-captions"], format="yaml")  # type: ignore[arg-type]

    @pytest.mark.parametrize("content", ["just some text\n", "42", "[1, 2\n"])
    def test_undetectable(self, tmp_path: Path, content: str) -> None:
        path = tmp_path / "mystery.json"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=r"mystery\.json"):
            load_caption_records(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="nope.json"):
            load_caption_records(tmp_path / "nope.json")
