"""ICM: Implicit-enhanced Causal MoE on a Video-LLaVA backbone (paper §3.2-3.4).

Data flow of one forward pass::

    scene features {scene: [B, T, items, dim]} + masks ──► SceneExpert per scene ──► per-frame expert outputs E_j
    router P = softmax(W·h) (h = mean of the experts' outputs) ──► y_moe = LayerNorm(Σ_j P_j·E_j)        (Eq. 1)
    L_rb = α·H(P) + β·L·Σ_j G_j·H_j                                                                      (Eq. 2)
    y_m = self-sampling attention over the sample; y_x = cross-sampling attention over the dictionary  (Eq. 3-4)
    y_iec = FFN(y_m + y_x);   scene tokens = Projector(Norm(y_moe + y_iec))
    LLM(inputs_embeds = text embeddings with video features at <video> and scene tokens at <scene>)

The scene tokens replace reserved ``<scene>`` placeholder tokens in the prompt (the processor writes
``num_scene_tokens`` of them before the video placeholder), so batching, padding and generation stay those of
a plain causal LM.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel, VideoLlavaForConditionalGeneration
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from .configuration_icm import IcmConfig
from .kmeans import kmeans
from .scene_contract import validate_scene_inputs
from .templates import IMAGE_TOKEN as T_IMAGE
from .templates import SCENE_TOKEN as T_SCENE
from .templates import VIDEO_TOKEN as T_VIDEO

logger = logging.get_logger(__name__)

try:  # transformers >= 5: initialisers that respect the "already initialised" flags of from_pretrained
    from transformers import initialization as hf_init
except ImportError:  # pragma: no cover - older transformers
    hf_init = nn.init


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SceneEncoding(ModelOutput):
    """What the scene side (SBM + IEC + projector) produces for a batch.

    Args:
        scene_tokens (`torch.FloatTensor` of shape `(batch, num_scene_tokens, llm_hidden)`): the LLM-width tokens
            placed at the ``<scene>`` placeholders.
        y_moe (`torch.FloatTensor` of shape `(batch, frames, d)`): SBM output per frame (Eq. 1).
        y_iec (`torch.FloatTensor` of shape `(batch, frames, d)`, *optional*): IEC output per frame.
        router_probs (`torch.FloatTensor` of shape `(batch, frames, num_experts)`, *optional*): gating
            probabilities P per frame, experts in `config.active_scenes` order (None without SBM).
        router_loss (`torch.FloatTensor` scalar): L_rb of Eq. 2 (0 without SBM).
        frame_valid (`torch.BoolTensor` of shape `(batch, frames)`): frames where at least one scene is present.
    """

    scene_tokens: torch.FloatTensor | None = None
    y_moe: torch.FloatTensor | None = None
    y_iec: torch.FloatTensor | None = None
    router_probs: torch.FloatTensor | None = None
    router_loss: torch.FloatTensor | None = None
    frame_valid: torch.BoolTensor | None = None


@dataclass
class IcmOutput(ModelOutput):
    """Output of [`IcmForVideoSentiment`].

    Args:
        loss (`torch.FloatTensor`, *optional*): ``L = L_lm + L_rb`` (§3.4), when `labels` are given.
        lm_loss (`torch.FloatTensor`, *optional*): the language-modelling loss L_lm.
        router_loss (`torch.FloatTensor`, *optional*): the router loss L_rb (Eq. 2); 0 without SBM.
        logits (`torch.FloatTensor` of shape `(batch, seq, vocab)`): LM logits.
        router_probs (`torch.FloatTensor` of shape `(batch, frames, num_experts)`, *optional*): gating
            probabilities per frame (which scenes drove the judgement).
        cache (`Cache`, *optional*): the key/value cache (transformers 5 names it ``cache``; also readable as
            ``past_key_values``).
        hidden_states, attentions: as returned by the LLM when requested.
    """

    loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    router_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    router_probs: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None

    @property
    def past_key_values(self):
        return self.cache


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------


class IcmAttention(nn.Module):
    """Multi-head attention of queries over a key/value memory with a key padding mask (True = attend)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, n_q, _ = query.shape
        n_k = memory.shape[1]
        q = self.q_proj(query).view(batch, n_q, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(memory).view(batch, n_k, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(memory).view(batch, n_k, self.num_heads, self.head_dim).transpose(1, 2)
        attn_mask = None if memory_mask is None else memory_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, n_q, -1))


class IcmFeedForward(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


class SceneExpertLayer(GradientCheckpointingLayer):
    """One pre-norm transformer layer of a scene expert (self-attention over the clip's items, then an MLP)."""

    def __init__(self, config: IcmConfig):
        super().__init__()
        d = config.expert_hidden_size
        self.attn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.attn = IcmAttention(d, config.expert_num_heads, config.expert_dropout)
        self.mlp_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp = IcmFeedForward(d, config.expert_intermediate_size, config.expert_dropout)
        self.dropout = nn.Dropout(config.expert_dropout)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        normed = self.attn_norm(hidden)
        hidden = hidden + self.dropout(self.attn(normed, normed, key_mask))
        return hidden + self.dropout(self.mlp(self.mlp_norm(hidden)))


class SceneExpert(nn.Module):
    """Expert_i of §3.2 (FEE, HAE, ORE or VBE): ``h_i = Expert_i(x_i)``.

    Projects one scene's features ``[B, T, items, dim_i]`` to the expert width d, adds a learned embedding of the
    frame index (so the output carries time), and runs a stack of transformer layers over all the clip's items.
    A learned, always-present *null* token joins the sequence so attention is defined for a clip where the scene
    is absent (no face anywhere). The items of each frame are then mean-pooled over the mask into one vector per
    frame; frames without any item are reported as absent.
    """

    def __init__(self, config: IcmConfig, input_dim: int):
        super().__init__()
        d = config.expert_hidden_size
        self.input_dim = input_dim
        self.input_proj = nn.Linear(input_dim, d)
        self.frame_embedding = nn.Embedding(config.num_frames, d)
        self.null_token = nn.Parameter(torch.zeros(d))
        self.layers = nn.ModuleList([SceneExpertLayer(config) for _ in range(config.expert_num_layers)])
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(frame_outputs [B, T, d], frame_present [B, T] bool)``."""
        batch, frames, items, _ = features.shape
        frame_ids = torch.arange(frames, device=features.device)
        hidden = self.input_proj(features) + self.frame_embedding(frame_ids)[None, :, None, :]
        hidden = torch.cat([self.null_token.expand(batch, 1, -1), hidden.flatten(1, 2)], dim=1)
        key_mask = torch.cat([mask.new_ones(batch, 1), mask.flatten(1)], dim=1)
        for layer in self.layers:
            hidden = layer(hidden, key_mask)
        hidden = self.norm(hidden)[:, 1:].view(batch, frames, items, -1)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(2) / weights.sum(2).clamp(min=1.0)
        return pooled, mask.any(-1)


class SceneFeatureStandardizer(nn.Module):
    """``(x - mean) / std`` per input dimension of one scene's features (``IcmConfig.scene_feature_norm =
    "standardize"``). The statistics are buffers saved with the model, filled from the training set before training
    (``trainers.scene_stats.fit_scene_standardization``); until then they are the identity (mean 0, std 1)."""

    def __init__(self, input_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("std", torch.ones(input_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean.to(features.dtype)) / self.std.to(features.dtype)


def router_balance_loss(
    router_probs: torch.Tensor,
    dimension_share: torch.Tensor,
    alpha: float,
    beta: float,
    valid: torch.Tensor | None = None,
    eps: float = 1e-9,
    reading: str = "dimension_share",
) -> torch.Tensor:
    """The router loss with balancing constraints, Eq. 2: ``L_rb = α·H(P) + β·L·Σ_j G_j·H_j``.

    Reading of the paper's terms (§3.2), computed over the router's tokens (one per frame per clip):

    * ``H(P) = -Σ_j P_j log P_j``, the entropy of the gating distribution, averaged over the valid tokens. It is
      *minimised*: the paper wants the router to prefer the experts that matter rather than spread weight evenly.
    * ``G_j`` — "the average dimension of the hidden state of the scene expert" — is read as expert j's share of
      the input dimension, ``dim_j / Σ_k dim_k`` (the four extractors' outputs differ in size; the term keeps the
      router from favouring high-dimensional scenes).
    * ``H_j = mean over the batch's valid tokens of P_j``, the gating probability assigned to expert j.
    * ``L`` is the number of experts.

    ``reading`` chooses G_j (``IcmConfig.router_balance``):

    * ``"dimension_share"`` — G_j is the constant above. Then ``Σ_j G_j·H_j`` (with ``Σ_j H_j = 1``) is smallest
      with every token on the lowest-dimensional expert, and the entropy term also pushes towards one expert: the
      router ends on the smallest scene whatever the data says (measured: 0.9998 on the 32-dim background scene).
    * ``"dispatch"`` — G_j follows the paper's indicator ``1{e_j ∈ E_j}``: the fraction of the tokens whose top
      expert is j (no gradient, as Switch Transformer's load-balancing loss), times expert j's dimension over the
      mean dimension. ``L·Σ_j G_j·H_j`` is then 1 when the load is even across equal-sized experts and grows when
      tokens crowd onto one expert, more so onto a large one: the "balancing" the text describes.

    Args:
        router_probs: ``[..., L]`` gating probabilities.
        dimension_share: ``[L]`` G_j.
        alpha, beta: the weights α and β (paper: 1e-4 and 1e-2).
        valid: optional bool ``[...]`` selecting the tokens that count (frames where some scene is present).
    """
    probs = router_probs.reshape(-1, router_probs.shape[-1])
    # Token weights instead of boolean indexing: no data-dependent shapes (works on meta tensors, under compile).
    weights = probs.new_ones(probs.shape[0]) if valid is None else valid.reshape(-1).to(probs.dtype)
    count = weights.sum().clamp(min=1.0)
    num_experts = probs.shape[-1]
    entropy = (-(probs * torch.log(probs.clamp(min=eps))).sum(-1) * weights).sum() / count
    mean_gate = (probs * weights.unsqueeze(-1)).sum(0) / count
    share = dimension_share.to(probs.dtype)
    if reading == "dispatch":
        top = F.one_hot(probs.argmax(-1), num_experts).to(probs.dtype)
        dispatched = (top * weights.unsqueeze(-1)).sum(0) / count
        share = (dispatched * share / share.mean()).detach()
    elif reading != "dimension_share":
        raise ValueError(f"router balance reading must be 'dimension_share' or 'dispatch', got {reading!r}")
    balance = num_experts * (share * mean_gate).sum()
    return alpha * entropy + beta * balance


@dataclass
class SbmOutput(ModelOutput):
    y_moe: torch.FloatTensor | None = None
    expert_outputs: torch.FloatTensor | None = None  # [B, T, L, d]
    available: torch.BoolTensor | None = None  # [B, T, L]
    router_probs: torch.FloatTensor | None = None  # [B, T, L]
    router_loss: torch.FloatTensor | None = None


class SceneBalancedMoE(nn.Module):
    """The Scene-Balanced MoE block (SBM, §3.2): one [`SceneExpert`] per enabled scene and a soft router.

    ``P = softmax(W·h)`` with ``W ∈ R^{L×d}`` and h the mean of the experts' outputs for the frame (the paper's
    "input features h of four scene experts"); ``y_moe = LayerNorm(Σ_j P_j·E_j(h))`` (Eq. 1). Experts whose scene
    is absent in a frame (all-false mask) get no weight there. With ``use_sbm=False`` (ablation "w/o SBM") the
    experts and the router are replaced by a linear projection per scene averaged with equal weights.
    """

    def __init__(self, config: IcmConfig):
        super().__init__()
        self.config = config
        self.scenes = list(config.active_scenes)
        self.use_sbm = config.use_sbm
        d = config.expert_hidden_size
        # before the experts (or the w/o-SBM projections), so every ablation reads the same standardised input
        self.feature_norms = (
            nn.ModuleDict({s: SceneFeatureStandardizer(config.scene_dims[s]) for s in self.scenes})
            if config.scene_feature_norm == "standardize"
            else None
        )
        if self.use_sbm:
            self.experts = nn.ModuleDict({s: SceneExpert(config, config.scene_dims[s]) for s in self.scenes})
            self.router = nn.Linear(d, len(self.scenes), bias=False)
        else:
            self.projections = nn.ModuleDict({s: nn.Linear(config.scene_dims[s], d) for s in self.scenes})
            self.frame_embedding = nn.Embedding(config.num_frames, d)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        # Not saved (it follows from the config), so `_init_weights` rebuilds it after `from_pretrained`: a
        # non-persistent buffer is otherwise left as uninitialised memory there, and Eq. 2 goes with it.
        self.register_buffer("dimension_share", self.expected_dimension_share(), persistent=False)

    def expected_dimension_share(self, device=None) -> torch.Tensor:
        """G_j of Eq. 2: each enabled scene's share of the input dimension, ``dim_j / Σ_k dim_k`` (or the shares
        ``config.router_dimension_share`` gives, normalised over the enabled scenes)."""
        given = self.config.router_dimension_share
        source = given if given is not None else self.config.scene_dims
        dims = torch.tensor([float(source[s]) for s in self.scenes], device=device)
        return dims / dims.sum()

    def _plain_fusion(self, features, masks):
        outputs, present = [], []
        for scene in self.scenes:
            x, m = features[scene], masks[scene]
            w = m.unsqueeze(-1).to(x.dtype)
            pooled = (self.projections[scene](x) * w).sum(2) / w.sum(2).clamp(min=1.0)
            outputs.append(pooled)
            present.append(m.any(-1))
        return torch.stack(outputs, 2), torch.stack(present, 2)

    def forward(self, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> SbmOutput:
        if self.feature_norms is not None:
            features = {s: self.feature_norms[s](features[s]) if s in self.feature_norms else v for s, v in features.items()}
        if self.use_sbm:
            pairs = [self.experts[s](features[s], masks[s]) for s in self.scenes]
            expert_outputs = torch.stack([p[0] for p in pairs], 2)  # [B, T, L, d]
            available = torch.stack([p[1] for p in pairs], 2)  # [B, T, L]
        else:
            expert_outputs, available = self._plain_fusion(features, masks)
            frames = expert_outputs.shape[1]
            expert_outputs = (
                expert_outputs
                + self.frame_embedding(torch.arange(frames, device=expert_outputs.device))[None, :, None, :]
            )
        weights_avail = available.unsqueeze(-1).to(expert_outputs.dtype)
        valid = available.any(-1)
        if self.use_sbm:
            h = (expert_outputs * weights_avail).sum(2) / weights_avail.sum(2).clamp(min=1.0)
            logits = self.router(h).float()
            logits = logits.masked_fill(~available, torch.finfo(logits.dtype).min)
            probs = torch.softmax(logits, dim=-1) * available.to(logits.dtype)
            probs = (probs / probs.sum(-1, keepdim=True).clamp(min=1e-9)).to(expert_outputs.dtype)
            router_loss = router_balance_loss(
                probs.float(),
                self.dimension_share,
                self.config.router_alpha,
                self.config.router_beta,
                valid,
                reading=self.config.router_balance,
            )
        else:
            probs = available.to(expert_outputs.dtype)
            probs = probs / probs.sum(-1, keepdim=True).clamp(min=1.0)
            router_loss = expert_outputs.new_zeros(())
        y_moe = self.norm((probs.unsqueeze(-1) * expert_outputs).sum(2))
        return SbmOutput(
            y_moe=y_moe,
            expert_outputs=expert_outputs,
            available=available,
            router_probs=probs if self.use_sbm else None,
            router_loss=router_loss,
        )


class ImplicitEnhancedCausal(nn.Module):
    """The Implicit-Enhanced Causal block (IEC, §3.3): front-door adjustment as deconfounded causal attention.

    * Self-sampling (Eq. 3): ``y_m = V_M·softmax(Q_M^T K_M)`` with queries ``p(X)`` from the fused scene
      features y_moe and keys/values from the current sample (its per-frame fused features and every scene
      expert's per-frame output).
    * Cross-sampling (Eq. 4): ``y_x = V_C·softmax(Q_C^T K_C)`` with queries ``q(X)`` from y_moe and keys/values
      from a global dictionary of K vectors "compressed from the whole training dataset": the K-means centres of
      the training set's y_moe embeddings (:meth:`initialize_dictionary_from_embeddings`).
    * ``y_iec = FFN(y_m + y_x)``.

    The dictionary is a persistent buffer (saved with the weights in safetensors), with a persistent flag telling
    whether K-means has filled it.
    """

    def __init__(self, config: IcmConfig):
        super().__init__()
        d = config.expert_hidden_size
        self.self_sampling = IcmAttention(d, config.iec_num_heads, config.expert_dropout)
        self.cross_sampling = IcmAttention(d, config.iec_num_heads, config.expert_dropout)
        self.ffn = IcmFeedForward(d, config.iec_intermediate_size, config.expert_dropout)
        # iec_output_norm: y_iec at the scale of y_moe (itself a LayerNorm output) before the two are summed.
        self.output_norm = nn.LayerNorm(d, eps=config.layer_norm_eps) if config.iec_output_norm else None
        self.register_buffer("dictionary", torch.zeros(config.iec_dictionary_size, d), persistent=True)
        self.register_buffer("dictionary_initialized", torch.zeros((), dtype=torch.bool), persistent=True)

    def forward(self, y_moe: torch.Tensor, scene_memory: torch.Tensor, scene_memory_mask: torch.Tensor) -> torch.Tensor:
        batch = y_moe.shape[0]
        memory = torch.cat([y_moe, scene_memory], dim=1)
        memory_mask = torch.cat([scene_memory_mask.new_ones(y_moe.shape[:2]), scene_memory_mask], dim=1)
        y_m = self.self_sampling(y_moe, memory, memory_mask)
        dictionary = self.dictionary.to(y_moe.dtype).unsqueeze(0).expand(batch, -1, -1)
        y_x = self.cross_sampling(y_moe, dictionary)
        y_iec = self.ffn(y_m + y_x)
        return y_iec if self.output_norm is None else self.output_norm(y_iec)

    @torch.no_grad()
    def fill_dictionary(self, centres: torch.Tensor) -> None:
        """Replace the dictionary with ``centres`` ``[K, d]``."""
        if centres.shape != self.dictionary.shape:
            raise ValueError(
                f"dictionary centres must have shape {tuple(self.dictionary.shape)} (iec_dictionary_size, "
                f"expert_hidden_size), got {tuple(centres.shape)}"
            )
        if not torch.isfinite(centres).all():
            raise ValueError("dictionary centres contain NaN or infinite values")
        self.dictionary.copy_(centres.to(self.dictionary.device, self.dictionary.dtype))
        self.dictionary_initialized.fill_(True)

    @torch.no_grad()
    def initialize_dictionary_from_embeddings(
        self,
        embeddings: torch.Tensor,
        seed: int = 0,
        max_iter: int = 50,
        kmeans_fn: Callable[..., torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Fill the dictionary with the K-means centres of ``embeddings`` ``[N, d]`` (§3.3: "we initialize this
        dictionary by using K-means clustering on all the embeddings of samples in the training set").

        ``kmeans_fn(embeddings, k, seed=..., max_iter=...) -> centres`` defaults to the batched torch K-means of
        this package. Returns the centres."""
        k = self.dictionary.shape[0]
        if embeddings.dim() != 2 or embeddings.shape[1] != self.dictionary.shape[1]:
            raise ValueError(
                f"embeddings must be [N, {self.dictionary.shape[1]}] (expert_hidden_size), got {tuple(embeddings.shape)}"
            )
        if embeddings.shape[0] == 0:
            raise ValueError("cannot initialise the IEC dictionary from zero embeddings")
        fn = kmeans_fn or kmeans
        centres = fn(embeddings.float(), k, seed=seed, max_iter=max_iter)
        self.fill_dictionary(torch.as_tensor(centres, dtype=torch.float32))
        return self.dictionary


class SceneBatchNorm(nn.BatchNorm1d):
    """``scene_norm_type="batch"``: the ``Norm`` of ``Norm(y_moe + y_iec)`` (§3.4) as a BatchNorm over the clips of the
    batch and their frames (running statistics at evaluation), applied to ``[B, T, d]``.

    The paper does not say which normalisation ``Norm`` is. Under a LayerNorm (``"layer"``, per frame vector) the
    scene side can learn one large vector shared by every clip — a soft prompt — that lowers the LM loss at once and
    drowns the per-clip signal (measured on the demo recipe, scene-only: relative spread of the scene tokens across
    clips 0.32 at initialisation, 0.002 after training, and the answer no longer depends on the scenes). A BatchNorm
    removes what every clip has in common before the projector, so a clip-independent component cannot grow there
    (the projector's bias can still add one after it; docs/scene-pathway.md has the measurements).
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden.reshape(-1, hidden.shape[-1])).view_as(hidden)


def build_scene_norm(config: IcmConfig) -> nn.Module:
    """The ``Norm`` of ``Norm(y_moe + y_iec)`` chosen by ``config.scene_norm_type`` (same parameter names either
    way, so checkpoints of the LayerNorm reading load unchanged)."""
    if config.scene_norm_type == "batch":
        return SceneBatchNorm(config.expert_hidden_size, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.expert_hidden_size, eps=config.layer_norm_eps)


class IcmSceneProjector(nn.Module):
    """Two-layer MLP from the expert width d to the LLM width (as Video-LLaVA's multimodal projector)."""

    def __init__(self, config: IcmConfig):
        super().__init__()
        hidden = config.hidden_size
        self.linear_1 = nn.Linear(config.expert_hidden_size, hidden)
        self.act = ACT2FN[config.scene_projector_hidden_act]
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


class IcmPreTrainedModel(PreTrainedModel):
    config_class = IcmConfig
    config: IcmConfig
    base_model_prefix = "icm"
    loss_type = "ForCausalLM"
    main_input_name = "input_ids"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["SceneExpertLayer", "LlamaDecoderLayer", "CLIPEncoderLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, SceneExpert):
            hf_init.normal_(module.null_token, mean=0.0, std=std)
        elif isinstance(module, SceneFeatureStandardizer):
            hf_init.zeros_(module.mean)
            hf_init.ones_(module.std)
        elif isinstance(module, ImplicitEnhancedCausal):
            hf_init.normal_(module.dictionary, mean=0.0, std=std)
            hf_init.zeros_(module.dictionary_initialized)
        elif isinstance(module, SceneBalancedMoE):
            hf_init.copy_(module.dimension_share, module.expected_dimension_share(module.dimension_share.device))
        elif hasattr(module, "class_embedding") and isinstance(module.class_embedding, nn.Parameter):
            hf_init.normal_(module.class_embedding, mean=0.0, std=std)


class IcmForVideoSentiment(IcmPreTrainedModel, GenerationMixin):
    """ICM for Omni-SILA: identify, locate and attribute visual sentiments in videos (paper §3).

    Sub-modules: ``backbone`` (a `VideoLlavaForConditionalGeneration` built from ``config.backbone_config``),
    ``sbm`` ([`SceneBalancedMoE`]), ``iec`` ([`ImplicitEnhancedCausal`], absent when ``use_iec=False``),
    ``scene_norm`` (the ``Norm`` of ``Norm(y_moe + y_iec)``) and ``scene_projector`` (d → LLM width).

    Inputs: ``input_ids``/``attention_mask`` with ``<video>`` placeholders (frames × patches each) and
    ``num_scene_tokens`` ``<scene>`` placeholders per example, ``pixel_values_videos`` ``[B, T, 3, H, W]``, and the
    scene features/masks of the contract (``modeling_icm.scene_contract``).
    """

    def __init__(self, config: IcmConfig):
        super().__init__(config)
        self.backbone = VideoLlavaForConditionalGeneration(config.backbone_config)
        self.sbm = self.iec = self.scene_norm = self.scene_projector = None  # use_scene_tokens=False: backbone alone
        if config.use_scene_tokens:
            self.sbm = SceneBalancedMoE(config)
            self.iec = ImplicitEnhancedCausal(config) if config.use_iec else None
            self.scene_norm = build_scene_norm(config)
            self.scene_projector = IcmSceneProjector(config)
        self.post_init()
        # Placeholders are inputs only: a generated <scene>/<video>/<image> would ask for features nobody gave.
        if self.generation_config is not None:
            self.generation_config.suppress_tokens = self.placeholder_token_ids

    @property
    def placeholder_token_ids(self) -> list[int]:
        backbone = self.config.backbone_config
        return sorted({self.config.scene_token_id, backbone.video_token_index, backbone.image_token_index})

    # -- embeddings -------------------------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.backbone.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.backbone.lm_head = value

    @property
    def language_model(self) -> nn.Module:
        return self.backbone.model.language_model

    # -- scene side ---------------------------------------------------------------------------------------------
    @property
    def icm_module_names(self) -> tuple[str, ...]:
        """Top-level names of the ICM modules (everything but the backbone)."""
        return tuple(name for name, _ in self.named_children() if name != "backbone")

    def encode_scenes(
        self,
        scene_features: dict[str, torch.Tensor],
        scene_masks: dict[str, torch.Tensor] | None = None,
        num_frames: int | None = None,
    ) -> SceneEncoding:
        """Run SBM, IEC, ``Norm`` and the projector on contract-valid scene features (no scene token, and the
        features unread, when ``use_scene_tokens=False``)."""
        if not self.config.use_scene_tokens:
            batch = next(iter(scene_features.values())).shape[0] if scene_features else 0
            embeddings = self.get_input_embeddings().weight
            return SceneEncoding(scene_tokens=embeddings.new_zeros(batch, 0, embeddings.shape[-1]))
        scenes = self.config.active_scenes
        expected = {s: self.config.scene_dims[s] for s in scenes}
        masks = validate_scene_inputs(
            {s: scene_features[s] for s in scene_features if s in scenes or s not in expected},
            {s: m for s, m in (scene_masks or {}).items() if s in scenes},
            expected,
            num_frames=num_frames,
        )
        dtype = self.scene_norm.weight.dtype
        feats = {s: scene_features[s].to(dtype) for s in scenes}
        frames = next(iter(feats.values())).shape[1]
        if any(f.shape[1] != frames for f in feats.values()):
            counts = {s: f.shape[1] for s, f in feats.items()}
            raise ValueError(f"scene_features disagree on the number of frames (frame count mismatch): {counts}")
        batches = {f.shape[0] for f in feats.values()}
        if len(batches) != 1:
            raise ValueError(
                f"scene_features disagree on the batch size: { {s: f.shape[0] for s, f in feats.items()} }"
            )
        if frames != self.config.num_frames:
            raise ValueError(
                f"scene_features have {frames} frames but the model was configured with num_frames="
                f"{self.config.num_frames} (frame count mismatch)"
            )
        sbm = self.sbm(feats, masks)
        y_moe = sbm.y_moe
        y_iec = None
        fused = y_moe
        if self.iec is not None:
            memory = sbm.expert_outputs.flatten(1, 2)
            memory_mask = sbm.available.flatten(1, 2)
            y_iec = self.iec(y_moe, memory, memory_mask)
            fused = y_moe + y_iec
        hidden = self.scene_norm(fused)
        if self.config.num_scene_tokens != frames:
            hidden = F.adaptive_avg_pool1d(hidden.transpose(1, 2), self.config.num_scene_tokens).transpose(1, 2)
        return SceneEncoding(
            scene_tokens=self.scene_projector(hidden),
            y_moe=y_moe,
            y_iec=y_iec,
            router_probs=sbm.router_probs,
            router_loss=sbm.router_loss,
            frame_valid=sbm.available.any(-1),
        )

    @torch.no_grad()
    def dictionary_embeddings(
        self, scene_features: dict[str, torch.Tensor], scene_masks: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The embeddings K-means clusters into the IEC dictionary: the y_moe vectors of the valid frames
        ``[N, d]`` of a batch."""
        enc = self.encode_scenes(scene_features, scene_masks)
        return enc.y_moe[enc.frame_valid].float()

    # -- the LLM side ---------------------------------------------------------------------------------------------
    def _video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        outputs = self.backbone.model.get_video_features(pixel_values_videos=pixel_values_videos, return_dict=True)
        return outputs.pooler_output

    def _scatter(self, inputs_embeds, input_ids, token_id, features, what: str, per_example: int):
        mask = input_ids == token_id
        counts = mask.sum(1)
        if bool((counts != per_example).any()):
            raise ValueError(
                f"{what} token count mismatch: each example needs {per_example} placeholder tokens (id {token_id}) "
                f"for its {what} features, got {counts.tolist()}"
            )
        features = features.reshape(-1, features.shape[-1]).to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1), features)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        scene_features: dict[str, torch.Tensor] | None = None,
        scene_masks: dict[str, torch.Tensor] | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values=None,
        frame_timestamps: torch.Tensor | None = None,
        clip_start: torch.Tensor | None = None,
        **kwargs,
    ) -> IcmOutput:
        """``frame_timestamps`` and ``clip_start`` are the processor's metadata (the timestamps are already in the
        prompt); they are accepted so that a processor batch can be passed whole, and not used."""
        cache = cache if cache is not None else past_key_values
        kwargs.pop("return_dict", None)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        cfg = self.config
        video_token_id = cfg.backbone_config.video_token_index
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        num_frames = None
        if not cfg.use_video_tokens:  # the scene-only ablation: the video tower never runs
            pixel_values_videos = None
        if pixel_values_videos is not None:
            if input_ids is None:
                raise ValueError("pixel_values_videos needs input_ids with <video> placeholders")
            if pixel_values_videos.dim() != 5:
                raise ValueError(
                    f"pixel_values_videos must be [batch, frames, 3, height, width], got {tuple(pixel_values_videos.shape)}"
                )
            num_frames = pixel_values_videos.shape[1]
            video = self._video_features(pixel_values_videos.to(inputs_embeds.dtype))
            per_example = num_frames * video.shape[1]
            if pixel_values_videos.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"pixel_values_videos has batch size {pixel_values_videos.shape[0]} but input_ids has "
                    f"{input_ids.shape[0]}"
                )
            inputs_embeds = self._scatter(inputs_embeds, input_ids, video_token_id, video, "video", per_example)
        elif input_ids is not None and bool((input_ids == video_token_id).any()):
            raise ValueError("input_ids contain <video> placeholders but no pixel_values_videos were given")

        encoding = None
        if scene_features is not None:
            if input_ids is None:
                raise ValueError("scene_features need input_ids with <scene> placeholders")
            encoding = self.encode_scenes(scene_features, scene_masks, num_frames=num_frames)
            if encoding.scene_tokens.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"scene_features have batch size {encoding.scene_tokens.shape[0]} but input_ids has "
                    f"{input_ids.shape[0]}"
                )
            inputs_embeds = self._scatter(
                inputs_embeds, input_ids, cfg.scene_token_id, encoding.scene_tokens, "scene", cfg.num_scene_placeholders
            )
        elif input_ids is not None and bool((input_ids == cfg.scene_token_id).any()):
            raise ValueError("input_ids contain <scene> placeholders but no scene_features were given")

        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Positions count real tokens only, so a left-padded example sees the positions it would see alone.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs[0]
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.backbone.lm_head(hidden)

        router_loss = encoding.router_loss if encoding is not None else None
        lm_loss = loss = None
        if labels is not None:
            lm_loss = self.loss_function(logits=logits, labels=labels, vocab_size=cfg.vocab_size)
            loss = lm_loss + router_loss if router_loss is not None else lm_loss
        return IcmOutput(
            loss=loss,
            lm_loss=lm_loss,
            router_loss=router_loss,
            logits=logits,
            router_probs=encoding.router_probs if encoding is not None else None,
            cache=getattr(outputs, "cache", None) if use_cache is not False else None,
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )

    def prepare_inputs_for_generation(
        self,
        input_ids,
        cache=None,
        attention_mask=None,
        inputs_embeds=None,
        pixel_values_videos=None,
        scene_features=None,
        scene_masks=None,
        is_first_iteration=False,
        **kwargs,
    ):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        # The video and the scenes are consumed once, at prefill; later steps read them from the cache.
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["pixel_values_videos"] = pixel_values_videos
            model_inputs["scene_features"] = scene_features
            model_inputs["scene_masks"] = scene_masks
        model_inputs.pop("position_ids", None)  # recomputed from the attention mask in forward
        return model_inputs

    def num_parameters_by_part(self) -> dict[str, int]:
        """Parameter counts of the backbone and of each ICM module (meta-device safe)."""
        parts = {"backbone": sum(p.numel() for p in self.backbone.parameters())}
        for name in self.icm_module_names:
            module = getattr(self, name)
            if module is not None:
                parts[name] = sum(p.numel() for p in module.parameters())
        parts["icm_total"] = sum(v for k, v in parts.items() if k != "backbone")
        parts["total"] = parts["backbone"] + parts["icm_total"]
        return parts

    @classmethod
    def from_video_llava(
        cls,
        pretrained: str | VideoLlavaForConditionalGeneration,
        config: IcmConfig | None = None,
        processor=None,
        processor_kwargs: dict | None = None,
        **from_pretrained_kwargs,
    ):
        """Build ICM around a pretrained Video-LLaVA; returns ``(model, processor)``.

        Args:
            pretrained: a Video-LLaVA checkpoint (folder or Hub id, e.g. ``LanguageBind/Video-LLaVA-7B-hf``, loaded
                with ``VideoLlavaForConditionalGeneration.from_pretrained``) or such a model.
            config: the ICM hyper-parameters (default: the paper's, ``IcmConfig()``). Its ``backbone_config`` is
                replaced by the checkpoint's and its ``scene_token_id`` by the id the tokenizer gives ``<scene>``.
            processor: where the tokenizer and video processor come from (default: ``pretrained``): a folder / Hub
                id, a ``VideoLlavaProcessor``, or a ready ``IcmProcessor``.
            processor_kwargs: further arguments of ``IcmProcessor.from_video_llava`` (``scene_extraction``,
                ``max_length``).
            from_pretrained_kwargs: passed to ``VideoLlavaForConditionalGeneration.from_pretrained`` (``dtype``,
                ``device_map``...).

        ``<scene>`` takes a spare embedding row when the checkpoint has one (7B-hf: 32,064 rows for 32,003 tokens, so
        ``<scene>`` = 32003 needs no resizing); otherwise the embeddings are resized to the tokenizer's length and a
        warning says so. The ICM modules (SBM, IEC, projector) are freshly initialised in float32 (they are trained;
        mixed-precision training wants float32 master weights), the backbone keeps the ``dtype`` it is loaded in
        (e.g. ``dtype=torch.bfloat16`` for a frozen 7B backbone under LoRA). Errors name the file: a
        checkpoint of another architecture, missing processor files, a tokenizer without ``<video>`` or whose
        ``<video>`` id differs from ``config.json``'s ``video_token_index``.
        """
        from .processing_icm import IcmProcessor, check_video_llava_folder

        if processor is None:
            if not isinstance(pretrained, (str, os.PathLike)):
                raise ValueError("from_video_llava(model) needs processor= (the checkpoint folder or its processor)")
            processor = pretrained
        where = os.fspath(pretrained) if isinstance(pretrained, (str, os.PathLike)) else "the given backbone"
        if isinstance(pretrained, (str, os.PathLike)):
            check_video_llava_folder(pretrained, need_weights=True)
        config = config if config is not None else IcmConfig()
        if not isinstance(processor, IcmProcessor):
            processor = IcmProcessor.from_video_llava(
                processor,
                num_frames=config.num_frames,
                num_scene_tokens=config.num_scene_tokens,
                **(processor_kwargs or {}),
            )
        if not isinstance(pretrained, VideoLlavaForConditionalGeneration):
            pretrained = VideoLlavaForConditionalGeneration.from_pretrained(pretrained, **from_pretrained_kwargs)
        backbone = pretrained
        tokenizer = processor.tokenizer
        vision_patch = backbone.config.vision_config.patch_size
        if processor.patch_size != vision_patch:
            raise ValueError(
                f"{where}: the processor's patch_size ({processor.patch_size}, processor_config.json) differs from the "
                f"vision tower's ({vision_patch}, config.json vision_config.patch_size)"
            )
        for token, field in ((T_VIDEO, "video_token_index"), (T_IMAGE, "image_token_index")):
            token_id = tokenizer.convert_tokens_to_ids(token)
            wanted = getattr(backbone.config, field)
            if token_id != wanted and not (token == T_IMAGE and token_id in (None, tokenizer.unk_token_id)):
                raise ValueError(
                    f"{where}: the tokenizer gives {token} the id {token_id} but config.json has {field}={wanted}"
                )
        rows = backbone.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > rows:
            backbone.resize_token_embeddings(len(tokenizer), mean_resizing=True)
            logger.warning(
                f"{where}: the embeddings have no spare row for {T_SCENE} (id {processor.scene_token_id}): resized "
                f"them from {rows} to {len(tokenizer)} rows (the new rows are the mean of the old ones)"
            )
        config_dict = config.to_dict()
        config_dict["backbone_config"] = backbone.config.to_dict()
        config_dict["scene_token_id"] = processor.scene_token_id
        config = IcmConfig(**{k: v for k, v in config_dict.items() if k not in ("model_type", "transformers_version")})
        with torch.device("meta"):
            model = cls(config)
        model.backbone = backbone
        model.to_empty_icm(backbone.device)  # float32 whatever the backbone's dtype: these modules train
        if model.generation_config is not None:
            model.generation_config.suppress_tokens = model.placeholder_token_ids
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                value = getattr(backbone.generation_config, key, None) if backbone.generation_config else None
                if value is not None:
                    setattr(model.generation_config, key, value)
        return model, processor

    def to_empty_icm(self, device) -> None:
        """Materialise and initialise the ICM modules (after the backbone was swapped in on a real device)."""
        for name in self.icm_module_names:
            module = getattr(self, name)
            if module is None:
                continue
            module.to_empty(device=device)
            for sub in module.modules():
                for p in list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False)):
                    if hasattr(p, "_is_hf_initialized"):
                        del p._is_hf_initialized
                self._init_weights(sub)
        if self.sbm is not None:
            self.sbm.dimension_share = self.sbm.expected_dimension_share(device)


IcmConfig.register_for_auto_class()
IcmForVideoSentiment.register_for_auto_class("AutoModel")

if __name__.startswith("modeling_icm."):  # imported as the library (not as Hub remote code): register for Auto*
    from transformers import AutoConfig

    AutoConfig.register("icm", IcmConfig, exist_ok=True)
    AutoModel.register(IcmConfig, IcmForVideoSentiment, exist_ok=True)

__all__ = [
    "IcmPreTrainedModel",
    "IcmForVideoSentiment",
    "IcmOutput",
    "SceneEncoding",
    "SceneExpert",
    "SceneBalancedMoE",
    "SceneBatchNorm",
    "ImplicitEnhancedCausal",
    "router_balance_loss",
]
