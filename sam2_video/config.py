"""Typed model configuration and the registry of named configs.

Every field is a plain value: the YAML files in `configs/` hold exactly these fields (no class
paths, no overrides). Defaults are the official SAM 2.1 hiera-tiny values where one exists.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml


def _config_dir() -> Path:
    """`configs/` of a source checkout, else the copy a wheel installs under sys.prefix."""
    checkout = Path(__file__).resolve().parent.parent / "configs"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "sam2-stream" / "configs"


CONFIG_DIR = _config_dir()


class ConfigError(ValueError):
    """A model config name or file that cannot be resolved or parsed."""


@dataclass(frozen=True)
class HieraConfig:
    """Hiera trunk (hierarchical ViT with windowed attention and query pooling)."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)  # blocks per stage
    global_att_blocks: tuple[int, ...] = (12, 16, 20)  # blocks using global attention
    window_spec: tuple[int, ...] = (8, 4, 14, 7)  # window size per stage
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3  # number of stage transitions that pool queries
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0


@dataclass(frozen=True)
class NeckConfig:
    """FPN neck over the Hiera stages, plus the sine position encoding of its outputs."""

    d_model: int = 256
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)  # deepest stage first
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    scalp: int = 1  # number of lowest-resolution levels dropped after the neck
    pos_num_feats: int = 256
    pos_temperature: float = 10000.0


@dataclass(frozen=True)
class MemoryAttentionConfig:
    """Stack of RoPE self-/cross-attention layers conditioning frame features on memory."""

    d_model: int = 256
    num_layers: int = 4
    dim_feedforward: int = 2048
    num_heads: int = 1
    kv_in_dim: int = 64  # channel count of the memory tokens (= memory encoder out_dim)
    rope_theta: float = 10000.0
    feat_sizes: tuple[int, int] = (64, 64)  # RoPE table size (image embedding grid)


@dataclass(frozen=True)
class MemoryEncoderConfig:
    """Fuses a frame's features with its (downsampled) mask into memory tokens."""

    in_dim: int = 256
    out_dim: int = 64
    pos_num_feats: int = 64
    mask_downsampler_embed_dim: int = 256
    fuser_num_layers: int = 2
    fuser_kernel_size: int = 7


@dataclass(frozen=True)
class SAM2Config:
    """Whole-model configuration (one official checkpoint architecture)."""

    name: str = "sam2.1_hiera_t"
    image_size: int = 1024
    hiera: HieraConfig = field(default_factory=HieraConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    memory_attention: MemoryAttentionConfig = field(default_factory=MemoryAttentionConfig)
    memory_encoder: MemoryEncoderConfig = field(default_factory=MemoryEncoderConfig)

    num_maskmem: int = 7  # 1 current frame slot + 6 previous frames
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    # SAM 2.1 additions (False for the original SAM 2 checkpoints).
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    no_obj_embed_spatial: bool = True
    # Mask decoder: when a single-mask answer is unstable, fall back to the best multimask one.
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    @property
    def hidden_dim(self) -> int:
        """Channel width shared by the neck, prompt encoder, decoder and memory attention."""
        return self.neck.d_model

    @property
    def mem_dim(self) -> int:
        return self.memory_encoder.out_dim

    @property
    def backbone_stride(self) -> int:
        return 16

    @property
    def image_embedding_size(self) -> int:
        """Side of the stride-16 feature grid (64 for 1024 inputs)."""
        return self.image_size // self.backbone_stride

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SAM2Config:
        return _build_dataclass(cls, data, path=data.get("name", "<config>"))

    @classmethod
    def from_yaml(cls, path: str | Path) -> SAM2Config:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read model config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"model config {path} must be a YAML mapping")
        data.setdefault("name", path.stem)
        return _build_dataclass(cls, data, path=str(path))


def _build_dataclass(cls, data: dict, path: str):
    """Build a (nested) config dataclass from a mapping, rejecting unknown fields."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {unknown} for {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        default = (
            fields[name].default_factory()  # type: ignore[operator]
            if fields[name].default_factory is not dataclasses.MISSING
            else fields[name].default
        )
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: field {name!r} must be a mapping")
            value = _build_dataclass(type(default), value, path=f"{path}:{name}")
        elif isinstance(default, tuple):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


# Short aliases users type ("sam2.1_hiera_tiny") -> canonical config file stem.
_SIZE_ALIASES = {"tiny": "t", "small": "s", "base_plus": "b+", "base+": "b+", "large": "l"}


def available_configs() -> list[str]:
    """Names of the configs shipped in `configs/` (file stems)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


# Ultralytics' names for Meta's checkpoints (`sam2_b.pt` is base+); their files hold Meta's
# state dict under "model", so only the names differ.
ULTRALYTICS_NAMES = {
    f"{generation}_{short}": f"{generation}_hiera_{ours}"
    for generation in ("sam2", "sam2.1")
    for short, ours in (("t", "t"), ("s", "s"), ("b", "b+"), ("l", "l"))
}


def ultralytics_name(name: str | Path) -> str | None:
    """`sam2.1_b` for `sam2.1_b.pt` / `sam2.1_b` (Ultralytics' names), else None."""
    stem = str(name)
    stem = stem[: -len(".pt")] if stem.endswith(".pt") else stem
    return stem if stem in ULTRALYTICS_NAMES else None


def canonical_name(name: str) -> str:
    """Map aliases to the config stem: `sam2.1_hiera_tiny` and Ultralytics' `sam2.1_t.pt` both
    give `sam2.1_hiera_t`."""
    short_name = ultralytics_name(name)
    if short_name is not None:
        return ULTRALYTICS_NAMES[short_name]
    for alias, short in _SIZE_ALIASES.items():
        if name.endswith("_" + alias):
            return name[: -len(alias)] + short
    return name


def load_config(name_or_path: str | Path | SAM2Config) -> SAM2Config:
    """Resolve a registry name (`sam2.1_hiera_t`, `sam2.1_hiera_tiny`), a YAML path or a config."""
    if isinstance(name_or_path, SAM2Config):
        return name_or_path
    as_path = Path(name_or_path)
    if as_path.suffix in (".yaml", ".yml"):
        if not as_path.is_file():
            raise ConfigError(f"model config file not found: {as_path}")
        return SAM2Config.from_yaml(as_path)
    stem = canonical_name(str(name_or_path))
    path = CONFIG_DIR / f"{stem}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown model {str(name_or_path)!r}; known: {', '.join(available_configs())}, "
            f"Ultralytics' {', '.join(n + '.pt' for n in ULTRALYTICS_NAMES)} "
            "(or give a path to a .yaml config or to a .pt file)"
        )
    return SAM2Config.from_yaml(path)
