"""Training arguments of ICM (paper §3.4, §4.3), trl style: the Trainer's own arguments plus the weighted extra loss
terms and the LoRA settings, each with a help string citing the paper."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

#: The LLM's attention and MLP projections inside the Video-LLaVA backbone, and nothing else: the vision tower
#: (``backbone.model.video_tower``/``image_tower``) and the ICM modules (whose attention also has ``q_proj``...) must
#: not be LoRA-wrapped. PEFT treats a string ``target_modules`` as a full-match regular expression.
LLM_LORA_TARGET_REGEX = r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"

STAGES = ("scene", "omnisila")


@dataclass
class IcmTrainingArguments(TrainingArguments):
    """[`~transformers.TrainingArguments`] with the ICM recipe as defaults (paper §4.3: AdamW, learning rate 2e-5,
    warmup ratio 0.03, three epochs, batch size 8; LoRA r 16, α 64, dropout 0.05 on the LLM) and the router-loss
    weights α, β of Eq. 2.

    ``router_alpha``/``router_beta`` are the one source of truth during training: :class:`~trainers.IcmTrainer`
    writes them into the model's ``config`` (which the SBM reads) before the first step.
    """

    stage: str = field(
        default="omnisila",
        metadata={
            "help": "Training stage (§3.4): 'scene' = scene-tuning (describe the face/action/region/background), "
            "'omnisila' = Omni-SILA tuning (identify, locate, attribute). The IEC dictionary is K-means initialised "
            "before the 'omnisila' stage."
        },
    )
    router_alpha: float = field(
        default=1e-4,
        metadata={"help": "α of Eq. 2, weight of the router-entropy term of L_rb (§4.3: 1e-4)."},
    )
    router_beta: float = field(
        default=1e-2,
        metadata={"help": "β of Eq. 2, weight of the dimension-balancing term L·Σ_j G_j·H_j of L_rb (§4.3: 1e-2)."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (§4.3: 'the dimension ... of the LoRA matrix' 16)."})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA scaling factor α (§4.3: 64)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout rate (§4.3: 0.05)."})
    lora_target_modules: str = field(
        default=LLM_LORA_TARGET_REGEX,
        metadata={
            "help": "Regex (PEFT full match) of the modules that get LoRA: the LLM's attention and MLP projections "
            "only (§4.3 fine-tunes Video-LLaVA with LoRA; the vision tower and the scene extractors stay frozen)."
        },
    )
    lora_modules_to_save: list[str] | None = field(
        default=None,
        metadata={
            "help": "Backbone modules trained in full besides LoRA (PEFT modules_to_save), e.g. ['embed_tokens', "
            "'lm_head']. Not in the paper (None = paper); the tiny CPU recipe uses it because a tiny random LLM "
            "learns too slowly through LoRA alone."
        },
    )
    icm_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the ICM modules (SBM, IEC, Norm, scene projector), which start from random, "
            "when it should differ from `learning_rate` (then the LoRA-adapted LLM's). None = `learning_rate` for "
            "every parameter, as §4.3 gives one rate. Like LLaVA's `mm_projector_lr`; the same schedule scales both."
        },
    )
    use_lora: bool = field(
        default=True,
        metadata={"help": "Wrap the LLM with LoRA (§4.3). False trains only the ICM modules (SBM, IEC, projector)."},
    )
    kmeans_backend: str = field(
        default="torch",
        metadata={
            "help": "K-means implementation for the IEC dictionary (§3.3): 'torch' (the batched torch K-means of "
            "modeling_icm.kmeans) or 'sklearn'. bench/bench_kmeans.py compares them at 100K embeddings; the "
            "faster one is the default."
        },
    )
    kmeans_max_iter: int = field(default=50, metadata={"help": "Lloyd iterations of the dictionary K-means (§3.3)."})
    answer_only_logits: bool = field(
        default=True,
        metadata={
            "help": "Compute the LM head only where L_lm has labels (the answer), not over the thousands of video "
            "tokens: the same L_lm (§3.4), a fraction of the logits memory."
        },
    )
    scene_diagnostics: bool = field(
        default=True,
        metadata={
            "help": "At every logging step, measure the scene pathway on the current batch and log it "
            "(trainers.diagnostics): scene_spread (relative spread of the scene tokens across the batch's clips), "
            "scene_norm_ratio (scene-token norm / text-embedding norm), scene_sensitivity (change of the answer "
            "distribution when the clips' scene features are swapped); a warning when the spread collapses. Costs "
            "two extra forward passes per logging step."
        },
    )
    generation_max_new_tokens: int = field(
        default=96, metadata={"help": "Tokens generated per answer when evaluating through generation (§4.4)."}
    )

    # Paper defaults (§4.3) for fields inherited from TrainingArguments.
    learning_rate: float = field(default=2e-5, metadata={"help": "Initial AdamW learning rate (§4.3: 2e-5)."})
    warmup_steps: float = field(
        default=0.03,
        metadata={"help": "Linear warm-up; a float < 1 is a ratio of the total steps (§4.3: warmup ratio 0.03)."},
    )
    warmup_ratio: float | None = field(
        default=None,
        metadata={"help": "The paper's name for a warm-up ratio (§4.3: 0.03); when given it sets warmup_steps."},
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs per stage (§4.3: three)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size (§4.3: 8)."})
    optim: str = field(default="adamw_torch", metadata={"help": "Optimizer (§4.3: AdamW)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep every column: the ICM collator needs the clip fields."}
    )
    report_to: str | list[str] | None = field(default="none", metadata={"help": "Integrations to report to."})

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {list(STAGES)}, got {self.stage!r}")
        if self.icm_learning_rate is not None and not self.icm_learning_rate > 0:
            raise ValueError(f"icm_learning_rate must be > 0 or None, got {self.icm_learning_rate!r}")
        for name in ("router_alpha", "router_beta", "lora_dropout"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if self.lora_r <= 0:
            raise ValueError(f"lora_r must be positive, got {self.lora_r!r}")
        if self.kmeans_backend not in ("torch", "sklearn"):
            raise ValueError(f"kmeans_backend must be 'torch' or 'sklearn', got {self.kmeans_backend!r}")
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
            self.warmup_steps = float(self.warmup_ratio)
        super().__post_init__()
