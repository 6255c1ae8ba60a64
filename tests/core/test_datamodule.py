"""Tests for chromalab.data.collate and chromalab.data.datamodule."""

from __future__ import annotations

import io
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import webdataset as wds
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch.utils.data import BatchSampler, default_collate

from chromalab.color import rgb_to_lab
from chromalab.data.collate import add_lab, collate_skip_bad
from chromalab.data.datamodule import (
    ColorizationDataModule,
    EpochShuffleSampler,
    ResumableDataLoader,
)
from chromalab.data.folders import ImageFolderDataset


def colour_array(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 215, size=(1, 1, 3))
    noise = rng.normal(0, 30, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i in range(6):
        save(root / f"class{i % 2}" / f"img{i}.png", colour_array(24 + 2 * i, 30, i))
    return root


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    root = tmp_path / "mixed"
    for i in range(3):
        save(root / f"good{i}.png", colour_array(20, 20, i))
    save(root / "grey.png", np.repeat(colour_array(20, 20, 9)[..., :1], 3, axis=-1))
    (root / "notes.jpg").write_text("a text file with an image suffix")
    truncated = save(root / "cut.jpg", colour_array(48, 48, 5))
    truncated.write_bytes(truncated.read_bytes()[:250])
    return root


def batches(loader, limit: int | None = None) -> list[dict]:
    out = []
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        out.append(batch)
    return out


def assert_batches_equal(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


def differ(first: list[dict], second: list[dict]) -> bool:
    return any(not torch.equal(a["rgb"], b["rgb"]) for a, b in zip(first, second, strict=True))


class TestCollate:
    def test_drops_none_and_counts(self) -> None:
        samples = [
            {"rgb": torch.rand(3, 4, 4), "caption": "a", "index": 0},
            None,
            {"rgb": torch.rand(3, 4, 4), "caption": "b", "index": 1},
            None,
        ]
        batch = collate_skip_bad(samples)
        reference = default_collate([samples[0], samples[2]])
        assert batch["skipped"] == 2
        assert torch.equal(batch["rgb"], reference["rgb"])
        assert batch["caption"] == ["a", "b"]
        assert torch.equal(batch["index"], torch.tensor([0, 1]))

    def test_all_bad(self) -> None:
        assert collate_skip_bad([None, None]) is None
        assert collate_skip_bad([None, None], keep_empty=True) == {"skipped": 2}

    def test_rejects_non_dict(self) -> None:
        with pytest.raises(TypeError, match="tuple"):
            collate_skip_bad([(torch.zeros(1),)])


class TestAddLab:
    def test_equals_rgb_to_lab(self) -> None:
        rgb = torch.rand(2, 3, 5, 7, dtype=torch.float64)
        batch = {"rgb": rgb, "caption": ["x", "y"]}
        out = add_lab(batch)
        lab = rgb_to_lab(rgb)
        assert out["l"].shape == (2, 1, 5, 7) and out["ab"].shape == (2, 2, 5, 7)
        assert torch.equal(out["l"], lab[:, :1])
        assert torch.equal(out["ab"], lab[:, 1:])
        assert out["caption"] == ["x", "y"]
        assert "l" not in batch  # the input batch is not modified

    def test_errors(self) -> None:
        with pytest.raises(KeyError, match="rgb"):
            add_lab({"l": torch.zeros(1, 1, 2, 2)})
        with pytest.raises(ValueError, match=r"\(3, 5, 5\)"):
            add_lab({"rgb": torch.rand(3, 5, 5)})
        with pytest.raises(TypeError, match="uint8"):
            add_lab({"rgb": torch.zeros(1, 3, 2, 2, dtype=torch.uint8)})


class TestEpochShuffleSampler:
    def test_permutations(self) -> None:
        data = list(range(20))
        sampler = EpochShuffleSampler(data, seed=3)
        epoch0 = list(sampler)
        assert sorted(epoch0) == data and epoch0 != data
        assert list(EpochShuffleSampler(data, seed=3)) == epoch0
        assert list(EpochShuffleSampler(data, seed=4)) != epoch0
        sampler.set_epoch(1)
        assert list(sampler) != epoch0
        sampler.set_epoch(0)
        assert list(sampler) == epoch0
        assert list(EpochShuffleSampler(data, shuffle=False)) == data

    def test_start_rotates_this_epoch_only(self) -> None:
        data = list(range(20))
        order = list(EpochShuffleSampler(data, seed=3))
        sampler = EpochShuffleSampler(data, seed=3, start=7)
        assert list(sampler) == order[7:] + order[:7]
        sampler.set_epoch(0)  # same epoch: still rotated
        assert list(sampler) == order[7:] + order[:7]
        sampler.set_epoch(1)
        assert sampler.start == 0
        assert sorted(sampler) == data and list(sampler) != order
        with pytest.raises(ValueError, match="start"):
            EpochShuffleSampler(data, start=-1)

    @pytest.mark.parametrize("world", [1, 2, 3])
    def test_rotation_resumes_every_ddp_shard(self, world: int) -> None:
        """Rotating by the samples consumed on all ranks gives each rank its next batches."""
        n, batch = 47, 4

        def batches(start: int, rank: int) -> list[list[int]]:
            inner = EpochShuffleSampler(list(range(n)), seed=5)
            inner.set_epoch(2)
            inner.start = start
            sampler = (
                inner
                if world == 1
                else DistributedSamplerWrapper(inner, num_replicas=world, rank=rank, shuffle=False)
            )
            return list(BatchSampler(sampler, batch, drop_last=True))

        for rank in range(world):
            full = batches(0, rank)
            assert len(full) == -(-n // world) // batch
            for done in range(len(full)):
                resumed = batches(done * batch * world, rank)
                assert resumed[: len(full) - done] == full[done:]

    @pytest.mark.parametrize("world", [2, 3])
    def test_loader_resumes_every_rank_under_lightnings_shuffling_wrapper(self, world: int):
        # Lightning wraps every training sampler in a DistributedSamplerWrapper with shuffle=True
        n, batch, epoch = 47, 4, 2

        def batches(rank: int, state: dict | None = None) -> list[list[int]]:
            order = EpochShuffleSampler(list(range(n)), seed=5)
            wrapper = DistributedSamplerWrapper(order, num_replicas=world, rank=rank, seed=9)
            loader = ResumableDataLoader(
                list(range(n)), sampler=wrapper, order=order, batch_size=batch, drop_last=True
            )
            if state is None:
                order.set_epoch(epoch)
            else:
                loader.load_state_dict(state)
                order.set_epoch(epoch + 7)  # a trainer's number is not trusted after a resume
            return [b.tolist() for b in loader]

        full = {rank: batches(rank) for rank in range(world)}
        seen = sorted(i for rank in range(world) for b in full[rank] for i in b)
        assert len(seen) == world * (-(-n // world) // batch) * batch
        assert len(seen) - len(set(seen)) <= -n % world  # disjoint but for the end padding
        for rank in range(world):
            for done in range(len(full[rank])):
                state = {"epoch": epoch, "batches": done}
                # (a trainer stops at the epoch's length, before the rotated-in head)
                assert batches(rank, state)[: len(full[rank]) - done] == full[rank][done:]

    def test_groups_stay_together(self) -> None:
        data = list(range(21))
        # one item per group: the same draw as without the option (resumes stay exact)
        assert list(EpochShuffleSampler(data, seed=3, group=1)) == list(
            EpochShuffleSampler(data, seed=3)
        )
        order = list(EpochShuffleSampler(data, seed=3, group=2))
        assert sorted(order) == data and order != data
        at = {index: position for position, index in enumerate(order)}
        # every pair of neighbours 2k, 2k + 1 is drawn together, 2k first (20 is a group alone)
        assert all(at[2 * k + 1] == at[2 * k] + 1 for k in range(10))
        assert len(order) == 21
        assert list(EpochShuffleSampler(data, seed=3, group=3)) != order
        with pytest.raises(ValueError, match="group"):
            EpochShuffleSampler(data, group=0)

    def test_forwards_epoch_to_dataset(self, photo_folder: Path) -> None:
        dataset = ImageFolderDataset(photo_folder, image_size=8, train=True)
        EpochShuffleSampler(dataset).set_epoch(4)
        assert dataset.epoch == 4


class TestCapShapesSource:
    @staticmethod
    def make(seed: int) -> ColorizationDataModule:
        dm = ColorizationDataModule(
            source="capshapes",
            seed=seed,
            batch_size=4,
            capshapes_train_length=16,
            capshapes_val_length=8,
            capshapes_size=16,
        )
        dm.setup("fit")
        return dm

    def test_reproducible_batches(self) -> None:
        first = batches(self.make(0).train_dataloader(), 3)
        assert_batches_equal(first, batches(self.make(0).train_dataloader(), 3))
        other = batches(self.make(1).train_dataloader(), 3)
        assert differ(first, other)
        assert [b["caption"] for b in first] != [b["caption"] for b in other]
        assert first[0]["masks"].shape == (4, 4, 16, 16)
        assert first[0]["skipped"] == 0

    def test_splits_use_different_scenes(self) -> None:
        dm = self.make(0)
        dm.setup("test")
        train_rgb = torch.stack([dm.train_dataset[i]["rgb"] for i in range(8)])
        val = next(iter(dm.val_dataloader()))
        test = next(iter(dm.test_dataloader()))
        assert not torch.equal(val["rgb"], train_rgb[:4])
        assert not torch.equal(val["rgb"], test["rgb"])
        assert torch.equal(val["index"], torch.arange(4))  # evaluation is in order

    def test_setup_without_stage_builds_every_split(self) -> None:
        dm = ColorizationDataModule(
            capshapes_train_length=8, capshapes_val_length=4, capshapes_size=16, batch_size=4
        )
        dm.setup()
        assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (8, 4, 4)
        test, predict = next(iter(dm.test_dataloader())), next(iter(dm.predict_dataloader()))
        assert torch.equal(test["rgb"], predict["rgb"])  # capshapes predicts on the test scenes

    def test_scene_options_for_all_splits_and_for_training(self) -> None:
        dm = ColorizationDataModule(
            capshapes_train_length=8,
            capshapes_val_length=4,
            capshapes_size=16,
            capshapes_options={"max_objects": 3, "level_probs": [0, 0, 1]},
            capshapes_train_options={"max_objects": 1, "canonical_prob": 0.0},
        )
        dm.setup("fit")
        train, val = dm.train_dataset, dm.val_dataset
        assert (train.max_objects, val.max_objects) == (1, 3)
        assert train.level_probs == val.level_probs == (0.0, 0.0, 1.0)
        assert (train.canonical_prob, val.canonical_prob) == (0.0, 0.8)
        assert train[0]["masks"].shape[0] == 1 and val[0]["masks"].shape[0] == 3

    def test_crowded_training_scenes(self) -> None:
        dm = ColorizationDataModule(
            capshapes_train_length=8,
            capshapes_val_length=4,
            capshapes_size=32,
            capshapes_train_options={"min_objects": 4, "shared_noun_prob": 0.5},
        )
        dm.setup("fit")
        assert (dm.train_dataset.min_objects, dm.val_dataset.min_objects) == (4, 1)
        assert (dm.train_dataset.shared_noun_prob, dm.val_dataset.shared_noun_prob) == (0.5, 0.0)
        assert all((dm.train_dataset[i]["color_ids"] >= 0).sum() >= 3 for i in range(8))

    def test_counterfactual_pairs_share_a_batch(self) -> None:
        dm = ColorizationDataModule(
            capshapes_train_length=32,
            capshapes_val_length=4,
            capshapes_size=16,
            batch_size=4,
            capshapes_train_options={"counterfactual_pairs": True},
        )
        dm.setup("fit")
        assert not dm.val_dataset.counterfactual_pairs
        for batch in batches(dm.train_dataloader(), 3):
            index = batch["index"].tolist()
            assert [i // 2 for i in index[0::2]] == [i // 2 for i in index[1::2]]
            assert [i % 2 for i in index] == [0, 1, 0, 1]
            assert torch.equal(batch["masks"][0::2], batch["masks"][1::2])  # same scenes
        dm.batch_size = 3
        with pytest.raises(ValueError, match="multiple of 2"):
            dm.train_dataloader()

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"max_object": 2}, "unknown CapShapes options"),
            ({"max_objects": 0}, "max_objects must be"),
            ({"canonical_prob": 2.0}, "canonical_prob must be"),
            ({"min_objects": 5}, "min_objects must be"),
            ({"shared_noun_prob": 1.5}, "shared_noun_prob must be"),
        ],
    )
    def test_bad_scene_options_are_refused_early(self, options, message) -> None:
        with pytest.raises(ValueError, match=f"capshapes_train_options: {message}"):
            ColorizationDataModule(capshapes_train_options=options)


class TestFolderSource:
    @staticmethod
    def make(root: Path, seed: int = 0, **kwargs) -> ColorizationDataModule:
        dm = ColorizationDataModule(
            source="folder", train_path=str(root), image_size=12, batch_size=2, seed=seed, **kwargs
        )
        dm.setup("fit")
        return dm

    @staticmethod
    def epochs(dm: ColorizationDataModule, count: int) -> list[list[dict]]:
        loader = dm.train_dataloader()
        out = []
        for epoch in range(count):
            loader.sampler.set_epoch(epoch)  # what Lightning's fit loop does
            out.append(batches(loader))
        return out

    def test_reproducible_batches(self, photo_folder: Path) -> None:
        first = self.epochs(self.make(photo_folder), 2)
        second = self.epochs(self.make(photo_folder), 2)
        for a, b in zip(first, second, strict=True):
            assert_batches_equal(a, b)
        assert differ(first[0], first[1])
        other = self.epochs(self.make(photo_folder, seed=1), 1)
        assert differ(first[0], other[0])
        assert [b["path"] for b in first[0]] != [b["path"] for b in other[0]]

    def test_persistent_workers_see_the_epoch(self, photo_folder: Path) -> None:
        in_process = self.epochs(self.make(photo_folder), 2)
        with_workers = self.epochs(self.make(photo_folder, num_workers=1), 2)
        for a, b in zip(in_process, with_workers, strict=True):
            assert_batches_equal(a, b)

    def test_bad_files_skipped_and_counted(self, bad_folder: Path) -> None:
        dm = self.make(bad_folder)
        delivered = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
        good = [b for b in delivered if b is not None]
        paths = sorted(Path(p).name for b in good for p in b["path"])
        assert paths == ["good0.png", "good1.png", "good2.png"]
        assert dm.skipped_samples == 3
        assert dm.train_dataset.skipped == {"grayscale": 1, "unreadable": 2}
        for batch in good:
            assert torch.equal(batch["l"], rgb_to_lab(batch["rgb"])[:, :1])
        assert dm.state_dict() == {"skipped_samples": 3}

    def test_all_bad_batch_becomes_none(self, photo_folder: Path) -> None:
        dm = self.make(photo_folder)
        assert dm.on_after_batch_transfer({"skipped": 2}, 0) is None
        assert dm.on_after_batch_transfer(None, 0) is None
        assert dm.skipped_samples == 2

    def test_eval_center_crops_in_order(self, photo_folder: Path) -> None:
        dm = ColorizationDataModule(
            source="folder",
            train_path=str(photo_folder),
            val_path=str(photo_folder),
            image_size=12,
            eval_image_size=16,
            batch_size=2,
            eval_batch_size=3,
        )
        dm.setup("fit")
        val = batches(dm.val_dataloader())
        assert [len(b["path"]) for b in val] == [3, 3]
        reference = ImageFolderDataset(photo_folder, image_size=16)
        assert [p for b in val for p in b["path"]] == [str(p) for p in reference.paths]
        assert torch.equal(val[0]["rgb"][0], reference[0]["rgb"])

    def test_missing_paths(self, photo_folder: Path) -> None:
        with pytest.raises(ValueError, match="train_path"):
            ColorizationDataModule(source="folder").setup("fit")
        with pytest.raises(ValueError, match="test_path"):
            ColorizationDataModule(source="folder", train_path=str(photo_folder)).setup("test")
        with pytest.raises(ValueError, match="predict_path"):
            ColorizationDataModule(source="folder").setup("predict")
        with pytest.raises(ValueError, match="source"):
            ColorizationDataModule(source="imagenet")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="batch_size"):
            ColorizationDataModule(batch_size=0)
        dm = ColorizationDataModule(source="folder", train_path=str(photo_folder))
        dm.setup("fit")
        assert dm.val_dataloader() == []


class RecordingModule(pl.LightningModule):
    """A one-parameter model that records what each training step receives."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, list[str], torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        if batch is None:
            return None
        torch.testing.assert_close(batch["ab"], rgb_to_lab(batch["rgb"])[:, 1:])
        self.seen.append((self.current_epoch, list(batch["path"]), batch["rgb"].clone()))
        return (self.weight - batch["ab"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TestLightningFit:
    def test_fit_uses_seeded_epochs(self, photo_folder: Path, bad_folder: Path) -> None:
        for sub in ("good0.png", "grey.png", "notes.jpg"):
            (photo_folder / sub).write_bytes((bad_folder / sub).read_bytes())
        dm = ColorizationDataModule(
            source="folder", train_path=str(photo_folder), image_size=12, batch_size=3, seed=2
        )
        model = RecordingModule()
        trainer = pl.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=dm)
        reference = ImageFolderDataset(photo_folder, image_size=12, train=True, seed=2)
        for epoch in (0, 1):
            sampler = EpochShuffleSampler(reference, seed=2)
            sampler.set_epoch(epoch)
            expected = [str(reference.paths[i]) for i in sampler]
            expected = [p for p in expected if Path(p).name not in {"grey.png", "notes.jpg"}]
            seen = [p for e, paths, _ in model.seen if e == epoch for p in paths]
            assert seen == expected
            # Crops of this epoch are those of the dataset at this epoch.
            reference.set_epoch(epoch)
            for _, paths, rgb in (s for s in model.seen if s[0] == epoch):
                for path, image in zip(paths, rgb, strict=True):
                    item = reference[reference.paths.index(Path(path))]
                    assert torch.equal(image, item["rgb"])
        assert dm.skipped_samples == 4  # two bad files, two epochs


class IndexRecorder(pl.LightningModule):
    """Records the CapShapes indices of every training batch, with the epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, list[int]]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch["index"].tolist()))
        return (self.weight - batch["ab"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TestResumePosition:
    """A run resumed from a mid-epoch checkpoint sees the batches of an uninterrupted one."""

    @staticmethod
    def run(root: Path, max_steps: int, ckpt_path: str | None = None) -> list:
        dm = ColorizationDataModule(
            source="capshapes",
            capshapes_size=16,
            image_size=16,
            capshapes_train_length=42,  # 10 whole batches of 4 a epoch, 2 scenes left over
            capshapes_val_length=4,
            batch_size=4,
            num_workers=1,  # workers prefetch from the sampler as soon as the loader is iterated
            seed=1,
        )
        model = IndexRecorder()
        trainer = pl.Trainer(
            max_steps=max_steps,
            accelerator="cpu",
            logger=False,
            limit_val_batches=0,
            callbacks=[ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return model.seen

    @pytest.mark.parametrize("stop", [13, 20])  # inside epoch 1; at the end of epoch 1
    def test_resume_continues_the_epoch(self, tmp_path: Path, stop: int) -> None:
        reference = self.run(tmp_path / "reference", 26)
        assert [epoch for epoch, _ in reference] == [0] * 10 + [1] * 10 + [2] * 6
        assert all(len(indices) == 4 for _, indices in reference)  # drop_last
        first = self.run(tmp_path / "run", stop)
        state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)
        position = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
        assert position == [{"epoch": (stop - 1) // 10, "batches": (stop - 1) % 10 + 1}]
        second = self.run(tmp_path / "run", 26, ckpt_path=str(tmp_path / "run" / "last.ckpt"))
        assert first + second == reference

    @pytest.mark.parametrize("stops", [(10, 20), (10, 13), (13, 20)])
    def test_resume_twice(self, tmp_path: Path, stops: tuple[int, int]) -> None:
        # Lightning 2.6 resumed at an epoch's end counts that epoch twice in the checkpoints it
        # writes next, so a second resume used to replay the previous epoch's order (10, 20)
        reference = self.run(tmp_path / "reference", 26)
        seen = self.run(tmp_path / "run", stops[0])
        for stop in (*stops[1:], 26):
            seen += self.run(tmp_path / "run", stop, ckpt_path=str(tmp_path / "run" / "last.ckpt"))
        assert [indices for _, indices in seen] == [indices for _, indices in reference]

    def test_webdataset_restarts_its_epoch(self, tmp_path: Path) -> None:
        """What the README promises for streams instead: the run goes on from the checkpoint's
        step, and the stream starts its epoch again."""
        pattern = write_shards(tmp_path / "shards", 2, 6)  # 12 samples: 3 batches of 4

        def run(root: Path, max_steps: int, ckpt_path: str | None = None):
            dm = ColorizationDataModule(
                source="webdataset", train_path=pattern, image_size=8, batch_size=4, seed=1
            )
            model = KeyRecorder()
            trainer = pl.Trainer(
                max_steps=max_steps,
                accelerator="cpu",
                logger=False,
                callbacks=[ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)],
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
            return model.seen, trainer.global_step

        reference, _ = run(tmp_path / "reference", 3)
        first, steps = run(tmp_path / "run", 2)
        second, steps = run(tmp_path / "run", 3, ckpt_path=str(tmp_path / "run" / "last.ckpt"))
        assert first == reference[:2] and steps == 3
        assert second == reference[:1]  # the epoch's first batch again, not its third


class KeyRecorder(IndexRecorder):
    """Records the sample keys of every training batch (streams have no indices)."""

    def training_step(self, batch, batch_idx):
        self.seen.append(sorted(batch["key"]))
        return (self.weight - batch["ab"].mean()) ** 2


def write_shards(root: Path, count: int, per_shard: int) -> str:
    root.mkdir()
    for shard in range(count):
        with wds.TarWriter(str(root / f"train-{shard}.tar")) as sink:
            for i in range(per_shard):
                buffer = io.BytesIO()
                Image.fromarray(colour_array(14, 18, shard * 100 + i)).save(buffer, format="PNG")
                sink.write({"__key__": f"{shard}_{i}", "png": buffer.getvalue(), "txt": f"c{i}"})
    return str(root / f"train-{{0..{count - 1}}}.tar")


class TestOtherSources:
    def test_captions(self, photo_folder: Path, tmp_path: Path) -> None:
        paths = sorted(photo_folder.rglob("*.png"))
        lines = [
            json.dumps({"image": str(p), "captions": [f"a{i}", f"b{i}"]})
            for i, p in enumerate(paths)
        ]
        lines.append(json.dumps({"image": "missing.png", "caption": "gone"}))
        records = tmp_path / "train.jsonl"
        records.write_text("\n".join(lines))
        dm = ColorizationDataModule(
            source="captions",
            train_path=str(records),
            val_path=str(records),
            image_size=8,
            batch_size=7,
        )
        dm.setup("fit")
        train = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
        assert len(train["caption"]) == 6 and train["skipped"] == 1
        assert train["l"].shape == (6, 1, 8, 8)
        val = next(iter(dm.val_dataloader()))
        assert val["caption"] == [f"a{i}" for i in range(6)]
        assert not dm.train_dataset.horizontal_flip  # captions may name sides

    def test_coco_layout_with_an_image_folder_per_split(self, tmp_path: Path) -> None:
        annotations = tmp_path / "annotations"
        annotations.mkdir()
        for split in ("train", "val"):
            folder = tmp_path / f"{split}2014"
            folder.mkdir()
            Image.fromarray(colour_array(8, 8, len(split))).save(folder / f"{split}.png")
            coco = {
                "images": [{"id": 1, "file_name": f"{split}.png"}],
                "annotations": [{"image_id": 1, "caption": f"a {split} image"}],
            }
            (annotations / f"captions_{split}2014.json").write_text(json.dumps(coco))
        dm = ColorizationDataModule(
            source="captions",
            train_path=str(annotations / "captions_train2014.json"),
            val_path=str(annotations / "captions_val2014.json"),
            predict_path=str(annotations / "captions_val2014.json"),
            image_root={"train": str(tmp_path / "train2014"), "val": str(tmp_path / "val2014")},
            image_size=8,
        )
        dm.setup("fit")
        dm.setup("predict")
        assert dm.train_dataset.records[0].image == tmp_path / "train2014" / "train.png"
        assert dm.val_dataset.records[0].image == tmp_path / "val2014" / "val.png"
        # no "predict" entry: relative to the caption file, as without image_root
        assert dm.predict_dataset.records[0].image == annotations / "val.png"
        assert next(iter(dm.val_dataloader()))["caption"] == ["a val image"]
        with pytest.raises(ValueError, match="image_root keys"):
            ColorizationDataModule(source="captions", image_root={"training": "x"})

    def test_webdataset(self, tmp_path: Path) -> None:
        pattern = write_shards(tmp_path / "shards", 2, 3)
        dm = ColorizationDataModule(
            source="webdataset",
            train_path=pattern,
            test_path=pattern,
            image_size=8,
            batch_size=4,
            shuffle_buffer=4,
        )
        dm.setup("fit")
        dm.setup("test")
        train = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
        assert sorted(k for b in train for k in b["key"]) == sorted(
            f"{s}_{i}" for s in range(2) for i in range(3)
        )
        assert train[0]["ab"].shape == (4, 2, 8, 8)
        test = next(iter(dm.test_dataloader()))
        assert test["key"] == ["0_0", "0_1", "0_2", "1_0"]
        assert test["caption"] == ["c0", "c1", "c2", "c0"]


class TestCommandLine:
    def test_jsonargparse_builds_the_module(self, photo_folder: Path) -> None:
        from jsonargparse import ArgumentParser

        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(ColorizationDataModule, "data")
        config = parser.parse_args(
            ["--data.source", "folder", "--data.train_path", str(photo_folder), "--data.seed", "3"]
        )
        dm = parser.instantiate(config).data
        assert isinstance(dm, ColorizationDataModule)
        assert (dm.source, dm.seed, dm.image_size) == ("folder", 3, 176)
        assert "where samples come from" in parser.format_help()  # argument docstrings
        with pytest.raises(Exception, match="source"):
            parser.parse_args(["--data.source", "imagenet"])
