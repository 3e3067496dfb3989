"""Packing and padding-free batches without cross-contamination: each sample sees only itself.

A packed row holds several samples whose position ids restart at 0. Every attention path the engine
can pick (sdpa's block-diagonal mask, the `varlen` kernel's per-sample reference on CPU) must give each
sample the logits it gets alone, and training must give the loss that padded batches give.
"""

import pytest
import torch
from world import logged_losses, tiny_sft_config, train_run

from engine.attention import cu_seqlens_from_position_ids, hf_name
from engine.config import RunConfig
from engine.events import RunStarted, read_events


def _tiny(attn, heads=4, kv_heads=2, sliding_window=None):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads,
                      use_sliding_window=sliding_window is not None, sliding_window=sliding_window,
                      max_window_layers=0)
    return Qwen2ForCausalLM._from_config(cfg, attn_implementation=hf_name(attn)).eval()


SAMPLES = [torch.randint(0, 97, (1, n), generator=torch.Generator().manual_seed(n)) for n in (5, 9, 1, 7)]


def _packed():
    ids = torch.cat(SAMPLES, 1)
    pos = torch.cat([torch.arange(s.shape[1]) for s in SAMPLES])[None]
    return ids, pos


@pytest.mark.parametrize("attn", ["sdpa", "eager", "varlen"])
@pytest.mark.parametrize("gqa", [True, False])
def test_packed_row_gives_each_sample_its_own_logits(attn, gqa):
    model = _tiny(attn, kv_heads=2 if gqa else 4)
    ids, pos = _packed()
    with torch.no_grad():
        packed = model(ids, position_ids=pos, use_cache=False).logits
        alone = torch.cat([model(s, use_cache=False).logits for s in SAMPLES], 1)
    assert (packed - alone).abs().max() < 1e-5


def test_without_restarting_positions_samples_do_see_each_other():
    """The check above can fail: the same row read as one sequence gives other logits."""
    model = _tiny("varlen")
    ids, _ = _packed()
    with torch.no_grad():
        one = model(ids, use_cache=False).logits
        alone = torch.cat([model(s, use_cache=False).logits for s in SAMPLES], 1)
    assert (one - alone)[:, 5:].abs().max() > 1e-3


def test_varlen_uses_the_boundaries_trl_passes_and_matches_sdpa_with_a_sliding_window():
    ids, pos = _packed()
    cu = cu_seqlens_from_position_ids(pos)
    assert cu.tolist() == [0, 5, 14, 15, 22]
    ref, model = _tiny("sdpa", sliding_window=3), _tiny("varlen", sliding_window=3)
    with torch.no_grad():
        a = model(ids, position_ids=pos, use_cache=False, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                  max_length_q=9, max_length_k=9).logits
        b = ref(ids, position_ids=pos, use_cache=False).logits
    assert (a - b).abs().max() < 1e-5


def test_varlen_model_pads_and_generates_like_sdpa():
    ref, model = _tiny("sdpa"), _tiny("varlen")
    ids = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding: the mask path, not the packed one
    with torch.no_grad():
        diff = (model(ids, attention_mask=mask).logits - ref(ids, attention_mask=mask).logits)[mask.bool()]
    assert diff.abs().max() < 1e-5
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids[:1], **kw), ref.generate(ids[:1], **kw))


def _first_losses(workdir, steps=3, **data_and_training):
    cfg = tiny_sft_config(max_steps=steps, per_device_train_batch_size=8)
    cfg["data"].update(max_length=4096, datasets=[{"path": "demo:sft", "max_samples": 24}])
    for key, value in data_and_training.items():
        section, name = key.split("__")
        cfg.setdefault(section, {})[name] = value
    run_dir = train_run(workdir, cfg)
    started = next(e for e in read_events(str(run_dir / "events.jsonl")) if isinstance(e, RunStarted))
    return logged_losses(run_dir), started, run_dir


def test_padding_free_batches_train_exactly_like_padded_ones(workdir, demo_model):
    """Same rows per step, flattened without pad tokens: the same losses, step after step."""
    import json

    padded, _, _ = _first_losses(workdir, training__padding_free="off")
    free, _, run_dir = _first_losses(workdir, training__padding_free="on")
    assert json.loads((run_dir / "resolved.json").read_text())["padding_free"] is True
    assert len(padded) == len(free) == 3
    for a, b in zip(padded, free, strict=True):
        assert abs(a - b) < 2e-3 * max(1.0, a), (padded, free)


@pytest.fixture(scope="module")
def padded_first_loss(workdir, demo_model):
    return _first_losses(workdir, steps=1, training__per_device_train_batch_size=64)[0]


@pytest.mark.parametrize("attn", ["sdpa", "varlen"])
def test_packed_and_padded_first_losses_agree(workdir, padded_first_loss, attn):
    """One batch holds the whole slice, so packing changes the layout, not the content."""
    cfg = dict(data__packing=True, model__attn_implementation=attn)
    padded = padded_first_loss
    packed, started, _ = _first_losses(workdir, steps=1, training__per_device_train_batch_size=64, **cfg)
    assert started.attn_implementation == attn
    assert abs(padded[0] - packed[0]) < 1e-3 * max(1.0, padded[0]), (padded, packed)


def test_padding_free_without_packing_flattens_truncated_rows(workdir, demo_model):
    """The engine swaps in trl's flattening collator for rows that `prepare_data` cut to max_length."""
    from engine import model as model_mod
    from engine import sft
    from engine.data import load_training_data
    from engine.train import training_args

    cfg = RunConfig.from_dict({**tiny_sft_config(max_steps=1), "model": {"name_or_path": str(demo_model)}})
    cfg.data.max_length = 24
    cfg.training.padding_free = "on"
    cfg.data.packing = "off"  # a folder is no demo to auto: on a GPU it would pack
    res = model_mod.resolve(cfg, workdir)
    assert res.padding_free and not res.packing
    tok = model_mod.load_tokenizer(cfg, res)
    train, _ = sft.prepare_data(tok, *load_training_data(cfg), cfg, res.packing)
    assert train.cut > 0  # the cutoff bites, so the test sees cut rows
    trainer = sft.build(model_mod.load_model(cfg, res), tok, train.dataset, None, cfg, res,
                        training_args(cfg, res, workdir / "pf", False), [])
    rows = [trainer.train_dataset[i] for i in range(4)]
    assert all(len(r["input_ids"]) <= 24 for r in rows)
    batch = trainer.data_collator(rows)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))
    assert batch["position_ids"][0].tolist() == [i for r in rows for i in range(len(r["input_ids"]))]


def test_varlen_kernel_keywords_follow_the_installed_torch():
    """`varlen_attn`'s signature changed between releases; the GPU image runs 2.11, which has no `enable_gqa`
    (passing it raised TypeError there). Signatures as 2.9/2.10, 2.11 and 2.13 define them."""
    from engine.attention import _kernel_params, kernel_kwargs

    v2_10 = frozenset({"query", "key", "value", "cu_seq_q", "cu_seq_k", "max_q", "max_k", "is_causal", "return_aux"})
    v2_11 = v2_10 - {"is_causal"} | {"scale", "window_size"}
    v2_13 = v2_11 | {"enable_gqa", "seqused_k", "block_table", "num_splits"}
    d = 64**-0.5
    assert kernel_kwargs(v2_13, d, None, 64, True) == {"window_size": (-1, 0), "scale": d, "enable_gqa": True}
    assert kernel_kwargs(v2_11, d, None, 64, True) == {"window_size": (-1, 0), "scale": d}
    assert kernel_kwargs(v2_11, 0.1, 4096, 64, False) == {"window_size": (4095, 0), "scale": 0.1}
    assert kernel_kwargs(v2_10, d, None, 64, True) == {"is_causal": True}
    assert kernel_kwargs(v2_10, None, None, 64, False) == {"is_causal": True}
    assert kernel_kwargs(v2_10, 0.1, None, 64, False) is None  # no scale: another scaling cannot run there
    assert kernel_kwargs(v2_10, d, 4096, 64, False) is None  # nor a sliding window
    assert kernel_kwargs(frozenset({"query"}), d, None, 64, False) is None
    installed = _kernel_params()  # this torch's own: a causal call it accepts
    kw = kernel_kwargs(installed, d, None, 64, True)
    assert kw is not None and set(kw) <= installed and (kw.get("window_size") == (-1, 0) or kw.get("is_causal"))


@pytest.mark.gpu
def test_pytorch_varlen_kernel_matches_the_per_sample_reference_on_a_gpu():
    """On CUDA the `varlen` path runs PyTorch's flash kernel; bf16, GQA, forward and backward."""
    from engine.attention import _flash_varlen, _kernel_call, _per_sample, available_on_gpu

    if not available_on_gpu():
        pytest.skip("this GPU or torch has no varlen flash kernel")
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(22, 8, 64, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    k = torch.randn(22, 2, 64, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    v = torch.randn(22, 2, 64, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    cu = torch.tensor([0, 5, 14, 15, 22], device="cuda", dtype=torch.int32)
    kw = _kernel_call(q, k, 0.0, 64**-0.5, None)  # the keywords this torch's kernel takes
    assert kw is not None
    fast = _flash_varlen(q, k, v, cu, 9, 64**-0.5, None, kw)
    ref = _per_sample(q.float(), k.float(), v.float(), cu, 64**-0.5, 0.0, None)
    assert (fast.float() - ref).abs().max() < 2e-2
    fast.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


@pytest.mark.gpu
def test_gpu_fast_path_trains_like_the_plain_path(workdir, demo_model):
    """On a GPU: the auto path (bf16, padding-free through varlen/flash, fused AdamW) vs padded sdpa, with the same
    rows in each step; then packed (auto's choice on a GPU) with every row in one step, as the CPU test does."""
    import json

    plain_kw = dict(training__padding_free="off", model__attn_implementation="sdpa", data__packing="off")
    plain, _, _ = _first_losses(workdir, **plain_kw)
    fast, started, _ = _first_losses(workdir, data__packing="off")
    assert started.attn_implementation in ("varlen", "flash_attention_2")
    for a, b in zip(plain, fast, strict=True):
        assert abs(a - b) < 2e-2 * max(1.0, a), (plain, fast)
    one_step = dict(steps=1, training__per_device_train_batch_size=64)
    plain_all = _first_losses(workdir, **one_step, **plain_kw)[0]
    packed_all, _, run_dir = _first_losses(workdir, **one_step, data__packing="on")  # auto never packs the demo
    assert json.loads((run_dir / "resolved.json").read_text())["packing"] is True
    assert abs(plain_all[0] - packed_all[0]) < 2e-2 * max(1.0, plain_all[0]), (plain_all, packed_all)
