"""engine/lora_fused.py: LoRA's branch as one autograd function gives peft's numbers with less memory traffic."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM
from world import logged_losses, tiny_sft_config, train_run

from engine.adapters import cast_inputs_only_without_autocast
from engine.lora_fused import fuse_lora_layers

SHAPE = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 4}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fused-base")
    LlamaForCausalLM(LlamaConfig(**SHAPE)).save_pretrained(path)
    return path


def _lora(base_dir, fused: bool, bits: int = 0, checkpointing: bool = False, double_quant: bool = False, **lora):
    kw = {}
    if bits:
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True) if bits == 8 else BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
            bnb_4bit_use_double_quant=double_quant)
    model = LlamaForCausalLM.from_pretrained(base_dir, **kw)
    if bits == 4:
        from engine.model import keep_cpu_4bit_layout

        keep_cpu_4bit_layout(model, True)  # as the engine loads a model to train
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(1)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", **lora))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # so the adapters change the output and A gets gradients
    if fused:
        assert fuse_lora_layers(model) == 14  # 7 projections x 2 layers
    return cast_inputs_only_without_autocast(model).train()


def _step(model, autocast: bool = False):
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)  # the same dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", ["lora", "rslora", "dropout", "checkpointing", "4bit", "4bit-double-quant", "8bit"])
def test_fused_branch_gives_peft_numbers_in_fp32(base_dir, kind):
    """The loss to the bit where the scaling is a power of two (alpha / rank, the usual choice): multiplying by it
    is exact, so the epilogue's `alpha=` rounds as peft's product does. rsLoRA's alpha / sqrt(rank) is not, and
    whether a BLAS rounds alpha * (h B^T) once or twice depends on the CPU's kernels (AVX-512 ones fuse it), so
    there the loss is held to fp32's last bits. The gradients to the bit where only the branch is fused (dropout,
    an 8-bit base); where the base matmul is fused too (a plain frozen Linear or a 4-bit one, no dropout), the
    input's gradient is summed in another order (the branch's share added in the base's epilogue, not by autograd
    after), so earlier layers' last bits round differently, as does rsLoRA's scaling, applied to the rank-sized
    gradient instead of the full one."""
    if "bit" in kind:
        pytest.importorskip("bitsandbytes")
    kw = {"bits": int(kind[0]) if "bit" in kind else 0, "checkpointing": kind == "checkpointing" or "4bit" in kind,
          "double_quant": "double" in kind, "lora_dropout": 0.1 if kind == "dropout" else 0.0,
          "use_rslora": kind == "rslora"}
    theirs, ours = _step(_lora(base_dir, False, **kw)), _step(_lora(base_dir, True, **kw))
    if kind == "rslora":
        assert ours[0] == pytest.approx(theirs[0], rel=1e-6)
    else:
        assert ours[0] == theirs[0]
    assert ours[1].keys() == theirs[1].keys() and len(ours[1]) == 28
    for name, grad in theirs[1].items():
        assert grad.abs().sum() > 0, name
        if kind in ("dropout", "8bit"):
            assert torch.equal(ours[1][name], grad), name
        else:
            torch.testing.assert_close(ours[1][name], grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item())


def test_a_4bit_base_trains_through_one_node_without_copying_its_output(base_dir):
    """QLoRA: bitsandbytes' layer under peft's records three autograd nodes per adapted layer (its matmul, the copy
    peft makes of the output to add the branch to, the sum of the input's two gradients) and copies each output;
    the fused path records one node and copies nothing of the layers' outputs. bf16 compute, as on a GPU: the loss
    and every gradient as close to peft's as bf16 rounds."""
    pytest.importorskip("bitsandbytes")

    class Copies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func.overloadpacket in (torch.ops.aten.clone, torch.ops.aten.copy_)
            return func(*args, **(kwargs or {}))

    runs = {}
    for fused in (False, True):
        model = _lora(base_dir, fused, bits=4, double_quant=True)
        for module in model.modules():
            if type(module).__name__ == "Linear4bit":
                module.compute_dtype = torch.bfloat16
        ids = torch.randint(0, SHAPE["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(3))
        with Copies() as copies, torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=ids)
        q = model.base_model.model.model.layers[1].self_attn.q_proj
        node = q(torch.randn(2, 3, SHAPE["hidden_size"], requires_grad=True)).grad_fn
        out.loss.backward()
        runs[fused] = out.loss.item(), copies.n, type(node).__name__, {
            n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    (peft_loss, peft_copies, peft_node, peft_grads), (loss, copies, node, grads) = runs[False], runs[True]
    assert node == "_Lora4bitLinearBackward" and peft_node != node
    assert peft_copies >= 14 and copies == peft_copies - 14  # one copy of each of the 14 adapted layers' outputs
    assert loss == pytest.approx(peft_loss, rel=1e-2)
    for name, grad in peft_grads.items():
        assert ((grads[name] - grad).norm() / grad.norm()).item() < 0.05, name


def test_fused_branch_under_bf16_autocast_rounds_like_peft(base_dir):
    """In bf16 the fused branch rounds once where peft rounds three times: both stay as close to fp32."""
    exact = _step(_lora(base_dir, False))
    model = _lora(base_dir, False)
    model.to(torch.bfloat16)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # fp32 adapters on a bf16 base, as the engine trains on a GPU
    fused = copy.deepcopy(model)
    fuse_lora_layers(fused)
    theirs, ours = _step(model, autocast=True), _step(fused, autocast=True)

    def off(run):
        return max(((run[1][n] - g).norm() / g.norm()).item() for n, g in exact[1].items())

    assert abs(ours[0] - exact[0]) < 0.01 and abs(theirs[0] - exact[0]) < 0.01
    assert off(ours) < max(0.05, 2 * off(theirs))


def test_fused_branch_writes_three_fewer_full_size_tensors_per_layer(base_dir):
    """peft writes B's product, its scaled copy and the sum (then the scaled gradient in backward); the fused
    branch writes the sum alone, in place. With the base matmul fused too, the branch's share of the input's
    gradient is added in place on the base's: one input-sized tensor fewer wherever the input needs a gradient
    (not the first layer's q/k/v: their input comes from the frozen embeddings). Counted as bytes that
    operators write, forward and backward."""
    tokens = 2 * 24

    class Written(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.full = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            for o in out if isinstance(out, (tuple, list)) else [out]:
                written = isinstance(o, torch.Tensor) and (  # a new tensor, or one written in place
                    func._schema.is_mutable or o.untyped_storage().data_ptr() not in inputs)
                if written and o.numel() >= tokens * 64 and o.shape[-1] >= 64:  # a tokens x features tensor
                    self.full += o.numel() * o.element_size()
            return out

    def written(fused: bool) -> int:
        model = _lora(base_dir, fused)
        with Written() as w:
            _step(model)
        return w.full

    h, i = SHAPE["hidden_size"], SHAPE["intermediate_size"]
    out = 4 * (4 * h + 2 * i + h)  # fp32 bytes per token of q, k, v, o, gate, up and down's outputs
    inputs = 4 * ((3 * h + i) + (6 * h + i))  # ... of the layers' inputs that need a gradient: o, gate, up and
    assert SHAPE["num_hidden_layers"] == 2  # down in the first decoder layer, all seven in the second
    assert written(False) - written(True) == (3 * out * 2 + inputs) * tokens


@pytest.mark.parametrize("bits", [0, 4])
def test_a_base_layer_with_a_bias_or_a_hook_gives_peft_numbers(tmp_path, bits):
    """q/k/v with a bias (Qwen2's) go through the fused base matmul, 16-bit or 4-bit; a base layer with a forward
    hook (accelerate's offloading, a user's probe) is called as itself, its hook runs, and only the branch is
    fused."""
    if bits:
        pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**SHAPE, attention_bias=True))
    for name, p in base.named_parameters():
        if name.endswith("proj.bias"):
            torch.nn.init.normal_(p, std=0.5)  # transformers starts them at zero
    base.save_pretrained(tmp_path)
    theirs, fused, hooked = (_lora(tmp_path, f, bits=bits) for f in (False, True, True))
    calls = []
    hooked.base_model.model.model.layers[1].mlp.down_proj.base_layer.register_forward_hook(
        lambda *_: calls.append(1))
    exact = _step(theirs)
    for ours in (_step(fused), _step(hooked)):
        assert ours[0] == pytest.approx(exact[0], rel=1e-6)
        for name, grad in exact[1].items():
            torch.testing.assert_close(ours[1][name], grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item())
    assert calls == [1]


def test_inference_disabled_adapters_and_dora_keep_peft_forward(base_dir):
    ids = torch.randint(0, SHAPE["vocab_size"], (1, 12), generator=torch.Generator().manual_seed(4))
    plain, fused = _lora(base_dir, False), _lora(base_dir, True)
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, fused(input_ids=ids).logits)
        with fused.disable_adapter():
            no_adapter = fused(input_ids=ids).logits
        assert not torch.equal(no_adapter, plain(input_ids=ids).logits)
        base = LlamaForCausalLM.from_pretrained(base_dir)
        assert torch.allclose(no_adapter, base(input_ids=ids).logits, atol=1e-6)
    dora = [_step(_lora(base_dir, f, use_dora=True)) for f in (False, True)]
    assert dora[0][0] == dora[1][0]
    for name, grad in dora[0][1].items():
        assert torch.equal(dora[1][1][name], grad), name


def test_the_engine_trains_the_same_with_and_without_it(workdir, demo_model):
    """The first loss to the bit; later ones to fp32's last bits, since the fused base sums the input's gradient
    in another order (how the last bit rounds then depends on the CPU's kernels)."""
    on = train_run(workdir, tiny_sft_config(max_steps=3))
    off = train_run(workdir, {**tiny_sft_config(max_steps=3, fused_lora="off")})
    assert logged_losses(on)[0] == logged_losses(off)[0]
    assert logged_losses(on) == pytest.approx(logged_losses(off), rel=1e-6)
    assert "fused LoRA" in (on / "train.log").read_text() and "fused LoRA" not in (off / "train.log").read_text()


@pytest.mark.gpu
def test_on_a_gpu_the_engine_trains_the_same_with_and_without_it(workdir, demo_model):
    """bf16 autocast, cuBLAS's in-place epilogue and Liger's kernels (where installed): the same losses within bf16's
    rounding (the fused branch rounds once where peft rounds three times)."""
    on = logged_losses(train_run(workdir, tiny_sft_config(max_steps=4)))
    off = logged_losses(train_run(workdir, tiny_sft_config(max_steps=4, fused_lora="off")))
    assert on == pytest.approx(off, rel=2e-2)
    assert on[-1] < on[0]
