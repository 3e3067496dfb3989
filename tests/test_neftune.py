"""NEFTune: noise scaled by each sequence's own length (packed rows too), in training only, gone after the run."""

from __future__ import annotations

import pytest
import torch
from world import logged_losses, tiny_sft_config, train_run

from engine.config import ConfigError, RunConfig
from engine.neftune import add_neftune, sequence_lengths


def test_each_token_counts_its_own_sequences_length():
    packed = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3, 4]])
    assert sequence_lengths((1, 10), position_ids=packed).tolist() == [[3, 3, 3, 2, 2, 5, 5, 5, 5, 5]]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert sequence_lengths((2, 4), attention_mask=mask).tolist() == [[3] * 4, [4] * 4]
    assert sequence_lengths((2, 4)).tolist() == [[4] * 4] * 2


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2))


def test_a_packed_row_gets_each_sequences_noise_not_the_rows():
    """transformers' hook scaled a packed row's noise by the whole row: 20 sequences got sqrt(20) too little."""
    model = _tiny_llama()
    seen = []
    noise = add_neftune(model, alpha=5.0)
    model.get_input_embeddings().register_forward_hook(lambda m, i, out: seen.append(out.detach()) or out)
    ids = torch.randint(0, 64, (1, 400))
    positions = torch.arange(20).repeat(20)[None]  # twenty sequences of 20 tokens, one row
    model.train()
    model(input_ids=ids, position_ids=positions)
    model.eval()
    model(input_ids=ids, position_ids=positions)
    noisy, clean = seen
    bound = 5.0 / (20 * 32) ** 0.5  # alpha / sqrt(L d), L one sequence's 20 tokens
    drawn = (noisy - clean).abs().max().item()
    assert bound * 0.9 < drawn <= bound * 1.0001  # the whole row's 400 would allow 4.5x less
    noise.remove()
    model.train()
    model(input_ids=ids, position_ids=positions)
    assert torch.equal(seen[-1], clean)  # removed: the embeddings as they are


def test_dpo_refuses_neftune():
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"stage": "dpo", "training": {"neftune_noise_alpha": 5}})
    assert e.value.key == "error.config.neftune_dpo"
    with pytest.raises(ConfigError):
        RunConfig.from_dict({"training": {"neftune_noise_alpha": -1}})


def test_a_neftune_run_trains_on_noisy_embeddings_and_saves_a_clean_model(workdir, demo_model):
    """Same seed and data as a plain run: the losses differ (the noise is there), the run still learns, and the
    run's config keeps the setting for a re-run."""
    plain = train_run(workdir, tiny_sft_config(max_steps=6))
    noisy = train_run(workdir, tiny_sft_config(max_steps=6, neftune_noise_alpha=15.0))
    a, b = logged_losses(plain), logged_losses(noisy)
    assert a != b and b[-1] < b[0]
    assert RunConfig.load(str(noisy / "config.yaml")).training.neftune_noise_alpha == 15.0
