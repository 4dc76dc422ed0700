"""Build SAM 2 models from configs and load official checkpoints strictly."""

from __future__ import annotations

import logging
import pickle
import zipfile
from functools import cache
from pathlib import Path

import torch

from sam2_video.checkpoints import ensure_checkpoint
from sam2_video.config import SAM2Config, available_configs, load_config, ultralytics_name
from sam2_video.modeling.image_encoder import build_image_encoder
from sam2_video.modeling.mask_decoder import build_sam_heads
from sam2_video.modeling.memory_attention import build_memory_attention
from sam2_video.modeling.memory_encoder import build_memory_encoder
from sam2_video.modeling.sam2 import SAM2Model
from sam2_video.precision import Precision, apply_tf32, cpu_has_fast_bf16, resolve_precision

logger = logging.getLogger(__name__)

# How many offending keys an error message lists before "... and N more".
_KEYS_SHOWN = 5


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, or does not fit the model."""


def build_model(config: str | Path | SAM2Config) -> SAM2Model:
    """Construct an (uninitialised) SAM 2 model for a config name, YAML path or config.

    Build under `with torch.device("meta"):` to get shapes without allocating memory.
    """
    cfg = load_config(config)
    prompt_encoder, mask_decoder = build_sam_heads(cfg)
    return SAM2Model(
        config=cfg,
        image_encoder=build_image_encoder(cfg),
        sam_prompt_encoder=prompt_encoder,
        sam_mask_decoder=mask_decoder,
        memory_encoder=build_memory_encoder(cfg),
        memory_attention=build_memory_attention(cfg),
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official checkpoint (`{"model": state_dict}`) or a bare state dict.

    Uses `torch.load(weights_only=True)`: no code in the file is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or not a checkpoint?): {exc}"
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())
    ):
        raise CheckpointError(
            f"{path} does not hold a SAM 2 state dict ({{'model': state_dict}} or a bare "
            "mapping of names to tensors)"
        )
    return data


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    more = len(keys) - _KEYS_SHOWN
    return shown + (f" ... and {more} more" if more > 0 else "")


def load_checkpoint(model: SAM2Model, path: str | Path) -> None:
    """Load a checkpoint into `model` strictly; any missing/unexpected/mis-shaped key fails."""
    state_dict = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {_listing(wrong_shape)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match model {model.config.name!r}: " + "; ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True)


@cache
def _signature(config_name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(key, shape) of every tensor of a registered config, from a model built on `meta`."""
    with torch.device("meta"):
        state = build_model(config_name).state_dict()
    return tuple(sorted((k, tuple(v.shape)) for k, v in state.items()))


def infer_config(state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> SAM2Config:
    """The registered config whose keys and shapes are exactly those of `state_dict`.

    Keys tell SAM 2 from SAM 2.1 (`no_obj_embed_spatial`, `obj_ptr_tpos_proj`); shapes tell
    the sizes apart (trunk width and blocks per stage, window position embedding 7x7 or 14x14).
    Fields that leave no trace in shapes (heads, global-attention blocks) come from the match.
    Raises CheckpointError naming the closest candidates when none or several match.
    """
    wanted = sorted((k, tuple(v.shape)) for k, v in state_dict.items())
    wanted_set = set(wanted)
    matches, distance = [], {}
    for name in available_configs():
        signature = _signature(name)
        if tuple(wanted) == signature:
            matches.append(name)
        distance[name] = len(wanted_set.symmetric_difference(signature))
    if len(matches) == 1:
        return load_config(matches[0])
    if matches:
        raise CheckpointError(f"{source} fits several models: {', '.join(matches)}; name one")
    closest = sorted(distance, key=lambda name: distance[name])[:3]
    listed = ", ".join(f"{n} ({distance[n]} keys/shapes differ)" for n in closest)
    raise CheckpointError(
        f"{source} matches no known SAM 2 model; closest: {listed}. Pass its config "
        "(a name or a .yaml path) explicitly"
    )


def _is_checkpoint_path(config: object) -> bool:
    """An existing file that is not a YAML config: a checkpoint (`.pt`, `.pth`, ...)."""
    if not isinstance(config, (str, Path)) or Path(config).suffix in (".yaml", ".yml"):
        return False
    return Path(config).is_file()


def check_model(model: str | Path | SAM2Config) -> None:
    """Raise ConfigError unless `model` is a known name, a YAML config or a checkpoint file."""
    if not _is_checkpoint_path(model):
        load_config(model)


def ensure_model_checkpoint(
    model: str | Path, checkpoint: str | Path | None, download: bool
) -> Path:
    """The checkpoint file for `model` (see `build_sam2`), fetched first if `download`.

    A model given as a checkpoint file is its own checkpoint; otherwise the name is checked
    first (ConfigError for a typo, not "no checkpoint"), then `ensure_checkpoint` looks for
    Meta's file name, or Ultralytics' for Ultralytics' names.
    """
    if _is_checkpoint_path(model):
        return Path(checkpoint if checkpoint is not None else model)
    config = load_config(model)
    name = str(model) if ultralytics_name(model) else config.name
    return ensure_checkpoint(name, None if checkpoint is None else Path(checkpoint), download)


def build_sam2(
    config: str | Path | SAM2Config | None = "sam2.1_hiera_t",
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    precision: Precision | str = Precision.AUTO,
) -> SAM2Model:
    """Build a SAM 2 model in eval mode, optionally loading an official checkpoint.

    config: registry name (`sam2.1_hiera_t`, `sam2.1_hiera_tiny`, `sam2_hiera_l`, ...),
        Ultralytics' name (`sam2_b.pt`, `sam2.1_t.pt`), a YAML path, a `SAM2Config`, the path
        of an existing checkpoint file, or None: the last two infer the config from the
        checkpoint's keys and shapes (`infer_config`).
    checkpoint: path to an official or Ultralytics `.pt` file; None leaves the weights randomly
        initialised (unless `config` is itself the checkpoint file).
    device: where to put the model (default: CUDA when available, else CPU).
    precision: `auto | fp32 | bf16 | fp16` (`sam2_video.precision`): auto is bf16 autocast +
        TF32 on CUDA, as the official runs, and fp32 on the CPU. The predictors apply it; TF32
        is a process-wide switch, set here for CUDA. Raises ValueError for an unknown name.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = resolve_precision(precision, device)  # a bad name fails before any loading
    if _is_checkpoint_path(config):
        checkpoint = checkpoint if checkpoint is not None else Path(str(config))
        config = None
    if config is None:
        if checkpoint is None:
            raise CheckpointError("build_sam2 needs a config or a checkpoint to infer it from")
        config = infer_config(read_state_dict(checkpoint), source=str(checkpoint))
    model = build_model(config)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
        logger.info("loaded %s into %s", checkpoint, model.config.name)
    model.precision = Precision(precision)
    apply_tf32(resolved)
    logger.info("%s on %s runs %s", model.config.name, device, resolved.name)
    if resolved.device_type == "cpu" and resolved.autocast_dtype is None and cpu_has_fast_bf16():
        # auto stays fp32 on the CPU (the fidelity reference); bf16 is the user's choice.
        logger.info("this CPU has bf16 matrix instructions: precision='bf16' is ~2.5x faster")
    return model.to(device).eval()
