"""RunConfig.adapter -> a model ready to train: LoRA / DoRA / rsLoRA / QLoRA through peft, freeze, full."""

from __future__ import annotations

from pathlib import Path

from .config import RunConfig
from .messages import TuneboardError


def adapter_dir(path: str) -> Path:
    """A run folder's `adapter/`, or the path itself if it already holds an adapter."""
    p = Path(path)
    for cand in (p, p / "adapter"):
        if (cand / "adapter_config.json").exists():
            return cand
    raise TuneboardError("error.adapter_not_found", path=str(path))


def lora_config(cfg: RunConfig):
    from peft import LoraConfig

    a = cfg.adapter
    targets = a.target_modules
    return LoraConfig(
        r=a.rank, lora_alpha=a.alpha, lora_dropout=a.dropout, task_type="CAUSAL_LM", bias="none",
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        use_dora=a.use_dora, use_rslora=a.use_rslora,
    )


def prepare(model, cfg: RunConfig, checkpointing: bool = False, upcast_norms: bool = False, fused: bool = False):
    """Return the model to hand to the trainer, with exactly the intended parameters trainable.
    `checkpointing`, `upcast_norms`: the engine's choices (`Resolved`), for a quantized model's k-bit preparation;
    `fused`: LoRA layers train through `engine.lora_fused`."""
    a = cfg.adapter
    if a.method == "lora":
        from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

        if cfg.quantization.bits and upcast_norms:
            # casts norms, embeddings and LM head to fp32 (the QLoRA tutorial's recipe, for fp16); without it the
            # model stays in its compute dtype, peft freezes the base and the trainer turns on checkpointing
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        if a.init_from:
            model = PeftModel.from_pretrained(model, str(adapter_dir(a.init_from)), is_trainable=True)
        else:
            try:
                model = get_peft_model(model, lora_config(cfg))
            except ValueError as e:
                raise TuneboardError("error.lora_targets", targets=", ".join(a.target_modules), error=str(e)) from e
        if fused:
            from .lora_fused import fuse_lora_layers

            fuse_lora_layers(model)
        return cast_inputs_only_without_autocast(model)
    if a.method == "freeze":
        layers = decoder_layers(model)
        n = min(a.freeze_trainable_layers, len(layers))
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in layers[len(layers) - n:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        return model
    for p in model.parameters():  # full
        p.requires_grad_(True)
    return model


class _CastUnlessAutocast:
    """peft's `cast_input_dtype_enabled` for one LoRA layer, read at every forward: false under autocast."""

    def __bool__(self) -> bool:
        import torch

        return not (torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu"))


def loraplus_optimizer(trainer, ratio: float):
    """LoRA+ (peft's own): the trainer's optimizer, its class and settings as the run chose them, with the B
    matrices' learning rate `ratio` times A's. Set as `trainer.optimizer` before training, the trainer keeps it and
    schedules every group alike."""
    from peft.optimizers import create_loraplus_optimizer

    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
    lr = kwargs.pop("lr", trainer.args.learning_rate)
    return create_loraplus_optimizer(trainer.model, cls, lr=lr, loraplus_lr_ratio=ratio,
                                     loraplus_weight_decay=trainer.args.weight_decay, **kwargs)


def cast_inputs_only_without_autocast(model):
    """peft casts each LoRA layer's input to the adapter's dtype: on a GPU, a bf16 activation to fp32 (LoRA weights
    stay fp32), a full copy per adapted layer that autocast casts straight back to bf16 for the matmul and keeps
    for backward. For Llama-2-7B on all linear layers at 4,096 tokens that is 224 copies (32 MB each in bf16,
    90 MB for down_proj) made and read back, forward and backward: about 110 GB of memory traffic a step, and
    4 GB of activations (adapters on one input now keep it once). Under autocast the input is left as it is, with
    the same numbers to the bit (tests/test_train.py; with LoRA dropout the masks differ, as with another seed);
    without autocast (a CPU in fp32) peft casts as before. DoRA's layers keep peft's cast: DoRA adds the input's
    terms outside the matmul."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and not getattr(module, "lora_variant", None):
            module.cast_input_dtype_enabled = _CastUnlessAutocast()
    return model


def decoder_layers(model):
    """The stack of transformer blocks (`model.model.layers` in Llama-style models)."""
    import torch

    best = None
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and (best is None or len(module) > len(best)):
            best = module
    if best is None:
        raise TuneboardError("error.no_layers")
    return best
