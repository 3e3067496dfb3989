"""training.checkpoint_layers: with gradient checkpointing, only the first N layers recompute; the rest keep their
activations. The same training, fewer recomputes."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
from world import logged_losses, tiny_sft_config, train_run

from engine.callbacks import trim_checkpointing

SHAPE = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 4}


def _runs_per_layer(model) -> list[int]:
    """How many times each decoder layer's MLP runs in one forward and backward: twice where it recomputes."""
    runs = [0] * SHAPE["num_hidden_layers"]
    layers = model.get_base_model().model.layers if hasattr(model, "get_base_model") else model.model.layers
    for i, layer in enumerate(layers):  # the MLP's forward itself: module hooks don't run in a recompute
        def counted(*args, i=i, forward=layer.mlp.forward, **kwargs):
            runs[i] += 1
            return forward(*args, **kwargs)

        layer.mlp.forward = counted
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    return runs


def _model(freeze_first: int = 0):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SHAPE))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if freeze_first:  # freeze tuning: only the last layers train, and gradients flow through those alone
        for p in model.parameters():
            p.requires_grad = False
        for layer in model.model.layers[freeze_first:]:
            for p in layer.parameters():
                p.requires_grad = True
        return model.train()
    model.enable_input_require_grads()
    return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear")).train()


def _grads(model) -> dict:
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("n, recomputing", [(1, [2, 1, 1, 1]), (3, [2, 2, 2, 1]), (4, [2, 2, 2, 2]),
                                            (9, [2, 2, 2, 2])])
def test_only_the_first_layers_recompute(n, recomputing):
    """And the same gradients, with no gradient for the embeddings' output (only reentrant checkpointing
    needs one), so the first layer's input gradient is not computed."""
    untrimmed = _model()
    assert _runs_per_layer(untrimmed) == [2, 2, 2, 2]  # plain checkpointing: every layer twice
    model = _model()
    assert trim_checkpointing(model, n) == (min(n, 4), 4)
    assert _runs_per_layer(model) == recomputing
    ids = torch.zeros(1, 4, dtype=torch.long)
    assert untrimmed.get_input_embeddings()(ids).requires_grad and not model.get_input_embeddings()(ids).requires_grad
    want, got = _grads(untrimmed), _grads(model)
    assert want.keys() == got.keys() and len(got) == 56  # 4 layers x 7 projections x (A, B)
    for name, grad in want.items():
        assert torch.allclose(got[name], grad, atol=1e-6), name


def test_freeze_tuning_runs_no_backward_through_its_frozen_layers():
    """transformers' checkpointing makes the embeddings' output require a gradient, so backward ran through every
    frozen layer (recomputing each) for nothing; trimmed, the frozen layers run once, and the count of layers
    that recompute starts at the first trained one, as the estimate's does."""
    untrimmed = _model(freeze_first=2)
    assert _runs_per_layer(untrimmed) == [2, 2, 2, 2]  # as transformers leaves it
    model = _model(freeze_first=2)
    assert trim_checkpointing(model) == (2, 2)
    assert _runs_per_layer(model) == [1, 1, 2, 2]
    model = _model(freeze_first=2)
    assert trim_checkpointing(model, 1) == (1, 2)
    assert _runs_per_layer(model) == [1, 1, 2, 1]
    want, got = _grads(untrimmed), _grads(model)
    assert want.keys() == got.keys() and len(got) == 18  # 2 layers x (7 projections + 2 norms)
    for name, grad in want.items():
        assert grad.abs().sum() > 0 and torch.allclose(got[name], grad, atol=1e-6), name


@pytest.mark.parametrize("method", ["lora", "freeze"])
def test_the_engine_trains_the_same_with_layers_trimmed(workdir, demo_model, method):
    """LoRA with one layer recomputing, freeze tuning with no backward through its frozen layers: the same losses
    as without checkpointing; the run records and says how many layers recompute."""
    def run(**training):
        cfg = tiny_sft_config(max_steps=3)
        if method == "freeze":
            cfg = {**cfg, "adapter": {"method": "freeze", "freeze_trainable_layers": 1}}
        return train_run(workdir, {**cfg, "training": {**cfg["training"], **training}})

    layers = 1 if method == "lora" else None
    on, off = run(gradient_checkpointing="on", checkpoint_layers=layers), run(gradient_checkpointing="off")
    assert json.loads((on / "resolved.json").read_text())["checkpoint_layers"] == layers
    said = "gradient checkpointing (first 1 layer)" if layers else "gradient checkpointing"
    assert said in (on / "train.log").read_text()
    assert logged_losses(on) == pytest.approx(logged_losses(off), rel=1e-4)
