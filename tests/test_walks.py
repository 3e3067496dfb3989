"""engine/walks.py: the trainer's per-step walks over every module, answered from lists, change nothing."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
from world import logged_losses, tiny_sft_config, train_run

from engine import walks

SHAPE = {"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 2}


def _model(**lora):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SHAPE))
    return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.1, **lora))


def _dropouts(model) -> list[bool]:
    return [m.training for m in model.modules() if isinstance(m, torch.nn.Dropout)]


def test_train_zero_grad_and_parameters_answer_as_the_model_would():
    model = _model()
    model.train()
    walks.install(model)
    assert list(model.parameters()) == list(type(model).parameters(model))
    assert list(model.parameters(recurse=False)) == list(type(model).parameters(model, recurse=False))

    model.eval()  # evaluation: the model's own walk
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    inner = model.base_model.model.model.layers[1].self_attn.q_proj.lora_dropout["default"]
    inner.eval()  # one module put aside by someone: the next train() walks again
    model.train()
    assert inner.training and all(_dropouts(model))

    ids = torch.randint(0, SHAPE["vocab_size"], (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)
    model.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in trainable)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())

    walks.uninstall(model)
    assert not {"train", "zero_grad", "parameters", "_tb_walks"} & set(vars(model))
    model.eval()
    assert not any(_dropouts(model))


def test_a_module_with_its_own_train_keeps_being_called():
    """peft's DoRA layers clear a cache at every train(): the walk is kept for them."""
    model = _model(use_dora=True)
    model.train()
    walks.install(model)
    dora = next(m for m in model.modules() if hasattr(m, "_dora_cache"))
    dora._dora_cache["x"] = 1
    model.train()
    assert not dora._dora_cache


def test_someone_elses_override_is_left_alone():
    model = _model()

    def mine(mode=True):
        return model

    model.train = mine
    walks.install(model)
    assert model.train is mine and "zero_grad" not in vars(model)
    walks.uninstall(model)
    assert model.train is mine


@pytest.mark.parametrize("evaluate", [False, True])
def test_the_engine_trains_the_same_with_and_without_them(workdir, demo_model, monkeypatch, evaluate):
    """LoRA dropout on, so a model left in eval mode after an evaluation would train on other numbers."""
    cfg = tiny_sft_config(max_steps=6, gradient_accumulation_steps=2, eval_steps=2 if evaluate else 0)
    cfg["adapter"]["dropout"] = 0.1
    if evaluate:
        cfg["data"]["val_size"] = 8
    with_lists = logged_losses(train_run(workdir, cfg))
    installed = []
    monkeypatch.setattr(walks, "install", lambda model: installed.append(model))
    without = logged_losses(train_run(workdir, cfg))
    assert installed and len(with_lists) == 6
    assert with_lists == without
