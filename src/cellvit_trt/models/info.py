"""ModelInfo: what a checkpoint says about its model (classes, colours, magnification, normalisation).

Also the mapping between a CellViTSpec and the checkpoint `config` / `arch`:
- "CellViT256": the HIPT ViT-256 model; "CellViTSAM": `config.model.backbone` in SAM-B/L/H (upstream's).
- "CellViTCustom" (this package): any other spec (e.g. "tiny"); every number is in `config.model.*`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellvit_trt import classes
from cellvit_trt.errors import CheckpointError, ConfigError
from cellvit_trt.models.flat_config import get
from cellvit_trt.models.registry import ENCODERS, variant_spec
from cellvit_trt.models.spec import CellViTSpec, DecoderDims, EncoderSpec

ARCH_VIT256 = "CellViT256"
ARCH_SAM = "CellViTSAM"
ARCH_CUSTOM = "CellViTCustom"
ARCHS = (ARCH_VIT256, ARCH_SAM, ARCH_CUSTOM)
SAM_BACKBONES = ("SAM-B", "SAM-L", "SAM-H")
DEFAULT_MAGNIFICATION = 40  # PanNuke and all public CellViT checkpoints are 40x (0.25 mpp)
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a CellViT model; `nuclei_names[i]`, `nuclei_colors[i]` are type id i's (0 = background)."""

    arch: str
    variant: str
    spec: CellViTSpec
    nuclei_names: tuple[str, ...]
    nuclei_colors: tuple[tuple[int, int, int], ...]
    tissue_names: tuple[str, ...]
    magnification: int = DEFAULT_MAGNIFICATION
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    mixed_precision: bool = False
    sha256: str | None = None
    path: str | None = None
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_nuclei_classes(self) -> int:
        return self.spec.num_nuclei_classes

    @property
    def num_tissue_classes(self) -> int:
        return self.spec.num_tissue_classes

    @property
    def regression_loss(self) -> bool:
        return self.spec.regression_loss

    @property
    def embed_dim(self) -> int:
        return self.spec.encoder.embed_dim

    def to_metadata(self) -> dict[str, Any]:
        """JSON-ready summary (for ONNX/engine metadata and sidecars)."""
        return {
            "arch": self.arch,
            "variant": self.variant,
            "embed_dim": self.embed_dim,
            "num_nuclei_classes": self.num_nuclei_classes,
            "num_tissue_classes": self.num_tissue_classes,
            "nuclei_names": list(self.nuclei_names),
            "nuclei_colors": [list(c) for c in self.nuclei_colors],
            "tissue_names": list(self.tissue_names),
            "magnification": self.magnification,
            "mean": list(self.mean),
            "std": list(self.std),
            "regression_loss": self.regression_loss,
            "mixed_precision": self.mixed_precision,
            "checkpoint_sha256": self.sha256,
        }


def arch_for(spec: CellViTSpec) -> str:
    """The `arch` a checkpoint of this spec gets: upstream's names only where upstream can load the file."""
    if spec.name in ENCODERS and spec.name != "tiny":
        if (
            variant_spec(spec.name, spec.num_nuclei_classes, spec.num_tissue_classes, spec.regression_loss)
            == spec
        ):
            return ARCH_VIT256 if spec.name == "CellViT256" else ARCH_SAM
    return ARCH_CUSTOM


def spec_to_config(spec: CellViTSpec) -> dict[str, Any]:
    """The `data` and `model` config sections describing `spec` (all numbers, upstream variants too)."""
    e, d = spec.encoder, spec.decoder
    backbone = "ViT256" if arch_for(spec) == ARCH_VIT256 else spec.name  # upstream configs say "ViT256"
    return {
        "data": {
            "num_nuclei_classes": spec.num_nuclei_classes,
            "num_tissue_classes": spec.num_tissue_classes,
        },
        "model": {
            "backbone": backbone,
            "regression_loss": spec.regression_loss,
            "encoder": e.kind,
            "embed_dim": e.embed_dim,
            "depth": e.depth,
            "num_heads": e.num_heads,
            "extract_layers": list(e.extract_layers),
            "mlp_ratio": e.mlp_ratio,
            "qkv_bias": e.qkv_bias,
            "img_size": e.img_size,
            "global_attn_indexes": list(e.global_attn_indexes),
            "window_size": e.window_size,
            "out_chans": e.out_chans,
            "decoder": {
                "skip_dim_11": d.skip_dim_11,
                "skip_dim_12": d.skip_dim_12,
                "bottleneck_dim": d.bottleneck_dim,
                "stage_dims": list(d.stage_dims),
                "stem_dim": d.stem_dim,
            },
        },
    }


def _custom_spec(conf: dict, where: str, n_nuc: int, n_tis: int, regression: bool) -> CellViTSpec:
    m = conf.get("model", {})
    name = str(m.get("backbone", "custom"))
    if "embed_dim" not in m:
        if name in ENCODERS:  # a registered variant saved without numbers
            return variant_spec(name, n_nuc, n_tis, regression)
        raise CheckpointError(
            f"{where}: arch {ARCH_CUSTOM} needs config model.embed_dim/depth/num_heads/... "
            f"or a known model.backbone ({', '.join(ENCODERS)}); got backbone {name!r}"
        )
    try:
        enc = EncoderSpec(
            kind=m.get("encoder", "vit256"),
            embed_dim=int(m["embed_dim"]),
            depth=int(m["depth"]),
            num_heads=int(m["num_heads"]),
            extract_layers=tuple(m["extract_layers"]),
            mlp_ratio=float(m.get("mlp_ratio", 4.0)),
            qkv_bias=bool(m.get("qkv_bias", True)),
            img_size=int(m.get("img_size", 224)),
            global_attn_indexes=tuple(m.get("global_attn_indexes", ())),
            window_size=int(m.get("window_size", 14)),
            out_chans=int(m.get("out_chans", 256)),
        )
        dd = m.get("decoder")
        dec = (
            None
            if not isinstance(dd, dict)
            else DecoderDims(
                int(dd["skip_dim_11"]),
                int(dd["skip_dim_12"]),
                int(dd["bottleneck_dim"]),
                tuple(dd.get("stage_dims", (64, 128, 256))),
                int(dd.get("stem_dim", 32)),
            )
        )
        return CellViTSpec(name, enc, dec, n_nuc, n_tis, regression)
    except KeyError as exc:
        raise CheckpointError(
            f"{where}: config model.{exc.args[0]} is missing (needed for arch {ARCH_CUSTOM})"
        ) from exc
    except (TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{where}: invalid model config for arch {ARCH_CUSTOM}: {exc}") from exc


def spec_from_config(arch: Any, conf: dict, where: str, n_nuc: int, n_tis: int) -> CellViTSpec:
    """Rebuild the spec from `arch` and the unflattened config, as upstream's `_get_model` does."""
    regression = bool(get(conf, "model.regression_loss", False))
    if arch == ARCH_VIT256:
        return variant_spec("CellViT256", n_nuc, n_tis, regression)
    if arch == ARCH_SAM:
        backbone = str(get(conf, "model.backbone", "")).upper()
        if backbone not in SAM_BACKBONES:
            raise CheckpointError(
                f"{where}: arch {ARCH_SAM} with config model.backbone={get(conf, 'model.backbone')!r}; "
                f"expected one of {', '.join(SAM_BACKBONES)}"
            )
        return variant_spec(backbone, n_nuc, n_tis, regression)
    if arch == ARCH_CUSTOM:
        return _custom_spec(conf, where, n_nuc, n_tis, regression)
    raise CheckpointError(
        f"{where}: unknown arch {arch!r}; supported: {', '.join(ARCHS)} "
        "(CellViT++ UNI/Virchow checkpoints are not supported)"
    )


def _names_from(mapping: Any, n: int, default: tuple[str, ...]) -> tuple[str, ...]:
    """`{name: id}` (upstream dataset_config) -> names by id; ids not covered keep the default name."""
    names = list(default)
    if isinstance(mapping, dict):
        for name, idx in mapping.items():
            try:
                i = int(idx)
            except (TypeError, ValueError):
                continue
            if 0 <= i < n:
                names[i] = str(name)
    return tuple(names)


def _magnification(conf: dict, path: Path | None, where: str) -> int:
    mag = get(conf, "data.magnification")
    if mag is None and path is not None:
        m = re.search(r"(?:^|[-_.])x(20|40)(?:$|[-_.])", path.stem, re.IGNORECASE)  # CellViT-256-x20.pth
        mag = m.group(1) if m else None
    if mag is None:
        return DEFAULT_MAGNIFICATION
    try:
        mag = int(float(mag))
    except (TypeError, ValueError):
        mag = None
    if mag not in (20, 40):
        raise CheckpointError(
            f"{where}: config data.magnification={get(conf, 'data.magnification')!r}; expected 20 or 40"
        )
    return mag


def _triple(
    value: Any, default: tuple[float, float, float], key: str, where: str
) -> tuple[float, float, float]:
    if value is None:
        return default
    try:
        vals = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * 3))
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3:
        raise CheckpointError(f"{where}: config {key}={value!r}; expected 3 numbers (RGB)")
    return vals  # type: ignore[return-value]


def info_from_config(
    arch: str,
    spec: CellViTSpec,
    conf: dict,
    path: Path | None = None,
    sha256: str | None = None,
    where: str = "checkpoint",
) -> ModelInfo:
    n_nuc, n_tis = spec.num_nuclei_classes, spec.num_tissue_classes
    return ModelInfo(
        arch=arch,
        variant=spec.name,
        spec=spec,
        nuclei_names=_names_from(
            get(conf, "dataset_config.nuclei_types"), n_nuc, classes.default_nuclei_names(n_nuc)
        ),
        nuclei_colors=tuple(classes.cell_color(i) for i in range(n_nuc)),
        tissue_names=_names_from(
            get(conf, "dataset_config.tissue_types"), n_tis, classes.default_tissue_names(n_tis)
        ),
        magnification=_magnification(conf, path, where),
        mean=_triple(
            get(conf, "transformations.normalize.mean"), DEFAULT_MEAN, "transformations.normalize.mean", where
        ),
        std=_triple(
            get(conf, "transformations.normalize.std"), DEFAULT_STD, "transformations.normalize.std", where
        ),
        mixed_precision=bool(get(conf, "training.mixed_precision", False)),
        sha256=sha256,
        path=str(path) if path is not None else None,
        config=conf,
    )


def make_info(
    spec: CellViTSpec,
    *,
    nuclei_names: tuple[str, ...] | None = None,
    tissue_names: tuple[str, ...] | None = None,
    magnification: int = DEFAULT_MAGNIFICATION,
    mean: tuple[float, float, float] = DEFAULT_MEAN,
    std: tuple[float, float, float] = DEFAULT_STD,
    config: dict[str, Any] | None = None,
) -> ModelInfo:
    """ModelInfo for a freshly built/trained model (e.g. before `save_checkpoint`)."""
    n_nuc, n_tis = spec.num_nuclei_classes, spec.num_tissue_classes
    nuclei_names = tuple(nuclei_names) if nuclei_names is not None else classes.default_nuclei_names(n_nuc)
    tissue_names = tuple(tissue_names) if tissue_names is not None else classes.default_tissue_names(n_tis)
    if len(nuclei_names) != n_nuc or len(tissue_names) != n_tis:
        raise ConfigError(
            f"make_info: got {len(nuclei_names)} nuclei / {len(tissue_names)} tissue names, "
            f"expected {n_nuc} / {n_tis}"
        )
    if magnification not in (20, 40):
        raise ConfigError(f"make_info: magnification {magnification!r}; expected 20 or 40")
    return ModelInfo(
        arch_for(spec),
        spec.name,
        spec,
        nuclei_names,
        tuple(classes.cell_color(i) for i in range(n_nuc)),
        tissue_names,
        magnification,
        tuple(mean),
        tuple(std),
        config=dict(config or {}),
    )  # type: ignore[arg-type]
