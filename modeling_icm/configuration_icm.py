"""ICM model configuration (paper §3.2-3.4)."""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .scene_contract import DEFAULT_SCENE_DIMS
from .templates import SCENE_NAMES

#: The released Video-LLaVA-7B checkpoint (``LanguageBind/Video-LLaVA-7B-hf``): LLaMA-7B (Vicuna) text model with a
#: padded 32064-row vocabulary, CLIP ViT-L/14 224px towers, features from layer -2.
VIDEO_LLAVA_7B_BACKBONE: dict = {
    "model_type": "video_llava",
    "image_token_index": 32000,
    "video_token_index": 32001,
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "projector_hidden_act": "gelu",
    "image_seq_length": 256,
    "video_seq_length": 2056,
    "text_config": {
        "model_type": "llama",
        "vocab_size": 32064,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "pad_token_id": 32002,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "vision_config": {
        "model_type": "clip_vision_model",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
}


#: The ``video-sentiment-analysis`` pipeline (``pipeline_icm.py``, shipped with the remote code): every saved config
#: names it, so ``pipeline(task, model=folder_or_hub_id, trust_remote_code=True)`` finds it.
CUSTOM_PIPELINES = {
    "video-sentiment-analysis": {
        "impl": "pipeline_icm.VideoSentimentAnalysisPipeline",
        "pt": ["AutoModel"],
        "type": "multimodal",
    }
}


def video_sentiment_pipeline_class():
    """The pipeline class (a relative import here makes ``save_pretrained`` copy ``pipeline_icm.py`` along)."""
    from .pipeline_icm import VideoSentimentAnalysisPipeline

    return VideoSentimentAnalysisPipeline


class IcmConfig(PretrainedConfig):
    r"""Configuration of [`IcmForVideoSentiment`]: a Video-LLaVA backbone plus the Scene-Balanced MoE (SBM) and the
    Implicit-Enhanced Causal (IEC) blocks. ``IcmConfig()`` with no arguments reproduces the paper's model on
    ``LanguageBind/Video-LLaVA-7B-hf`` (§4.3: 4 experts of 8 layers, α = 1e-4, β = 1e-2).

    Args:
        backbone_config (`VideoLlavaConfig` or `dict`, *optional*):
            The Video-LLaVA backbone. Defaults to the Video-LLaVA-7B configuration (image token 32000, video token
            32001, pad 32002, vocabulary 32064, LLaMA-7B text model, CLIP ViT-L/14 vision model, feature layer -2).
        scene_dims (`dict[str, int]`, *optional*):
            Input dimension of each scene's features (x_f, x_a, x_o, x_b of §3.1), keyed by scene name. Defaults to
            what the default extractors produce (`modeling_icm.scene_contract.DEFAULT_SCENE_DIMS`).
        enabled_scenes (`list[str]`, *optional*):
            The scenes the model uses (Table 3's per-scene ablations); a subset of
            ``("face", "action", "object", "background")``, kept in that order. Defaults to all four.
        use_sbm (`bool`, *optional*, defaults to `True`):
            Ablation "w/o SBM" (Tables 1-2) when `False`: no scene experts and no router; each scene's features are
            projected linearly to `expert_hidden_size`, pooled per frame and averaged with equal weights, and
            ``L_rb = 0``. (The paper does not say what replaces SBM; this is the plainest fusion.)
        use_iec (`bool`, *optional*, defaults to `True`):
            Ablation "w/o IEC" when `False`: ``y_iec = 0`` so the scene tokens are ``Norm(y_moe)``.
        use_scene_tokens (`bool`, *optional*, defaults to `True`):
            The Video-LLaVA baseline of Tables 1-2 when `False`: the backbone alone, with no SBM, no IEC, no scene
            projector and no ``<scene>`` placeholders (the processor writes none; scene features given to the model
            are ignored, so the same data pipeline and trainer run). `use_sbm`, `use_iec` and `enabled_scenes` are
            then unused and ``active_scenes`` is empty.
        use_video_tokens (`bool`, *optional*, defaults to `True`):
            The scene-only ablation ("w/o video") when `False`, the complement of `use_scene_tokens=False`: the
            prompt holds no ``<video>`` placeholder at all and the video tower never runs (``pixel_values_videos``
            given to the model are ignored), so the LLM sees the scene tokens, the frame timestamps and the
            instruction only. Removing the placeholders (rather than feeding zero vectors at them) keeps the
            sequence short and leaves no position whose content is a constant. Not in the paper; it is the cleanest
            test that the scene pathway carries the clip to the answer.
        scene_norm_type (`str`, *optional*, defaults to `"layer"`):
            The ``Norm`` of ``Norm(y_moe + y_iec)`` (§3.4; the paper does not say which): `"layer"`, a LayerNorm over
            the channels of each frame vector, or `"batch"`, a BatchNorm over the clips of a batch and their frames
            (running statistics at evaluation; see `SceneBatchNorm`), which removes what every clip has in common
            before the projector. Measured on the scene-only demo (docs/scene-pathway.md): it keeps the tokens' spread
            across clips (0.13 after training against 0.002 under `"layer"`) but the answers stay at chance.
        expert_hidden_size (`int`, *optional*, defaults to 1024):
            Width d of every scene expert, of the router's input h and of the IEC block.
        expert_num_layers (`int`, *optional*, defaults to 8):
            Transformer layers per scene expert (§4.3: "the layers of each expert are set to be 8").
        expert_num_heads (`int`, *optional*, defaults to 16):
            Attention heads in each expert layer.
        expert_intermediate_size (`int`, *optional*, defaults to 4096):
            MLP width in each expert layer.
        expert_dropout (`float`, *optional*, defaults to 0.0):
            Dropout inside the expert and IEC layers.
        num_frames (`int`, *optional*, defaults to 8):
            Frames sampled per clip (§4.1: "we sample 8 frames for each video clip"); the scene features and the
            video must have exactly this many frames. Experts add a learned embedding of the frame index so that the
            scene tokens carry time (the LLM answers in seconds).
        num_scene_tokens (`int`, *optional*, defaults to 8):
            Scene tokens given to the LLM. SBM and IEC work per frame; when this differs from `num_frames` the
            per-frame outputs are average-pooled over time to this many tokens.
        iec_num_heads (`int`, *optional*, defaults to 16):
            Heads of the self-sampling (Eq. 3) and cross-sampling (Eq. 4) attentions.
        iec_dictionary_size (`int`, *optional*, defaults to 512):
            K, the number of K-means centres in the global confounder dictionary of Eq. 4 (the paper does not give
            K).
        iec_intermediate_size (`int`, *optional*, defaults to 4096):
            Width of the FFN in ``y_iec = FFN(y_m + y_x)``.
        iec_output_norm (`bool`, *optional*, defaults to `False`):
            Not in the paper (whose reading is `False`): a LayerNorm on ``y_iec`` before ``Norm(y_moe + y_iec)``, so
            that the IEC output enters the sum at the scale of ``y_moe`` (a LayerNorm output, Eq. 1). Without it
            nothing bounds ``y_iec``; it can grow into a large vector shared by every clip that the final ``Norm``
            turns into the same scene tokens for every clip (see ``docs/scene-pathway.md``).
        scene_feature_norm (`str`, *optional*, defaults to `"none"`):
            How each scene expert receives its extractor's features. `"none"` (the paper, which feeds the frozen
            extractors' outputs to the experts as they come) or `"standardize"`: per input dimension, minus the
            training set's mean and over its standard deviation, before the experts (buffers of the SBM's
            ``SceneFeatureStandardizer``, saved with the model, filled before training by
            ``trainers.scene_stats.fit_scene_standardization``; unfilled, they are the identity). The extractors' dimensions differ in scale by orders
            of magnitude (the tiny action features: median std 0.006, largest 0.43), and a linear read-out of the
            small ones needs large weights that Adam and weight decay are slow to build.
        router_alpha (`float`, *optional*, defaults to 1e-4):
            α of Eq. 2, weight of the router entropy term.
        router_beta (`float`, *optional*, defaults to 1e-2):
            β of Eq. 2, weight of the dimension-balancing term.
        router_balance (`str`, *optional*, defaults to `"dimension_share"`):
            How G_j of Eq. 2 is read (see `router_balance_loss`): `"dimension_share"` (the paper's text: the
            constant share of expert j's scene dimension) or `"dispatch"` (the indicator ``1{e_j ∈ E_j}`` read as
            the fraction of frames dispatched to expert j, weighted by its dimension, as in Switch Transformer's
            load balancing).
        router_dimension_share (`dict`, *optional*):
            G_j of Eq. 2 given per scene (normalised over the enabled scenes), in place of each scene's share of
            the input dimension. `None` (the default, the paper's text) computes it from `scene_dims`. A diagnostic
            handle: with the `"dimension_share"` reading the router is pushed towards the scene with the smallest
            G_j, and giving G_j by hand separates that push from what the scene features say.
        scene_token_id (`int`, *optional*, defaults to 32003):
            Token id of the ``<scene>`` placeholder. The default is the id Video-LLaVA-7B-hf's tokenizer gives it
            (the first free id after ``<pad>``, inside the padded 32064-row vocabulary, so no resizing is needed);
            `IcmForVideoSentiment.from_video_llava` always sets it from the tokenizer it adds ``<scene>`` to.
        scene_projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the two-layer projector from d to the LLM width (as Video-LLaVA's projector).
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorms of SBM (Eq. 1), IEC and the final ``Norm``.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of the ICM modules (and of the initial IEC dictionary,
            which K-means centres replace before Omni-SILA tuning).
    """

    model_type = "icm"
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(
            config_class=AutoConfig, model_type="video_llava", init_kwargs=VIDEO_LLAVA_7B_BACKBONE
        )
    }

    backbone_config: dict | PretrainedConfig | None = None
    scene_dims: dict | None = None
    enabled_scenes: list | None = None
    use_sbm: bool = True
    use_iec: bool = True
    use_scene_tokens: bool = True
    use_video_tokens: bool = True
    scene_norm_type: str = "layer"
    expert_hidden_size: int = 1024
    expert_num_layers: int = 8
    expert_num_heads: int = 16
    expert_intermediate_size: int = 4096
    expert_dropout: float = 0.0
    num_frames: int = 8
    num_scene_tokens: int = 8
    iec_num_heads: int = 16
    iec_dictionary_size: int = 512
    iec_intermediate_size: int = 4096
    router_alpha: float = 1e-4
    router_beta: float = 1e-2
    router_balance: str = "dimension_share"
    router_dimension_share: dict | None = None
    iec_output_norm: bool = False
    scene_feature_norm: str = "none"
    scene_token_id: int = 32003
    scene_projector_hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.scene_dims is None:
            self.scene_dims = dict(DEFAULT_SCENE_DIMS)
        if self.enabled_scenes is None:
            self.enabled_scenes = list(SCENE_NAMES)
        # The backbone's own kwargs given flat (rare) are not ours; everything else goes to PretrainedConfig.
        super().__post_init__(**kwargs)
        if not getattr(self, "custom_pipelines", None):
            self.custom_pipelines = {task: dict(info) for task, info in CUSTOM_PIPELINES.items()}
        self.validate_icm()

    # The scenes, in the paper's order, that the model builds experts for.
    @property
    def active_scenes(self) -> list[str]:
        if not self.use_scene_tokens:
            return []
        return [s for s in SCENE_NAMES if s in self.enabled_scenes]

    @property
    def num_scene_placeholders(self) -> int:
        """``<scene>`` placeholders per prompt: ``num_scene_tokens``, or 0 for the backbone alone."""
        return self.num_scene_tokens if self.use_scene_tokens else 0

    @property
    def text_config(self):
        return self.backbone_config.text_config

    @property
    def hidden_size(self) -> int:
        return self.backbone_config.text_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.backbone_config.text_config.vocab_size

    def validate_icm(self) -> None:
        """Raise ``ValueError`` naming the field that is wrong."""
        dims = self.scene_dims
        if not isinstance(dims, dict):
            raise ValueError(f"scene_dims must be a dict scene -> int, got {type(dims).__name__}")
        unknown = [s for s in dims if s not in SCENE_NAMES]
        if unknown:
            raise ValueError(f"scene_dims has unknown scene(s) {unknown}; known scenes are {list(SCENE_NAMES)}")
        for scene, dim in dims.items():
            if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
                raise ValueError(f"scene_dims[{scene!r}] must be a positive int, got {dim!r}")
        if not self.use_scene_tokens and not self.use_video_tokens:
            raise ValueError(
                "use_scene_tokens and use_video_tokens are both False: the model would see no clip at all"
            )
        if self.router_balance not in ("dimension_share", "dispatch"):
            raise ValueError(f"router_balance must be 'dimension_share' or 'dispatch', got {self.router_balance!r}")
        if self.scene_feature_norm not in ("none", "standardize"):
            raise ValueError(f"scene_feature_norm must be 'none' or 'standardize', got {self.scene_feature_norm!r}")
        if self.scene_norm_type not in ("layer", "batch"):
            raise ValueError(f"scene_norm_type must be 'layer' or 'batch', got {self.scene_norm_type!r}")
        enabled = list(self.enabled_scenes)
        if not enabled:
            raise ValueError("enabled_scenes must name at least one scene")
        for scene in enabled:
            if scene not in SCENE_NAMES:
                raise ValueError(f"enabled_scenes has unknown scene {scene!r}; known scenes are {list(SCENE_NAMES)}")
            if scene not in dims:
                raise ValueError(f"enabled_scenes has {scene!r} but scene_dims gives no dimension for it")
        if len(set(enabled)) != len(enabled):
            raise ValueError(f"enabled_scenes has duplicates: {enabled}")
        shares = self.router_dimension_share
        if shares is not None:
            if not isinstance(shares, dict) or any(s not in shares for s in enabled):
                raise ValueError(f"router_dimension_share must give a share for every enabled scene {enabled}, got {shares!r}")
            bad = {s: v for s, v in shares.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0}
            if bad or any(s not in SCENE_NAMES for s in shares):
                raise ValueError(f"router_dimension_share must map known scenes to positive numbers, got {shares!r}")
        self.enabled_scenes = [s for s in SCENE_NAMES if s in enabled]
        positive = (
            "expert_hidden_size",
            "expert_num_layers",
            "expert_num_heads",
            "expert_intermediate_size",
            "num_frames",
            "num_scene_tokens",
            "iec_num_heads",
            "iec_dictionary_size",
            "iec_intermediate_size",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.expert_hidden_size % self.expert_num_heads:
            raise ValueError(
                f"expert_hidden_size ({self.expert_hidden_size}) must be divisible by expert_num_heads "
                f"({self.expert_num_heads})"
            )
        if self.expert_hidden_size % self.iec_num_heads:
            raise ValueError(
                f"expert_hidden_size ({self.expert_hidden_size}) must be divisible by iec_num_heads "
                f"({self.iec_num_heads})"
            )
        if self.num_scene_tokens > self.num_frames:
            raise ValueError(
                f"num_scene_tokens ({self.num_scene_tokens}) cannot exceed num_frames ({self.num_frames}): scene "
                "tokens are pooled from the per-frame SBM/IEC outputs"
            )
        for name in ("router_alpha", "router_beta", "expert_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.expert_dropout >= 1:
            raise ValueError(f"expert_dropout must be < 1, got {self.expert_dropout!r}")
        backbone = self.backbone_config
        vocab = backbone.text_config.vocab_size
        special = {
            "scene_token_id": self.scene_token_id,
            "backbone_config.video_token_index": backbone.video_token_index,
            "backbone_config.image_token_index": backbone.image_token_index,
        }
        for name, token_id in special.items():
            if not isinstance(token_id, int) or not 0 <= token_id < vocab:
                raise ValueError(f"{name} must be a token id in [0, {vocab}), got {token_id!r}")
        if self.scene_token_id in (backbone.video_token_index, backbone.image_token_index):
            raise ValueError(
                f"scene_token_id ({self.scene_token_id}) must differ from the image and video token ids "
                f"({backbone.image_token_index}, {backbone.video_token_index})"
            )


__all__ = ["CUSTOM_PIPELINES", "IcmConfig", "VIDEO_LLAVA_7B_BACKBONE"]
