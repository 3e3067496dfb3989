"""LoRA's adapter branch as one autograd function, for training: peft's numbers with 40 % less memory traffic.
Knows torch and peft's LoRA layers; nothing of configs or trainers.

peft adds an adapter as `result = result + lora_B(lora_A(x)) * scaling`: two small matmuls, then a product and a
sum that each read and write a tensor of the layer's full output (tokens x out), and in backward the product's
gradient again: 10 passes over the output's size and 6 over the input's per adapted layer and step. Here the
product and the sum happen in the second matmul's epilogue, in place on the base layer's output
(`addmm_(h, B^T, alpha=scaling)`), and backward scales the rank-sized tensors instead of the full ones: 4 passes
over the output's size. For Llama-2-7B on all linear layers at 4,096 bf16 tokens a step that is 100 GB moved
instead of 167 GB (67 GB less: ~20 ms of an H100's 3.35 TB/s).

Where the base layer is a plain frozen `nn.Linear` (LoRA on a 16-bit model, the usual GPU run) and there is no
LoRA dropout, the base matmul is the same function's too (`_LoraLinear`): in backward the adapter's share of the
input's gradient is added in the epilogue of the base layer's own (`dx.addmm_(gh, A)`), where autograd would
write it as a second input-sized tensor and then sum the two: 2 passes over the input's size fewer per adapted
layer, 18 GB a 7B step at 4,096 tokens (~5 ms), and one autograd node instead of two.
"""

from __future__ import annotations

import contextlib
import functools

import torch


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)  # a call to .to() costs ~1.5 us even when it does nothing


def _no_autocast(device: str):
    """Every dtype below is explicit: autocast, where it is on, is turned off rather than asked (a context
    manager costs ~6 us, twice per adapted layer and step)."""
    return torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else contextlib.nullcontext()


def _add_branch(y2: torch.Tensor, x2: torch.Tensor, a, b, scaling: float) -> torch.Tensor:
    """y2 += scaling * (x2 A^T) B^T in place, in y2's dtype; returns x2 A^T (tokens x rank), kept for backward."""
    h = x2 @ _as(a, y2.dtype).t()
    y2.addmm_(h, _as(b, y2.dtype).t(), alpha=scaling)
    return h


def _branch_grads(ctx, g2, gh, x2, h, a, b, need_a: bool, need_b: bool):
    """A's and B's gradients, from the output's gradient g2 and gh = scaling * g2 B (both tokens x features)."""
    ga = _as(gh.t() @ _as(x2, gh.dtype), a.dtype) if need_a else None
    gb = _as(g2.t() @ _as(h * ctx.scaling, g2.dtype), b.dtype) if need_b else None
    return ga, gb


class _AddLora(torch.autograd.Function):
    """y += scaling * (x A^T) B^T, in place on y (the frozen base layer's output, which no backward keeps)."""

    @staticmethod
    def forward(ctx, y, x, a, b, scaling):
        with _no_autocast(y.device.type):
            x2 = _as(x.reshape(-1, x.shape[-1]), y.dtype)  # as autocast would cast it for lora_A; kept for backward
            h = _add_branch(y.view(-1, y.shape[-1]), x2, a, b, scaling)
        ctx.mark_dirty(y)
        ctx.save_for_backward(x2, h, a, b)
        ctx.scaling, ctx.x_shape, ctx.x_dtype = scaling, x.shape, x.dtype
        return y

    @staticmethod
    def backward(ctx, gy):
        with _no_autocast(gy.device.type):
            x2, h, a, b = ctx.saved_tensors
            g2 = gy.reshape(-1, gy.shape[-1])
            gh = (g2 @ _as(b, g2.dtype)).mul_(ctx.scaling)  # tokens x rank: scaled here, not at full size
            gx = None
            if ctx.needs_input_grad[1]:
                gx = _as((gh @ _as(a, gh.dtype)).view(ctx.x_shape), ctx.x_dtype)
            ga, gb = _branch_grads(ctx, g2, gh, x2, h, a, b, *ctx.needs_input_grad[2:4])
        return gy, gx, ga, gb, None


class _LoraLinear(torch.autograd.Function):
    """F.linear(x, W, bias) + scaling * (x A^T) B^T for a frozen W and bias: the base matmul and the branch in one
    node, so backward adds the branch's input gradient in place on the base's (`addmm_`)."""

    @staticmethod
    def forward(ctx, x, w, bias, a, b, scaling):
        device = x.device.type
        # the dtype autocast would run F.linear in; without autocast, F.linear's own (x and W must agree)
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        with _no_autocast(device):
            x2 = _as(x.reshape(-1, x.shape[-1]), dtype)
            w = _as(w, dtype)
            y = torch.nn.functional.linear(x2, w, None if bias is None else _as(bias, dtype))
            h = _add_branch(y, x2, a, b, scaling)
        ctx.save_for_backward(x2, h, w, a, b)
        ctx.scaling, ctx.x_shape, ctx.x_dtype = scaling, x.shape, x.dtype
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, gy):
        with _no_autocast(gy.device.type):
            x2, h, w, a, b = ctx.saved_tensors
            g2 = gy.reshape(-1, gy.shape[-1])
            gh = (g2 @ _as(b, g2.dtype)).mul_(ctx.scaling)
            gx = None
            if ctx.needs_input_grad[0]:
                gx = g2 @ _as(w, g2.dtype)
                gx.addmm_(gh, _as(a, gx.dtype))  # the branch's share, in the epilogue: no second tensor to sum
                gx = _as(gx.view(ctx.x_shape), ctx.x_dtype)
            ga, gb = _branch_grads(ctx, g2, gh, x2, h, a, b, *ctx.needs_input_grad[3:5])
        return gx, None, None, ga, gb, None


class _Lora4bitLinear(torch.autograd.Function):
    """`_LoraLinear` for a frozen bitsandbytes 4-bit base (QLoRA): W dequantized to the compute dtype where it is
    used, forward and backward (as bitsandbytes' own `MatMul4Bit` does), and dropped after; nothing but the
    packed weight is kept. Against bitsandbytes' layer under peft's, per adapted layer and step: no copy of the
    base's output (the branch adds in place on this function's own tensor), no separate sum of the input's two
    gradients, and one autograd node of Python where there were three (a checkpointed step runs each forward
    twice: a host-bound 7B QLoRA step kept the GPU busy 39 % of its time, bench/profiles/)."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling, dtype):
        from bitsandbytes import matmul_4bit

        with _no_autocast(x.device.type):
            x2 = _as(x.reshape(-1, x.shape[-1]), dtype)
            # no gradient is recorded in here, so bitsandbytes runs its one op (dequantize and multiply, or its
            # fused kernel for a few rows) and no autograd function of its own
            y = matmul_4bit(x2, weight, weight.quant_state, bias=None if bias is None else _as(bias, dtype))
            h = _add_branch(y, x2, a, b, scaling)
        ctx.save_for_backward(x2, h, weight, a, b)
        ctx.scaling, ctx.x_shape, ctx.x_dtype, ctx.state = scaling, x.shape, x.dtype, weight.quant_state
        return _as(y.view(*x.shape[:-1], y.shape[-1]), x.dtype)

    @staticmethod
    def backward(ctx, gy):
        from bitsandbytes.functional import dequantize_4bit

        with _no_autocast(gy.device.type):
            x2, h, weight, a, b = ctx.saved_tensors
            g2 = _as(gy.reshape(-1, gy.shape[-1]), x2.dtype)
            gh = (g2 @ _as(b, g2.dtype)).mul_(ctx.scaling)
            gx = None
            if ctx.needs_input_grad[0]:
                gx = g2 @ _as(dequantize_4bit(weight, ctx.state), g2.dtype)
                gx.addmm_(gh, _as(a, gx.dtype))
                gx = _as(gx.view(ctx.x_shape), ctx.x_dtype)
            ga, gb = _branch_grads(ctx, g2, gh, x2, h, a, b, *ctx.needs_input_grad[3:5])
        return gx, None, None, ga, gb, None, None


def _plain_frozen(base, cls: type) -> bool:
    """A `cls` itself (no subclass's forward, no hooks, e.g. accelerate's offloading) with nothing to train."""
    return (type(base) is cls and not base.weight.requires_grad
            and (base.bias is None or not base.bias.requires_grad)
            and not (base._forward_hooks or base._forward_pre_hooks or hasattr(base, "_hf_hook")))


def _4bit_compute_dtype(base, x: torch.Tensor) -> torch.dtype | None:
    """The dtype a frozen bitsandbytes `Linear4bit` itself (no subclass's forward, no hooks) would compute in,
    or None where the fused path does not apply: another layer, no quantization state, or the CPU inference
    layout that bitsandbytes repacks weights into (engine.model.keep_cpu_4bit_layout keeps it off in training)."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return None
    if not _plain_frozen(base, Linear4bit):
        return None
    state = getattr(base.weight, "quant_state", None)
    if state is None or getattr(state, "packing_format_for_cpu", False):
        return None
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    # bitsandbytes' rule (`set_compute_type`): an fp32 or bf16 input is computed in its own dtype, fp16 in the layer's
    if x.dtype in (torch.float32, torch.bfloat16) or base.compute_dtype is None:
        return x.dtype
    return base.compute_dtype


def _lora_classes() -> tuple[type, ...]:
    from peft.tuners.lora import layer

    classes = [layer.Linear]
    try:
        from peft.tuners.lora import bnb
    except ImportError:  # bitsandbytes missing
        return tuple(classes)
    classes += [getattr(bnb, n) for n in ("Linear8bitLt", "Linear4bit") if hasattr(bnb, n)]
    return tuple(classes)


def _forward(module, peft_forward, x, *args, **kwargs):
    """One plain LoRA adapter in training: the fused branch; anything else (inference, several or disabled
    adapters, merged weights, DoRA, a LoRA bias, peft's per-call arguments): peft's own forward
    (`peft_forward`, the class's function, called with the module)."""
    if args or kwargs or not (module.training and torch.is_grad_enabled()) or module.disable_adapters \
            or module.merged or len(module.active_adapters) != 1:
        return peft_forward(module, x, *args, **kwargs)
    name = module.active_adapters[0]
    if name not in module.lora_A or name in getattr(module, "lora_variant", {}) \
            or getattr(module, "lora_bias", {}).get(name):
        return peft_forward(module, x)
    base, dropout = module.base_layer, module.lora_dropout[name]
    adapter = module.lora_A[name].weight, module.lora_B[name].weight, module.scaling[name]
    if isinstance(dropout, torch.nn.Identity):
        if _plain_frozen(base, torch.nn.Linear):
            return _LoraLinear.apply(x, base.weight, base.bias, *adapter)
        if (dtype := _4bit_compute_dtype(base, x)) is not None:
            return _Lora4bitLinear.apply(x, base.weight, base.bias, *adapter, dtype)
    y = base(x)
    # a view made inside a custom function can't be written in place (why peft clones 4-bit's output every
    # time); traced by torch.compile, the in-place add is functionalised instead, and `_is_view` can't be traced
    if not y.is_contiguous() or (not torch.compiler.is_compiling() and y._is_view()):
        y = y.clone(memory_format=torch.contiguous_format)
    return _AddLora.apply(y, dropout(x), *adapter)


@functools.cache
def _fused_class(cls: type) -> type:
    """`cls` (a peft LoRA layer class) whose forward goes through `_forward`: one subclass per class, so every
    layer's forward is the same function. torch.compile (`training.compile`) then traces one graph for all the
    decoder layers; a per-module forward (an instance attribute) would be guarded by identity, one graph each."""
    peft_forward = cls.forward

    def forward(self, x, *args, **kwargs):
        return _forward(self, peft_forward, x, *args, **kwargs)

    return type(cls.__name__, (cls,), {"forward": forward, "__module__": __name__, "__qualname__": cls.__qualname__,
                                       "_tuneboard_fused": True})


def fuse_lora_layers(model) -> int:
    """Route every LoRA linear layer of `model` through the fused branch while it trains; returns how many.
    Each layer becomes an instance of a subclass of its peft class (same name, same attributes); the adapter's
    modules, weights and files stay peft's: saving, merging and reloading are unchanged."""
    classes = _lora_classes()
    n = 0
    for module in model.modules():
        if isinstance(module, classes) and not getattr(type(module), "_tuneboard_fused", False):
            module.__class__ = _fused_class(type(module))
            n += 1
    return n
