"""What every paper package must pass, written once, as mixins of checks (the habit of
diffusers' pipeline tester mixins): each package's ``tests/<pkg>/test_package.py`` has a
``Test...`` class that declares its components in class attributes (``cli``, ``tiny_config``,
``module_class``, ``metric_keys``, ...), overrides the hooks it needs and inherits the checks.

* :class:`CLIChecks`: ``fit`` on the tiny config through the package's real CLI (a fast dev run
  per variant), ``validate``, ``test`` and ``predict``: metrics, and the module's own colours.
* :class:`DDPChecks`: 2 CPU processes (gloo) train and validate on disjoint shares of the data
  (gathered sample indices), and their metric counts add up to a single process's.
* :class:`ResumeChecks`: runs SIGKILLed at random moments resume to exactly the uninterrupted
  run's end (:func:`tests.training.check_exact_resume`).
* :class:`HubChecks`: ``save_pretrained`` / ``from_pretrained`` give back the same module.
* :class:`ColorizeChecks`: ``chromalab.colorize`` through the package's plug-in gives the
  module's own colours, from a checkpoint and from a hub folder alike.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI
from torch import Tensor
from torch.utils.data import default_collate

from chromalab.color import rgb_to_lab
from chromalab.data import CapShapes
from chromalab.io import from_pil, recombine, to_pil
from tests import ddp
from tests.training import check_exact_resume, fit, read_metrics, run_ddp


def perturbed(module: LightningModule, seed: int = 1) -> LightningModule:
    """``module`` in eval mode with every floating-point tensor moved by a little noise, so that
    no weight keeps its initial (often zero or one) value."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.01)
    return module.eval()


def scenes(count: int = 2, seed: int = 3) -> dict[str, Any]:
    """A batch of ``count`` 32-pixel CapShapes scenes (``rgb``, ``caption``, ``index``...) with
    their lightness ``l``."""
    data = CapShapes(length=count, size=32, seed=seed)
    batch = default_collate([data[i] for i in range(count)])
    return batch | {"l": rgb_to_lab(batch["rgb"])[:, :1]}


class PackageBase:
    """The declarations the checks share, and the one tiny fit they read."""

    #: the CLI's module (``run(args)`` in-process, ``python -m`` for DDP and kills)
    cli: ClassVar[str]
    #: arguments every command line of this class starts with (lcad: ``--stage NAME``)
    cli_args: ClassVar[tuple[str, ...]] = ()
    tiny_config: ClassVar[str]
    module_class: ClassVar[type[LightningModule]]

    def run(self, args: list[str]) -> LightningCLI:
        """The package's CLI, in this process, with :attr:`cli_args` first."""
        return importlib.import_module(self.cli).run([*self.cli_args, *args])

    def command(self, *args: str) -> list[str]:
        """The command line of the package's CLI in a process of its own."""
        return [sys.executable, "-m", self.cli, *self.cli_args, *args]

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """One tiny fit shared by the read-only checks of the class."""
        argv, sys.argv = sys.argv, [cls.cli]  # class fixtures run before conftest's argv fix
        try:
            return fit(cls().run, cls.tiny_config, tmp_path_factory.mktemp(cls.__name__))
        finally:
            sys.argv = argv

    def module_colors(self, module: LightningModule, l: Tensor, captions: list[str]) -> Tensor:
        """The module's own ab for lightness ``l`` ``(B, 1, S, S)`` (captions one per image):
        what the plug-in, a restored copy and ``predict`` must give."""
        return module.colorize(l, captions)

    def module_output(self, module: LightningModule, batch: dict[str, Any]) -> Tensor:
        """What a module computes from a batch (``rgb``, ``l``, ``caption``, ``index``): by
        default its RGB colorization of the batch's lightness."""
        return recombine(batch["l"], self.module_colors(module, batch["l"], batch["caption"]))


class CLIChecks(PackageBase):
    """``fit`` / ``validate`` / ``test`` / ``predict`` through the package's real CLI."""

    #: ``fit --trainer.fast_dev_run`` runs: name -> extra arguments (a model's variants)
    fast_dev_run_variants: ClassVar[dict[str, tuple[str, ...]]] = {"default": ()}
    #: metrics ``validate`` and ``test`` log (without the ``val/`` or ``test/`` prefix)
    metric_keys: ClassVar[tuple[str, ...]]
    #: shape of every entry of the first prediction batch
    prediction_shapes: ClassVar[dict[str, tuple[int, ...]]]

    def check_metrics(self, metrics: dict[str, float], stage: str) -> None:
        """The package's bounds on the logged ``stage/...`` metrics."""

    def check_prediction(self, prediction: dict[str, Tensor]) -> None:
        """The package's checks of a prediction batch beyond shapes and colours."""

    def check_variant(self, module: LightningModule, variant: tuple[str, ...]) -> None:
        """The package's check that a variant's arguments built the model they name."""

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "variant" in metafunc.fixturenames:
            variants = self.fast_dev_run_variants
            metafunc.parametrize("variant", list(variants.values()), ids=list(variants))

    def test_fast_dev_run(self, variant: tuple[str, ...]) -> None:
        cli = self.run(["fit", "--config", self.tiny_config, "--trainer.fast_dev_run", "true",
                        *variant])  # fmt: skip
        assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
        self.check_variant(cli.model, variant)

    def test_fit_validate_test_predict(self, fitted: Path, tmp_path: Path) -> None:
        """The fitted checkpoint rebuilds its module without arguments (state equal to the
        file's), validates and tests with finite metrics, and predicts the module's colours."""
        module = self.module_class.load_from_checkpoint(fitted, map_location="cpu").eval()
        state = torch.load(fitted, map_location="cpu", weights_only=True)["state_dict"]
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[key]), key
        common = ["--config", self.tiny_config, "--ckpt_path", str(fitted),
                  "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
        for sub, stage in (("validate", "val"), ("test", "test")):
            logged = self.run([sub, *common]).trainer.callback_metrics
            metrics = {k: float(v) for k, v in logged.items() if k.startswith(f"{stage}/")}
            for key in self.metric_keys:
                assert f"{stage}/{key}" in metrics, (key, sorted(metrics))
                assert torch.isfinite(torch.tensor(metrics[f"{stage}/{key}"])), (key, metrics)
            self.check_metrics(metrics, stage)
        cli = self.run(["predict", *common])
        first = cli.trainer.predict_loop.predictions[0]
        assert {k: tuple(v.shape) for k, v in first.items()} == self.prediction_shapes
        assert first["rgb"].min() >= 0 and first["rgb"].max() <= 1
        # the colours: those of the restored module on the same (first) batch
        data = cli.datamodule
        batch = data.on_after_batch_transfer(next(iter(data.predict_dataloader())), 0)
        with torch.no_grad():
            expected = self.module_output(module, batch)
        torch.testing.assert_close(first["rgb"], expected, rtol=0, atol=1e-4)
        assert first["rgb"].std(dim=(0, 2, 3)).max() > 1e-3  # not one flat colour
        self.check_prediction(first)


class DDPChecks(PackageBase):
    """2 CPU processes under DDP (gloo) against one process."""

    #: training and validation scenes of the tiny config (each seen once by one rank)
    train_scenes: ClassVar[int]
    val_scenes: ClassVar[int]
    #: logged metrics whose DDP value must equal the single process's
    ddp_metric_keys: ClassVar[tuple[str, ...]]
    #: tolerances: the ranks' summed metric states, the logged (synced) metrics
    ddp_states_rel: ClassVar[float] = 1e-9
    ddp_metrics_abs: ClassVar[float] = 1e-5

    def check_ddp_checkpoint(self, ckpt: Path) -> None:
        """What the ranks built together at fit start (a prior, a vocabulary), in ``ckpt``."""

    def check_validation_counts(self, states: dict[str, list[float]]) -> None:
        """The single process's summed metric states (counts behind the logged ratios)."""

    def test_ddp_ranks_split_the_data_and_sum_their_counts(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One DDP fit and one DDP validate (and a single-process validate): each rank's
        training and validation samples are its own and together the whole set; the ranks'
        metric counts add up to the single process's, so the synced metrics are equal."""
        ddp.importable_env(monkeypatch)
        train = tmp_path / "train"
        run_ddp(self.command, "fit", "--config", self.tiny_config,
                f"--trainer.default_root_dir={train}", *ddp.recorder_args(train / "samples"),
                cwd=tmp_path)  # fmt: skip
        ranks = ddp.read_ranks(train / "samples", 2)
        ddp.assert_partition([r["train"] for r in ranks], range(self.train_scenes))
        ckpt = sorted((train / "checkpoints").glob("*.ckpt"))[-1]
        self.check_ddp_checkpoint(ckpt)
        common = ["validate", "--config", self.tiny_config, "--ckpt_path", str(ckpt)]
        single, two = tmp_path / "single", tmp_path / "ddp"
        self.run([*common, *ddp.logged_args(single), *ddp.recorder_args(single / "samples")])
        run_ddp(self.command, *common, *ddp.logged_args(two),
                *ddp.recorder_args(two / "samples"), cwd=tmp_path)  # fmt: skip
        [one] = ddp.read_ranks(single / "samples", 1)
        ranks = ddp.read_ranks(two / "samples", 2)
        assert sorted(one["val"]) == list(range(self.val_scenes))
        ddp.assert_partition([r["val"] for r in ranks], range(self.val_scenes))
        ddp.assert_summed_states(ranks, one, rel=self.ddp_states_rel)
        self.check_validation_counts(one["val_states"])
        logged_one, logged_two = read_metrics(single), read_metrics(two)
        for key in self.ddp_metric_keys:
            assert logged_two[key] == pytest.approx(logged_one[key], abs=self.ddp_metrics_abs), key


class ResumeChecks(PackageBase):
    """Exact resume after SIGKILLs at random moments (seed printed; replay it with
    ``CHROMALAB_RESUME_SEED``)."""

    def check_resumed(self, final: dict[str, Any]) -> None:
        """The package's own entries of the resumed run's last checkpoint."""

    def test_exact_resume_after_kills_at_random_moments(self, tmp_path: Path) -> None:
        # one kill of each moment (random steps, logged with the seed), workers 0 and 2
        check = check_exact_resume(self.command, self.tiny_config, tmp_path, kills=3)
        self.check_resumed(check.final)

    @pytest.mark.slow
    def test_exact_resume_after_many_kills(self, tmp_path: Path) -> None:
        check = check_exact_resume(self.command, self.tiny_config, tmp_path, kills=9)
        self.check_resumed(check.final)

    @pytest.mark.slow
    def test_exact_resume_after_kills_under_ddp(self, tmp_path: Path) -> None:
        check = check_exact_resume(self.command, self.tiny_config, tmp_path, kills=3, ddp=True)
        self.check_resumed(check.final)


class HubChecks(PackageBase):
    """``save_pretrained`` / ``from_pretrained`` (config.json + model.safetensors, no pickle)."""

    #: constructor arguments over the tiny config's (e.g. an ``init_from`` that does not
    #: exist: the restored module must not try to read it again)
    hub_overrides: ClassVar[dict[str, Any]] = {}

    def tiny_module(self) -> LightningModule:
        """The module the tiny config builds (through the CLI's own parser, so nested
        arguments resolve as on the command line), with :attr:`hub_overrides`."""
        model = yaml.safe_load(Path(self.tiny_config).read_text())["model"]
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(self.module_class, "model", fail_untyped=False,
                                   sub_configs=True)  # fmt: skip
        config = parser.parse_object({"model": model | self.hub_overrides})
        return parser.instantiate(config).model

    def test_save_and_load_give_the_same_module(self, tmp_path: Path) -> None:
        module = perturbed(self.tiny_module())
        module.save_pretrained(tmp_path / "weights")
        files = sorted(p.name for p in (tmp_path / "weights").iterdir())
        assert "config.json" in files and "model.safetensors" in files
        assert not [f for f in files if f.endswith((".bin", ".pt", ".ckpt", ".pth"))]  # no pickle
        loaded = type(module).from_pretrained(tmp_path / "weights")
        assert loaded.restored and not loaded.training
        same = lambda h: json.loads(json.dumps(dict(h)))  # noqa: E731  (tuples come back as lists)
        assert same(loaded.hparams) == same(module.hparams)
        theirs = loaded.state_dict()
        assert theirs.keys() == module.state_dict().keys()
        for key, value in module.state_dict().items():
            assert torch.equal(theirs[key], value), key
        batch = scenes()
        with torch.no_grad():
            ours = self.module_output(module, batch)
            torch.testing.assert_close(self.module_output(loaded, batch), ours, rtol=0, atol=0)
        # fit keeps the loaded weights: no init_from / earlier stage is read over them
        loaded.setup("fit")
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, theirs[key]), key


class ColorizeChecks(PackageBase):
    """``chromalab.colorize`` through the package's ``chromalab.models`` plug-in."""

    #: the plug-in's entry-point name
    plugin: ClassVar[str]
    #: plug-in options besides the weights (lcad: its sampling)
    colorize_options: ClassVar[dict[str, Any]] = {}
    #: two captions that must give different colours (``None``: a model without captions)
    caption_pair: ClassVar[tuple[str, str] | None] = None

    def test_colorize_through_the_plugin(self, fitted: Path, tmp_path: Path) -> None:
        """Out come the module's own colours joined with the photo's lightness, at the photo's
        size; captions change them; a ``save_pretrained`` folder gives what the checkpoint
        gives."""
        from chromalab import colorize
        from chromalab.models import available_models

        assert self.plugin in available_models()
        item = scenes(1)
        image = to_pil(item["rgb"][0])
        l = rgb_to_lab(from_pil(image)[None])[:, :1]  # the 8-bit photo's lightness
        caption = item["caption"][0] if self.caption_pair else None
        options = {"model": self.plugin, "size": 32, "output": "pt", "device": "cpu",
                   **self.colorize_options}  # fmt: skip
        out = colorize(image, ckpt=str(fitted), caption=caption, **options)
        module = self.module_class.load_from_checkpoint(fitted, map_location="cpu").eval()
        with torch.no_grad():
            expected = recombine(l, self.module_colors(module, l, [caption]))[0]
        assert out.shape == (3, 32, 32)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)
        # a photo of another shape keeps its size and its lightness
        photo = image.resize((45, 30))
        wide = colorize(photo, ckpt=str(fitted), caption=caption, **options)
        assert wide.shape == (3, 30, 45)
        lightness = rgb_to_lab(wide[None])[0, 0] - rgb_to_lab(from_pil(photo)[None])[0, 0]
        assert lightness.abs().mean() < 1.0
        if self.caption_pair is not None:
            first, second = (
                colorize(image, ckpt=str(fitted), caption=c, **options) for c in self.caption_pair
            )
            assert not torch.equal(first, second)
            with pytest.raises(ValueError, match="caption"):
                colorize(image, ckpt=str(fitted), **options)
        # the hub round trip of the fitted module, through the plug-in
        module.save_pretrained(tmp_path / "weights")
        again = colorize(image, weights=str(tmp_path / "weights"), caption=caption, **options)
        torch.testing.assert_close(again, out, rtol=0, atol=0)


class PackageChecks(ResumeChecks, DDPChecks, ColorizeChecks, HubChecks, CLIChecks):
    """The five checks every paper package passes (module notes); pytest runs them in the
    reverse order of the bases: the quick ones first."""
