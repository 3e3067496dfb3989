"""Preference tuning on the offline demo: rewards separate, the reference is the right model, every file shape trains."""

import json
import math

import pytest
import torch
from world import ROOT, safetensors_weights, train_run

from engine import dpo
from engine.config import RunConfig
from engine.events import Error, Evaluation, Finished, LogStep, RunStarted, read_events
from engine.messages import TuneboardError
from engine.runs import create_run
from engine.train import run_training

FIXTURES = ROOT / "tests" / "fixtures" / "dpo"
WATCHED = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")


def tiny_dpo_config(data="demo:dpo", dpo_cfg=None, adapter=None, **training) -> dict:
    t = {"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
         "warmup_ratio": 0.0, "lr_scheduler_type": "constant", "seed": 7}
    t.update(training)
    return {"stage": "dpo", "run_name": "dpo-test",
            "adapter": {"method": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, **(adapter or {})},
            "data": {"datasets": [{"path": str(data)}], "max_length": 64}, "dpo": dpo_cfg or {}, "training": t}


def _steps(run_dir):
    return [e for e in read_events(str(run_dir / "events.jsonl")) if isinstance(e, LogStep)]


def _pairs(tok, ds):
    """(prompt ids, chosen ids, rejected ids) per row, tokenized here rather than by trl."""
    out = []
    for row in ds:
        prompt = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        ids = [tok(prompt, add_special_tokens=False)["input_ids"]]
        for answer in (row["chosen"], row["rejected"]):
            full = tok.apply_chat_template(row["prompt"] + answer, tokenize=False)
            assert full.startswith(prompt)
            ids.append(tok(full[len(prompt):], add_special_tokens=False)["input_ids"])
        out.append(tuple(ids))
    return out


@torch.no_grad()
def _answer_logp(model, prompt, answer) -> float:
    ids = torch.tensor([prompt + answer])
    logp = model(ids).logits[0, :-1].float().log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    return logp[len(prompt) - 1:].sum().item()


@torch.no_grad()
def _batch_logps(model, batch):
    """Summed log-probabilities of each sequence's completion tokens, the way trl defines them."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logp = logits.float().log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (logp * batch["completion_mask"][:, 1:]).sum(1)


def _build(workdir, tmp_path, cfg_dict):
    """What engine.train does up to the trainer, without training: for tests of the reference and the losses."""
    from engine import adapters
    from engine import model as model_mod
    from engine.data import load_training_data
    from engine.train import training_args

    cfg = RunConfig.from_dict(cfg_dict)
    res = model_mod.resolve(cfg, workdir)
    tok = model_mod.load_tokenizer(cfg, res)
    train_ds, _ = load_training_data(cfg)
    model = adapters.prepare(model_mod.load_model(cfg, res), cfg)
    trainer = dpo.build(model, tok, train_ds, None, cfg, res, training_args(cfg, res, tmp_path, False), [])
    return trainer, next(iter(trainer.get_train_dataloader()))


def _base(demo_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(demo_model).eval()


# ---- the demo preset: rewards separate ------------------------------------------------------


@pytest.fixture(scope="module")
def preset_run(workdir, demo_model):
    """assets/configs/dpo_demo.yaml exactly as shipped."""
    return train_run(workdir, RunConfig.load(str(ROOT / "assets" / "configs" / "dpo_demo.yaml")))


def test_preset_raises_margin_and_accuracy_and_logs_what_dpo_watches(preset_run):
    from engine.data import load_training_data

    cfg = RunConfig.load(str(preset_run / "config.yaml"))
    rows = len(load_training_data(cfg)[0])
    planned = int(cfg.training.num_train_epochs) * math.ceil(rows / cfg.training.per_device_train_batch_size)
    evs = read_events(str(preset_run / "events.jsonl"))
    assert isinstance(evs[0], RunStarted) and evs[0].stage == "dpo" and evs[0].train_rows == rows
    assert isinstance(evs[-1], Finished) and evs[-1].status == "finished" and evs[-1].step == planned
    steps = _steps(preset_run)
    assert len(steps) == planned
    for s in steps:
        assert set(WATCHED) <= set(s.metrics), set(WATCHED) - set(s.metrics)
        assert s.loss is not None and math.isfinite(s.loss)
    first, last = steps[0].metrics, [s.metrics for s in steps[-4:]]
    # step 1 scores the untouched policy: it *is* the reference, so every reward is exactly 0
    assert first["rewards/chosen"] == first["rewards/rejected"] == first["rewards/margins"] == 0
    assert steps[0].loss == pytest.approx(math.log(2), abs=1e-4)
    assert min(m["rewards/margins"] for m in last) > 1.0
    assert min(m["rewards/accuracies"] for m in last) == 1.0
    assert sum(s.loss for s in steps[-4:]) / 4 < 0.5 * steps[0].loss
    evals = [e for e in evs if isinstance(e, Evaluation)]
    assert evals and set(WATCHED) <= set(evals[-1].metrics)  # held-out pairs, without the eval_ prefix
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/tokenizer.json"):
        assert (preset_run / name).exists(), name
    assert not (preset_run / "adapter" / "ref").exists(), "only the trained adapter is saved"


def test_adapter_reloads_in_plain_peft_and_prefers_chosen_on_its_training_pairs(preset_run, demo_model):
    """Measured here, not read from trl's logs: the DPO reward β·(log π − log π_ref) on every training pair."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from engine.data import load_training_data

    cfg = RunConfig.load(str(preset_run / "config.yaml"))
    train_ds, _ = load_training_data(cfg)
    tok = AutoTokenizer.from_pretrained(preset_run / "adapter")
    base_on_disk = safetensors_weights(demo_model)
    plain_base = _base(demo_model)
    tuned = PeftModel.from_pretrained(_base(demo_model), preset_run / "adapter").eval()
    beta, margins, wins = cfg.dpo.beta, [], 0
    for prompt, chosen, rejected in _pairs(tok, train_ds):
        with tuned.disable_adapter():
            ref = [_answer_logp(tuned, prompt, a) for a in (chosen, rejected)]
        # the adapter switched off is exactly the base: the reference log-probabilities
        assert ref == pytest.approx([_answer_logp(plain_base, prompt, a) for a in (chosen, rejected)], abs=1e-4)
        pol = [_answer_logp(tuned, prompt, a) for a in (chosen, rejected)]
        margin = beta * ((pol[0] - ref[0]) - (pol[1] - ref[1]))
        margins.append(margin)
        wins += margin > 0
    # before training policy == reference: margin 0, accuracy 0 (ties don't count)
    assert wins / len(margins) >= 0.95, margins
    assert sum(margins) / len(margins) > 1.0, margins
    for k, v in safetensors_weights(demo_model).items():
        assert torch.equal(v, base_on_disk[k]), f"training wrote into the base weights: {k}"


# ---- the reference ---------------------------------------------------------------------------


def test_new_adapter_reference_is_the_base_with_the_adapter_disabled(workdir, demo_model, tmp_path):
    trainer, batch = _build(workdir, tmp_path, tiny_dpo_config())
    assert list(trainer.model.peft_config) == ["default"], "no second adapter: the base is the reference"
    assert trainer.ref_model is None
    ref_c, ref_r = trainer.compute_ref_log_probs(trainer.model, batch)
    assert torch.cat([ref_c, ref_r]) == pytest.approx(_batch_logps(_base(demo_model), batch), abs=1e-3)


def test_pairs_tokenised_by_worker_processes_match_one_process(workdir, tmp_path):
    """Large preference sets are tokenised by one process per core (data.num_proc): the same batches either way."""
    one, batch_one = _build(workdir, tmp_path / "one", tiny_dpo_config())
    cfg = tiny_dpo_config()
    cfg["data"]["num_proc"] = 2
    two, batch_two = _build(workdir, tmp_path / "two", cfg)
    assert (one.args.dataset_num_proc, two.args.dataset_num_proc) == (None, 2)
    assert one.train_dataset[:] == two.train_dataset[:]
    assert all(torch.equal(batch_one[k], batch_two[k]) for k in batch_one if torch.is_tensor(batch_one[k]))


def test_dpo_continues_an_sft_adapter_against_the_sft_model(workdir, demo_model, trained_run, tmp_path):
    """With adapter.init_from the reference is base + the SFT adapter, frozen; not the bare base."""
    from peft import PeftModel

    cfg = tiny_dpo_config(adapter={"init_from": str(trained_run)}, max_steps=3)
    trainer, batch = _build(workdir, tmp_path, cfg)
    assert set(trainer.model.peft_config) == {"default", "ref"}
    assert not any(p.requires_grad for n, p in trainer.model.named_parameters() if ".ref." in n)
    sft_model = PeftModel.from_pretrained(_base(demo_model), trained_run / "adapter").eval()
    sft_logps, base_logps = _batch_logps(sft_model, batch), _batch_logps(_base(demo_model), batch)
    assert not torch.allclose(sft_logps, base_logps, atol=1e-1), "SFT moved the model"
    ref_before = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
    assert ref_before == pytest.approx(sft_logps, abs=1e-3)
    trainer.train()
    assert torch.cat(trainer.compute_ref_log_probs(trainer.model, batch)) == pytest.approx(ref_before, abs=1e-5), \
        "the reference stays frozen while the adapter trains"

    # the same through a whole run: step 1's rewards are 0 because policy and reference are both the SFT model
    run_dir = train_run(workdir, cfg)
    first = _steps(run_dir)[0].metrics
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-5) and first["rewards/rejected"] == pytest.approx(0, abs=1e-5)
    assert not (run_dir / "adapter" / "ref").exists()
    sft, tuned = safetensors_weights(trained_run / "adapter"), safetensors_weights(run_dir / "adapter")
    assert set(sft) == set(tuned) and any(not torch.equal(sft[k], tuned[k]) for k in sft)

    # `tuneboard eval` scores held-out pairs against the same reference, the SFT model: against the bare base, the
    # DPO run would be credited with all that its SFT run learnt
    from peft import PeftModel

    from engine.evaluate import eval_rows, evaluate_run, masked_nll, pair_examples, preference

    data = str(FIXTURES / "message_pairs.jsonl")
    result = evaluate_run(str(run_dir), data=data, workdir=workdir, include_base=False, max_samples=None, save=False)
    tok = trainer.processing_class
    rows, _ = eval_rows(RunConfig.from_dict(cfg), data, None)
    pairs = [p for r in rows for p in pair_examples(tok, r, 64)]
    tuned = masked_nll(PeftModel.from_pretrained(_base(demo_model), run_dir / "adapter").eval(), tok, pairs)
    expected = preference(tuned, masked_nll(sft_model, tok, pairs), cfg["dpo"].get("beta", 0.1))
    against_base = preference(tuned, masked_nll(_base(demo_model), tok, pairs), cfg["dpo"].get("beta", 0.1))
    assert result["reward_margin"] == pytest.approx(expected["reward_margin"], abs=1e-3)
    assert result["reward_margin"] != pytest.approx(against_base["reward_margin"], abs=1e-2)
    assert result["reference_model"] == str(trained_run / "adapter")


def test_resuming_a_continued_adapter_rebuilds_the_same_reference(workdir, demo_model, trained_run):
    """Checkpoints hold the trained adapter only; on resume the frozen reference comes again from init_from."""
    cfg = tiny_dpo_config(adapter={"init_from": str(trained_run)}, max_steps=4, save_steps=2)
    first = train_run(workdir, cfg)
    ckpt = first / "checkpoints" / "checkpoint-2"
    assert (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "ref").exists()
    cfg["training"]["resume_from"] = str(ckpt)
    second = train_run(workdir, cfg)
    resumed, straight = _steps(second), _steps(first)[2:]
    assert [s.step for s in resumed] == [3, 4]
    for a, b in zip(resumed, straight, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
        assert a.metrics["logps/chosen"] == pytest.approx(b.metrics["logps/chosen"], rel=1e-4)
        assert a.metrics["rewards/margins"] == pytest.approx(b.metrics["rewards/margins"], rel=1e-3, abs=1e-5)


def test_full_finetune_uses_a_separate_frozen_reference(workdir, demo_model, tmp_path):
    trainer, batch = _build(workdir, tmp_path, tiny_dpo_config(adapter={"method": "full"}, learning_rate=1e-4))
    ref = trainer.ref_model
    assert ref is not None and ref is not trainer.model
    assert not any(p.requires_grad for p in ref.parameters())
    ref_before = torch.cat(trainer.compute_ref_log_probs(ref, batch))
    assert ref_before == pytest.approx(_batch_logps(_base(demo_model), batch), abs=1e-3)
    trainer.train()
    base = safetensors_weights(demo_model)
    assert all(torch.equal(p, base[n]) for n, p in ref.state_dict().items() if n in base), "the reference never moves"
    assert any(not torch.equal(p, base[n]) for n, p in trainer.model.state_dict().items() if n in base)


# ---- losses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dpo_cfg, expected", [
    ({"loss_type": "sigmoid"}, math.log(2)),
    ({"loss_type": "hinge"}, 1.0),
    ({"loss_type": "ipo", "beta": 0.1}, (1 / (2 * 0.1)) ** 2),
    ({"loss_type": "robust", "label_smoothing": 0.2}, math.log(2)),
    ({"loss_type": "sigmoid", "sft_weight": 0.5}, "log2 + 0.5 nll"),
], ids=["sigmoid", "hinge", "ipo", "robust", "sigmoid+sft"])
def test_loss_variants_at_the_start_give_their_textbook_values(workdir, demo_model, tmp_path, dpo_cfg, expected):
    """Before any update policy = reference, so the reward difference is 0 and each loss is a known number."""
    trainer, batch = _build(workdir, tmp_path, tiny_dpo_config(dpo_cfg=dpo_cfg))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    if expected == "log2 + 0.5 nll":
        assert trainer.loss_types == ["sigmoid", "sft"] and trainer.loss_weights == [1.0, 0.5]
        chosen = batch["completion_mask"].chunk(2)[0][:, 1:].sum()
        nll = -_batch_logps(_base(demo_model), batch).chunk(2)[0].sum() / chosen
        expected = math.log(2) + 0.5 * nll.item()
    else:
        assert trainer.loss_types == [dpo_cfg["loss_type"]]
    assert loss == pytest.approx(expected, rel=1e-3)


def test_prompt_and_completion_limits_reach_the_batches(workdir, demo_model, tmp_path):
    from engine.data import load_training_data

    trainer, batch = _build(workdir, tmp_path, tiny_dpo_config(dpo_cfg={"max_prompt_length": 5,
                                                                        "max_completion_length": 3}))
    completion = batch["completion_mask"].sum(1)
    prompt = batch["attention_mask"].sum(1) - completion
    assert completion.max() == 3 and prompt.max() == 5
    assert len(trainer.train_dataset) == len(load_training_data(RunConfig.from_dict(tiny_dpo_config()))[0]), \
        "truncation drops no row"


# ---- data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["string_pairs.jsonl", "message_pairs.jsonl", "columns.json", "alpaca_two_outputs.json"])
def test_every_preference_file_shape_trains(workdir, demo_model, name):
    run_dir = train_run(workdir, tiny_dpo_config(FIXTURES / name, max_steps=1))
    evs = read_events(str(run_dir / "events.jsonl"))
    assert evs[0].train_rows == 8
    assert evs[-1].status == "finished"
    assert set(WATCHED) <= set(_steps(run_dir)[0].metrics)


def test_missing_rejected_is_refused_with_its_row_before_any_model_loads(workdir, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("a model was loaded for data that fails the check")

    monkeypatch.setattr("engine.model.load_model", no_model)
    cfg = RunConfig.from_dict(tiny_dpo_config(FIXTURES / "missing_rejected.jsonl"))
    run_dir = create_run(cfg, workdir)
    with pytest.raises(TuneboardError) as e:
        run_training(cfg, run_dir, workdir=workdir)
    assert e.value.key == "error.data_invalid_rows"
    assert "row 3" in e.value.params["first"] and "rejected" in e.value.params["first"]
    evs = read_events(str(run_dir / "events.jsonl"))
    assert not any(isinstance(x, RunStarted) for x in evs)
    assert any(isinstance(x, Error) and x.key == "error.data_invalid_rows" for x in evs)
    assert evs[-1].status == "failed"


def test_fit_truncates_prompt_left_answers_right_within_max_length():
    ex = {"prompt_ids": list(range(10)), "chosen_ids": [20, 21, 22, 23], "rejected_ids": [30, 31], "ref": 1.0}
    assert dpo.fit(ex, None, max_prompt=3, max_completion=2) == {
        "prompt_ids": [7, 8, 9], "chosen_ids": [20, 21], "rejected_ids": [30, 31], "ref": 1.0}
    assert dpo.fit(ex, 12) == {"prompt_ids": list(range(2, 10)), "chosen_ids": [20, 21, 22, 23],
                               "rejected_ids": [30, 31], "ref": 1.0}
    # a long answer may take at most half: the prompt keeps 4 of 8, the answer what is left
    long = {"prompt_ids": list(range(10)), "completion_ids": list(range(100, 120))}
    assert dpo.fit(long, 8) == {"prompt_ids": [6, 7, 8, 9], "completion_ids": [100, 101, 102, 103]}
    assert dpo.fit(ex, 64) == ex  # nothing to cut


# ---- other methods and bases -----------------------------------------------------------------


def test_kto_learns_from_unpaired_answers(workdir, demo_model):
    run_dir = train_run(workdir, tiny_dpo_config(dpo_cfg={"method": "kto"}, max_steps=8, per_device_train_batch_size=8))
    evs = read_events(str(run_dir / "events.jsonl"))
    pairs = len(json.loads((ROOT / "assets" / "data" / "demo_dpo.json").read_text(encoding="utf-8")))
    assert evs[0].train_rows == pairs and evs[-1].status == "finished"
    steps = _steps(run_dir)
    for s in steps:
        assert {"rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "kl"} <= set(s.metrics)
    gap = [s.metrics["rewards/chosen"] - s.metrics["rewards/rejected"] for s in steps]
    assert gap[0] == pytest.approx(0, abs=1e-5) and min(gap[-3:]) > 0.2, gap
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()


def test_kto_trains_on_its_own_unpaired_data_and_the_other_stages_read_it_as_meant(workdir, demo_model, tmp_path):
    """A file of KTO's own rows (prompt, completion, label; LLaMA-Factory names the label kto_tag) read as
    prompt-completion: SFT trained the undesirable answers too, and KTO refused it as "not preference data"."""
    from engine.data import load_training_data

    demo = json.loads((ROOT / "assets" / "data" / "demo_dpo.json").read_text(encoding="utf-8"))
    rows = [{"prompt": r["prompt"] if "prompt" in r else r["instruction"], "completion": r[side], "kto_tag": tag}
            for r in demo for side, tag in (("chosen", "true"), ("rejected", "false"))]
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = tiny_dpo_config(data=path, dpo_cfg={"method": "kto"}, max_steps=2, per_device_train_batch_size=8)
    train, _ = load_training_data(RunConfig.from_dict({**cfg, "data": {**cfg["data"], "val_size": 0}}))
    assert sorted(set(train.column_names)) == ["completion", "label", "prompt"] and sum(train["label"]) == len(demo)
    run_dir = train_run(workdir, cfg)
    steps = _steps(run_dir)
    assert len(steps) == 2 and "kl" in steps[0].metrics and read_events(str(run_dir / "events.jsonl"))[-1].status == "finished"
    with pytest.raises(TuneboardError) as e:  # DPO needs pairs: said, with the way to KTO
        load_training_data(RunConfig.from_dict(tiny_dpo_config(data=path)))
    assert e.value.key == "data.unpaired_needs_kto" and "dpo.method=kto" in str(e.value)
    sft = {**cfg, "stage": "sft", "dpo": {}, "data": {**cfg["data"], "val_size": 0}}
    notes: list = []
    train, _ = load_training_data(RunConfig.from_dict(sft), notes)  # SFT: the desirable answers alone, said
    answers = {m[-1]["content"] for m in train["messages"]}
    assert len(train) == len(demo) and answers == {r["completion"][-1]["content"] if isinstance(r["completion"], list)
                                                   else r["completion"] for r in rows if r["kto_tag"] == "true"}
    assert "warning.sft_on_unpaired" in [k for k, _ in notes]


@pytest.mark.parametrize("change, key", [
    ({"dpo": {"method": "kto", "loss_type": "ipo"}}, "error.dpo.kto_unsupported"),
    ({"dpo": {"method": "kto", "sft_weight": 0.1}}, "error.dpo.kto_unsupported"),
    ({"dpo": {"method": "kto"}, "training": {"per_device_train_batch_size": 1}}, "error.dpo.kto_batch_size"),
], ids=["loss", "sft", "batch1"])
def test_kto_refuses_what_it_cannot_do_before_loading_anything(change, key):
    from engine.config import ConfigError

    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(tiny_dpo_config()).with_overrides(
            {f"{section}.{k}": v for section, values in change.items() for k, v in values.items()})
    assert e.value.key == key


def test_qlora_4bit_dpo_trains_on_cpu(workdir, demo_model):
    """bitsandbytes quantizes NF4 on the CPU; the reference is the quantized base with the adapter off."""
    pytest.importorskip("bitsandbytes")
    cfg = tiny_dpo_config()
    cfg["quantization"] = {"bits": 4}
    run_dir = train_run(workdir, cfg)
    steps = _steps(run_dir)
    assert len(steps) == 2 and all(math.isfinite(s.loss) for s in steps)
    assert steps[0].metrics["rewards/margins"] == pytest.approx(0, abs=1e-4)
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()


def test_eval_of_a_dpo_run_ranks_held_out_pairs_as_training_did(preset_run, workdir, tmp_path):
    """`tuneboard eval` on a DPO run gave only the chosen answers' perplexity; what a DPO user watches is how the
    model ranks held-out pairs. Its share of pairs ranked right and mean reward margin match trl's own last
    validation (same pairs, same beta, the base as reference), and a file of plain conversations is scored too."""
    from engine.evaluate import evaluate_run

    result = evaluate_run(str(preset_run), workdir=workdir, include_base=False, max_samples=None, save=False)
    last = [e for e in read_events(str(preset_run / "events.jsonl")) if isinstance(e, Evaluation)][-1].metrics
    assert result["pairs"] == result["rows"] > 0
    assert result["pairs_ranked_right"] == pytest.approx(last["rewards/accuracies"], abs=0.1)
    assert result["reward_margin"] == pytest.approx(last["rewards/margins"], rel=0.1)
    chat = tmp_path / "chat.jsonl"
    chat.write_text('{"instruction": "What is 2 plus 2?", "output": "2 plus 2 is 4."}\n')
    plain = evaluate_run(str(preset_run), data=str(chat), workdir=workdir, include_base=False, save=False)
    assert plain["rows"] == 1 and plain["perplexity"] > 1 and "pairs" not in plain
    text = tmp_path / "notes.txt"  # said for the DPO run it is ("SFT needs conversations" named the wrong stage)
    text.write_text("Some plain text.\n\nAnother paragraph.\n", encoding="utf-8")
    with pytest.raises(TuneboardError) as e:
        evaluate_run(str(preset_run), data=str(text), workdir=workdir, include_base=False, save=False)
    assert e.value.key == "eval.error_text_for_dpo" and "DPO" in str(e.value) and "SFT" not in str(e.value)


# ---- reference-free methods: ORPO and SimPO ------------------------------------------------------


def test_reference_free_losses_are_their_papers_formulas():
    from engine.ref_free import average_logps, log_odds_ratio, orpo_ratio_loss, simpo_loss

    per_token = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert average_logps(per_token, mask).tolist() == [-1.5, -0.5]
    c, r = torch.tensor([-0.2, -1.0]), torch.tensor([-1.5, -0.1])
    p_c, p_r = math.exp(-0.2), math.exp(-1.5)
    odds = math.log(p_c / (1 - p_c)) - math.log(p_r / (1 - p_r))
    assert log_odds_ratio(c, r)[0].item() == pytest.approx(odds, rel=1e-5)
    assert orpo_ratio_loss(c, r)[0].item() == pytest.approx(math.log1p(math.exp(-odds)), rel=1e-5)
    assert orpo_ratio_loss(c, r)[1] > orpo_ratio_loss(c, r)[0], "a pair ranked wrong costs more"
    assert torch.isfinite(log_odds_ratio(torch.tensor([0.0]), torch.tensor([-1.0]))).all(), "p = 1 stays finite"
    beta, gamma = 2.0, 0.5
    assert simpo_loss(c, r, beta, gamma)[0].item() == pytest.approx(
        math.log1p(math.exp(-(beta * (-0.2 + 1.5) - gamma))), rel=1e-5)


@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_reference_free_loss_on_a_batch_is_computed_from_the_policy_alone(workdir, demo_model, tmp_path, method):
    """The trainer's loss on a real batch equals the paper's formula from the base model's own log-probabilities;
    there is no reference: no second model, no frozen adapter, and turning the adapter off is never asked for."""
    import peft

    trainer, batch = _build(workdir, tmp_path, tiny_dpo_config(dpo_cfg={"method": method, "beta": 0.5,
                                                                        "simpo_gamma": 0.3}))
    assert trainer.ref_model is None and list(trainer.model.peft_config) == ["default"]
    disabled = []
    original = peft.PeftModel.disable_adapter
    peft.PeftModel.disable_adapter = lambda self: disabled.append(1) or original(self)
    try:
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, batch).item()
    finally:
        peft.PeftModel.disable_adapter = original
    assert not disabled
    sums = _batch_logps(_base(demo_model), batch)  # a new adapter is the identity: the policy is the base
    tokens = batch["completion_mask"][:, 1:].sum(1)
    avg_c, avg_r = (sums / tokens).chunk(2)
    if method == "simpo":
        expected = torch.nn.functional.softplus(-(0.5 * (avg_c - avg_r) - 0.3)).mean()
    else:
        nll = -sums.chunk(2)[0].sum() / tokens.chunk(2)[0].sum()
        odds = (avg_c - avg_r) - (torch.log1p(-avg_c.exp()) - torch.log1p(-avg_r.exp()))
        expected = nll + 0.5 * torch.nn.functional.softplus(-odds).mean()
    assert loss == pytest.approx(expected.item(), rel=1e-4)
    metrics = trainer._metrics["train"]
    assert metrics["rewards/chosen"][-1] == pytest.approx((0.5 * avg_c).mean().item(), rel=1e-4)


@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_orpo_and_simpo_train_a_lora_adapter_that_prefers_the_chosen_answers(workdir, demo_model, method):
    """assets/configs/orpo_demo.yaml as shipped (8 of its steps), and SimPO as it says to run it."""
    cfg = RunConfig.load(str(ROOT / "assets" / "configs" / "orpo_demo.yaml"))
    assert cfg.dpo.method == "orpo"
    change = {"training.max_steps": 8}
    if method == "simpo":
        change.update({"dpo.method": "simpo", "dpo.beta": 2.0})
    run_dir = train_run(workdir, cfg.with_overrides(change))
    evs = read_events(str(run_dir / "events.jsonl"))
    assert evs[-1].status == "finished"
    steps = _steps(run_dir)
    assert set(WATCHED) <= set(steps[0].metrics)
    if method == "orpo":
        assert {"nll_loss", "log_odds_ratio"} <= set(steps[0].metrics)
    margins = [s.metrics["rewards/margins"] for s in steps]
    losses = [s.loss for s in steps]
    assert sum(margins[-3:]) / 3 > margins[0] and sum(losses[-3:]) / 3 < losses[0], (margins, losses)
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert not (run_dir / "adapter" / "ref").exists()


def test_full_tuning_orpo_loads_no_reference_model(workdir, demo_model, tmp_path, monkeypatch):
    """Full tuning under DPO holds a second copy of the model; ORPO needs none (nor trl's own copy)."""
    import trl.trainer.dpo_trainer as dpo_trainer

    def no_reference(*a, **k):
        raise AssertionError("a reference model was loaded for a reference-free method")

    monkeypatch.setattr(dpo, "reference_model", no_reference)
    monkeypatch.setattr(dpo_trainer, "create_model_from_path", no_reference)
    trainer, _ = _build(workdir, tmp_path, tiny_dpo_config(dpo_cfg={"method": "orpo"}, adapter={"method": "full"},
                                                           max_steps=2, learning_rate=1e-4))
    assert trainer.ref_model is None
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_reference_free_full_tuning_estimate_has_no_reference_copy(tmp_path):
    from engine.estimate import estimate

    shape = json.loads((ROOT / "bench" / "configs" / "llama-2-7b.json").read_text())
    base = RunConfig.from_dict(tiny_dpo_config(adapter={"method": "full"}))
    dpo_est = estimate(shape, base, 80)
    orpo_est = estimate(shape, base.with_overrides({"dpo.method": "orpo"}), 80)
    assert "estimate.note.reference" in [n["key"] for n in dpo_est.notes]
    assert "estimate.note.reference" not in [n["key"] for n in orpo_est.notes]
    assert dpo_est.weights - orpo_est.weights == 6_738_415_616 * 2, "one bf16 copy less"
    assert orpo_est.total < dpo_est.total


@pytest.mark.parametrize("change, field", [
    ({"method": "orpo", "loss_type": "ipo"}, "dpo.loss_type"),
    ({"method": "simpo", "label_smoothing": 0.1}, "dpo.label_smoothing"),
    ({"method": "orpo", "sft_weight": 0.5}, "dpo.sft_weight"),
], ids=["orpo-loss", "simpo-smoothing", "orpo-sft"])
def test_reference_free_methods_refuse_what_they_do_not_use(change, field):
    from engine.config import ConfigError
    from engine.messages import message

    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(tiny_dpo_config(dpo_cfg=change))
    assert e.value.key == "error.dpo.reference_free_unsupported" and e.value.field == field
    assert change["method"].upper() in message(e.value.key, e.value.params, "en")
    RunConfig.from_dict(tiny_dpo_config(dpo_cfg={"method": "simpo", "sft_weight": 0.5}))  # CPO-SimPO mixes SFT


def test_reference_free_methods_need_pairs(tmp_path):
    from engine.data.load import stage_refusal

    for method in ("dpo", "orpo", "simpo"):
        assert stage_refusal("unpaired", "dpo", "kto.jsonl", method)[0] == "data.unpaired_needs_kto"
    assert stage_refusal("unpaired", "dpo", "kto.jsonl", "kto") is None


def test_eval_of_a_reference_free_run_ranks_pairs_by_average_log_probability():
    from engine.evaluate import preference

    scored = [(10.0, 5), (30.0, 10), (4.0, 4), (2.0, 4)]  # (summed NLL, tokens): chosen, rejected, chosen, rejected
    out = preference(scored, None, 2.0)
    # rewards 2 x -(2, 3, 1, 0.5): margins +2 and -1
    assert out == {"pairs": 2, "pairs_ranked_right": 0.5, "reward_margin": 0.5}
