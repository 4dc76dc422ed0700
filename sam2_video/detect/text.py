"""Open-vocabulary detectors from transformers: text such as "person. car." names the classes.

Grounding DINO (and other `AutoModelForZeroShotObjectDetection` models that score text
tokens) and OWLv2 / OWL-ViT (which score whole queries) load by hub id or local folder.
transformers is imported here only, when a detector is built (`pip install -e ".[detect]"`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from sam2_video.detect.types import Detections, DetectorError

logger = logging.getLogger(__name__)

_OWL_TYPES = ("owlv2", "owlvit")


def parse_text_classes(text: str) -> list[str]:
    """`"person. car, dog."` -> ["person", "car", "dog"] (Grounding DINO's period-separated
    prompt; commas accepted too). Raises DetectorError for text with no class in it."""
    classes: list[str] = []
    for part in re.split(r"[.,;\n]", text):
        name = " ".join(part.split()).lower()
        if name and name not in classes:
            classes.append(name)
    if not classes:
        raise DetectorError(f"no class names in the text {text!r} (e.g. 'person. car.')")
    return classes


class TextDetector:
    """A transformers zero-shot detector prompted with class names.

    model: hub id (`IDEA-Research/grounding-dino-tiny`, `google/owlv2-base-patch16-ensemble`)
        or a local folder saved with `save_pretrained` (model and processor).
    classes: the class names, or `text` ("person. car.") parsed by `parse_text_classes`.
    min_score: drop detections below this score. device: torch device for the model.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        classes: list[str] | None = None,
        text: str | None = None,
        min_score: float = 0.25,
        device: str | torch.device = "cpu",
        local_files_only: bool = False,
    ) -> None:
        if classes is None:
            if text is None:
                raise DetectorError("a text detector needs classes or text, e.g. 'person. car.'")
            classes = parse_text_classes(text)
        classes = [c.strip().lower() for c in classes if c.strip()]
        if not classes:
            raise DetectorError("a text detector needs at least one class name")
        from sam2_video.detect.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(
                str(model), local_files_only=local_files_only
            )
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(
                str(model), local_files_only=local_files_only
            )
        except (OSError, ValueError) as exc:
            raise DetectorError(f"cannot load the text detector {str(model)!r}: {exc}") from exc
        self.model.to(device).eval()
        self.device = torch.device(device)
        self.classes = classes
        self.names = dict(enumerate(classes))
        self.min_score = float(min_score)
        self._owl = self.model.config.model_type in _OWL_TYPES

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> Detections:
        """image: (H, W, 3) uint8 RGB -> detections in its pixels."""
        h, w = image.shape[:2]
        if self._owl:
            inputs = self.processor(text=[self.classes], images=image, return_tensors="pt")
        else:
            inputs = self.processor(images=image, text=self._prompt(), return_tensors="pt")
        inputs = inputs.to(self.device)
        outputs = self.model(**inputs)
        if self._owl:
            scores, class_ids = outputs.logits[0].sigmoid().max(dim=-1)  # (Q,) each
            # OWL pads the image to a square at the bottom/right: boxes are relative to it.
            side = float(max(h, w))
            scale = torch.tensor([side, side, side, side], device=scores.device)
        else:
            scores, class_ids = self._class_scores(outputs.logits[0].sigmoid(), inputs)
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=scores.device)
        cx, cy, bw, bh = outputs.pred_boxes[0].float().unbind(-1)  # (Q,) normalised
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1) * scale
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = scores >= self.min_score
        return Detections(
            boxes[keep].cpu().numpy(),
            class_ids[keep].cpu().numpy(),
            scores[keep].float().cpu().numpy(),
            self.names,
        )

    def _prompt(self) -> str:
        return " ".join(f"{c}." for c in self.classes)

    def _class_scores(self, token_probs: torch.Tensor, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, T) token probabilities -> per query the best class and its score (the best
        probability over that class's tokens)."""
        ids = inputs["input_ids"][0].tolist()
        tokenizer = self.processor.tokenizer
        columns = []
        cursor = 0
        for name in self.classes:
            sub = tokenizer(name, add_special_tokens=False)["input_ids"]
            start = _find(ids, sub, cursor)
            if start < 0 or start + len(sub) > token_probs.shape[1]:
                raise DetectorError(f"class {name!r} does not fit in the detector's text input")
            columns.append(token_probs[:, start : start + len(sub)].max(dim=1).values)
            cursor = start + len(sub)
        per_class = torch.stack(columns, dim=1)  # (Q, C)
        return per_class.max(dim=1)


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    for i in range(start, len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return -1
