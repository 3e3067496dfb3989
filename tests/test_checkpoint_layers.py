"""training.checkpoint_layers: with gradient checkpointing, only the first N layers recompute; the rest keep their
activations. The same training, fewer recomputes."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
from world import logged_losses, tiny_sft_config, train_run

from engine.callbacks import checkpoint_first_layers

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


@pytest.mark.parametrize("n, recomputing", [(1, [2, 1, 1, 1]), (3, [2, 2, 2, 1]), (4, [2, 2, 2, 2]),
                                            (9, [2, 2, 2, 2])])
def test_only_the_first_layers_recompute(n, recomputing):
    model = _model()
    assert _runs_per_layer(model) == [2, 2, 2, 2]  # plain checkpointing: every layer twice
    model = _model()
    assert checkpoint_first_layers(model, n) == (min(n, 4), 4)
    assert _runs_per_layer(model) == recomputing


def test_freeze_tuning_counts_from_the_first_trained_layer():
    """The frozen layers before it stay checkpointed as they were (they keep only their inputs); the count
    starts at the first trained layer, as the estimate's does."""
    model = _model(freeze_first=2)
    assert checkpoint_first_layers(model, 1) == (1, 2)
    assert _runs_per_layer(model) == [2, 2, 2, 1]


def test_the_engine_trains_the_same_recomputing_one_layer(workdir, demo_model):
    """The same losses as plain checkpointing and as none; the run records and says how many layers recompute."""
    def run(**training):
        cfg = tiny_sft_config(max_steps=3)
        return train_run(workdir, {**cfg, "training": {**cfg["training"], **training}})

    one, off = run(gradient_checkpointing="on", checkpoint_layers=1), run(gradient_checkpointing="off")
    assert json.loads((one / "resolved.json").read_text())["checkpoint_layers"] == 1
    assert "gradient checkpointing (first 1 layers)" in (one / "train.log").read_text()
    assert logged_losses(one) == pytest.approx(logged_losses(off), rel=1e-4)
