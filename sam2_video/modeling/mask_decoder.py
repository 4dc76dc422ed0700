"""SAM mask decoder: prompt tokens + image embedding -> mask logits, IoU and object scores.

Output tokens, in order: [object-score token,] IoU token, 1 single-mask token, 3 multimask
tokens, followed by the prompt tokens. Masks come out at 4x the embedding resolution
(S/4 x S/4, "low-res logits").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sam2_video.config import SAM2Config
from sam2_video.modeling.prompt_encoder import PromptEncoder
from sam2_video.modeling.transformer import MLP, LayerNorm2d, TwoWayTransformer


class MaskDecoder(nn.Module):
    """Two-way transformer over output/prompt tokens and the image, then hypernetwork masks."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        """
        Args:
            transformer_dim: token / image channel width C.
            transformer: module mapping (image (B,C,h,w), pe (B,C,h,w), tokens (B,N,C)) to
                (tokens (B,N,C), image tokens (B,hw,C)), normally a `TwoWayTransformer`.
            num_multimask_outputs: masks proposed for ambiguous prompts (plus one single mask).
            activation: activation of the upscaling path.
            iou_head_depth, iou_head_hidden_dim: shape of the IoU prediction MLP.
            use_high_res_features: add stride-4/stride-8 backbone features while upscaling
                (sharper masks); they must then be passed to `forward`.
            iou_prediction_use_sigmoid: IoU scores in [0, 1] instead of raw values.
            dynamic_multimask_via_stability: in single-mask mode (eval only), fall back to the
                best multimask output when the single mask is unstable under small logit shifts.
            dynamic_multimask_stability_delta: logit shift used by that stability score.
            dynamic_multimask_stability_thresh: minimum stability to keep the single mask.
            pred_obj_scores: predict whether the object is present at all (video tracking).
            pred_obj_scores_mlp: use a 3-layer MLP rather than a linear layer for that score.
            use_multimask_token_for_obj_ptr: in multimask mode return the multimask output
                tokens (for object pointers) instead of the single-mask token.
        """
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        # Indices 0, 1, 3 carry weights; the layout is the checkpoint format.
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            # Applied by the model when it encodes the image (see `project_high_res_features`),
            # so that the projection is computed once per frame, not once per prompt.
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(
                input_dim=transformer_dim,
                hidden_dim=transformer_dim,
                output_dim=transformer_dim // 8,
                num_layers=3,
            )
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            input_dim=transformer_dim,
            hidden_dim=iou_head_hidden_dim,
            output_dim=self.num_mask_tokens,
            num_layers=iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head: nn.Module
            if pred_obj_scores_mlp:
                self.pred_obj_score_head = MLP(
                    input_dim=transformer_dim,
                    hidden_dim=transformer_dim,
                    output_dim=1,
                    num_layers=3,
                )
            else:
                self.pred_obj_score_head = nn.Linear(transformer_dim, 1)

        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def project_high_res_features(self, feat_s0: Tensor, feat_s1: Tensor) -> list[Tensor]:
        """Project FPN levels for the decoder's upscaling path.

        feat_s0 (B, C, 4h, 4w) and feat_s1 (B, C, 2h, 2w) -> [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)].
        """
        if not self.use_high_res_features:
            raise ValueError("this decoder was built with use_high_res_features=False")
        return [self.conv_s0(feat_s0), self.conv_s1(feat_s1)]

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Predict masks for B prompts.

        Args:
            image_embeddings: (B, C, h, w), or (1, C, h, w) with `repeat_image=True` to share
                one image between B prompts.
            image_pe: (1, C, h, w), from `PromptEncoder.get_dense_pe()`.
            sparse_prompt_embeddings: (B, N, C) prompt tokens.
            dense_prompt_embeddings: (B, C, h, w) mask-prompt embedding.
            multimask_output: return the 3 multimask outputs instead of a single mask.
            repeat_image: repeat `image_embeddings` along the batch for every prompt.
            high_res_features: [(B or 1, C/8, 4h, 4w), (B or 1, C/4, 2h, 2w)], already projected
                by `project_high_res_features`; required iff `use_high_res_features`.

        Returns:
            masks (B, M, 4h, 4w) low-res mask logits (M = 3 in multimask mode, else 1),
            iou_pred (B, M), sam_tokens_out (B, M', C) output tokens for object pointers
            (M' = 3 in multimask mode with `use_multimask_token_for_obj_ptr`, else 1), and
            object_score_logits (B, 1) (> 0: object present).
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            repeat_image=repeat_image,
            high_res_features=high_res_features,
        )

        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._select_stable_single_mask(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]

        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]  # (B, 3, C)
        else:
            # Even after a dynamic fallback the single-mask token is returned: during training
            # object pointers always came from it.
            sam_tokens_out = mask_tokens_out[:, 0:1]  # (B, 1, C)
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        repeat_image: bool,
        high_res_features: list[Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All mask outputs, unselected (see `forward` for the arguments).

        Returns masks (B, 4, 4h, 4w), iou_pred (B, 4), mask_tokens_out (B, 4, C) and
        object_score_logits (B, 1); index 0 is the single-mask output, 1..3 the multimask ones.
        """
        batch_size = sparse_prompt_embeddings.shape[0]
        if image_pe.shape[0] != 1:
            raise ValueError(f"image_pe must have batch size 1, got {tuple(image_pe.shape)}")
        if self.use_high_res_features and high_res_features is None:
            raise ValueError("this decoder needs high_res_features (use_high_res_features=True)")

        tokens = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            tokens.insert(0, self.obj_score_token.weight)
        first = 1 if self.pred_obj_scores else 0  # index of the IoU token
        output_tokens = torch.cat(tokens, dim=0).unsqueeze(0).expand(batch_size, -1, -1)
        tokens_in = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)  # (B, T, C)

        if repeat_image:
            src = torch.repeat_interleave(image_embeddings, batch_size, dim=0)  # (B, C, h, w)
        elif image_embeddings.shape[0] != batch_size:
            raise ValueError(
                f"image_embeddings batch {image_embeddings.shape[0]} != prompt batch "
                f"{batch_size}; pass repeat_image=True to share one image"
            )
        else:
            src = image_embeddings
        src = src + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, batch_size, dim=0)  # (B, C, h, w)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens_in)  # (B, T, C), (B, hw, C)
        iou_token_out = hs[:, first]  # (B, C)
        mask_tokens_out = hs[:, first + 1 : first + 1 + self.num_mask_tokens]  # (B, 4, C)

        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = self._upscale(src, high_res_features)  # (B, C/8, 4h, 4w)

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, 4, C/8)
        b, c8, h4, w4 = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c8, h4 * w4)).reshape(b, -1, h4, w4)

        iou_pred = self.iou_prediction_head(iou_token_out)  # (B, 4)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])  # (B, 1)
        else:
            # Without a score head the object is always "present" (sigmoid(10) ~ 1).
            object_score_logits = iou_pred.new_full((b, 1), 10.0)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _upscale(self, src: Tensor, high_res_features: list[Tensor] | None) -> Tensor:
        """(B, C, h, w) -> (B, C/8, 4h, 4w), mixing in the projected high-res features."""
        if not self.use_high_res_features:
            return self.output_upscaling(src)
        if high_res_features is None:
            raise ValueError("this mask decoder uses high-res features: pass high_res_features")
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        x = act1(norm1(deconv1(src) + feat_s1))  # (B, C/4, 2h, 2w)
        return act2(deconv2(x) + feat_s0)  # (B, C/8, 4h, 4w)

    def _select_stable_single_mask(self, masks: Tensor, iou_pred: Tensor) -> tuple[Tensor, Tensor]:
        """Keep the single mask where stable, else the best-IoU multimask output.

        masks (B, 4, H, W), iou_pred (B, 4) -> (B, 1, H, W), (B, 1).
        """
        best = iou_pred[:, 1:].argmax(dim=-1) + 1  # (B,) index among tokens 1..3
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks = masks[rows, best].unsqueeze(1)  # (B, 1, H, W)
        best_iou = iou_pred[rows, best].unsqueeze(1)  # (B, 1)

        single_masks, single_iou = masks[:, 0:1], iou_pred[:, 0:1]
        stability = mask_stability_score(single_masks, self.dynamic_multimask_stability_delta)
        is_stable = stability >= self.dynamic_multimask_stability_thresh  # (B, 1)
        masks_out = torch.where(is_stable[..., None, None], single_masks, best_masks)
        iou_out = torch.where(is_stable, single_iou, best_iou)
        return masks_out, iou_out


def mask_stability_score(mask_logits: Tensor, delta: float) -> Tensor:
    """IoU of the masks thresholded at +delta and -delta: (..., H, W) -> (...) float.

    A mask whose area barely changes under a small logit shift is "stable"; an empty mask
    scores 1.
    """
    flat = mask_logits.flatten(-2)
    area_inner = (flat > delta).sum(dim=-1).float()
    area_outer = (flat > -delta).sum(dim=-1).float()
    return torch.where(area_outer > 0, area_inner / area_outer, torch.ones_like(area_outer))


def build_sam_heads(cfg: SAM2Config) -> tuple[PromptEncoder, MaskDecoder]:
    """Prompt encoder and mask decoder of a SAM 2 / 2.1 model (keys `sam_prompt_encoder.*`,
    `sam_mask_decoder.*`).

    The transformer and head sizes are fixed in the official builder, not configurable; every
    official config turns on high-res features, sigmoid IoU, the object-score MLP and multimask
    tokens for object pointers.
    """
    dim = cfg.hidden_dim
    grid = cfg.image_embedding_size
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(cfg.image_size, cfg.image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=dim,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2048, attention_downsample_rate=2
        ),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        dynamic_multimask_via_stability=cfg.dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=cfg.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=cfg.dynamic_multimask_stability_thresh,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
    )
    return prompt_encoder, mask_decoder
