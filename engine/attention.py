"""Attention for padding-free packed batches: PyTorch's variable-length kernel, registered with transformers.

trl's bfd packing flattens a batch into one row whose position ids restart per sample and hands the model
`cu_seq_lens_q` (sample boundaries). flash-attn uses those directly; without flash-attn, transformers' sdpa
path turns position ids into a block-diagonal mask over the whole row: correct, but quadratic in the row's
length and blind to the blocks it could skip. `varlen` runs `torch.nn.attention.varlen.varlen_attn` (the
flash kernel that ships inside PyTorch) on the boundaries instead. Where that kernel cannot run (CPU, fp32,
dropout) each sample goes through sdpa on its own, which is the same arithmetic and is what the CPU tests
check; anything that is not a packed row (a padding mask, decoding with a cache) goes to plain sdpa.
"""

from __future__ import annotations

NAME = "tuneboard_varlen"  # the key registered with transformers; configs say "varlen"


KERNEL_DEVICES = ("cuda",)  # where `varlen_attn` runs (a test adds "cpu" with a reference kernel of its own)
_FOUND: dict = {}  # what this torch ships, looked up once: see `_kernel`


def _kernel() -> tuple[bool, frozenset[str]]:
    """Whether this torch ships `torch.nn.attention.varlen` (2.9 and newer), and `varlen_attn`'s parameters.
    Asked per layer, so looked up once, and first by `register`, at load: a compiled layer (`engine.compiled`)
    then reads a dict, where tracing the look-up itself would break its graph (torch 2.11's compiler does not
    trace `importlib.util.find_spec`, and runs a layer that calls it as 8 pieces, measured on an H200)."""
    if not _FOUND:
        import importlib.util
        import inspect

        has = importlib.util.find_spec("torch.nn.attention.varlen") is not None
        params: frozenset[str] = frozenset()
        if has:
            from torch.nn.attention.varlen import varlen_attn

            params = frozenset(inspect.signature(varlen_attn).parameters)
        _FOUND.update(has=has, params=params)
    return _FOUND["has"], _FOUND["params"]


def _has_kernel() -> bool:
    return _kernel()[0]


def _kernel_params() -> frozenset[str]:
    return _kernel()[1]


def available_on_gpu() -> bool:
    """PyTorch's varlen kernel exists and this GPU can run it (flash kernels need compute capability 8.0+)."""
    import torch

    return _has_kernel() and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def register() -> str:
    """Make `NAME` a valid `attn_implementation` for from_pretrained; safe to call many times."""
    from transformers import AttentionInterface, AttentionMaskInterface

    _kernel()
    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, varlen_mask)
    return NAME


def hf_name(attn: str) -> str:
    """The name transformers knows for a config's attention choice."""
    return register() if attn == "varlen" else attn


def cu_seqlens_from_position_ids(position_ids):
    """Boundaries of the samples in a packed row: where the position restarts at 0, plus the end."""
    import torch

    pos = position_ids[0]
    starts = (pos == 0).nonzero().flatten()
    if starts.numel() == 0 or starts[0] != 0:
        starts = torch.cat([starts.new_zeros(1), starts])
    end = torch.tensor([pos.numel()], device=starts.device, dtype=starts.dtype)
    return torch.cat([starts, end]).to(torch.int32)


def varlen_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                attention_mask=None, **kwargs):
    """No mask for packed or unpadded rows (the boundaries carry it); sdpa's mask where there is real padding."""
    if attention_mask is None or (attention_mask.shape[-1] == kv_length and bool(attention_mask.all())):
        return None
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function or causal_mask_function,
                     attention_mask=attention_mask, **kwargs)


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (1, H, T, D), key/value (1, Hkv, T, D) → ((1, T, H, D), None), as transformers' sdpa returns."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed = (attention_mask is None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
              and query.shape[2] > 1 and getattr(module, "is_causal", True))
    cu = kwargs.get("cu_seq_lens_q")
    if packed and cu is None and kwargs.get("position_ids") is not None:
        cu = cu_seqlens_from_position_ids(kwargs["position_ids"])
    if not packed or cu is None or cu.numel() <= 2:  # one sample or not a packed row: plain causal sdpa
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, heads, D)
    window = getattr(module, "sliding_window", None)
    kw = _kernel_call(q, k, dropout, scaling, window)
    if kw is not None:
        out = _flash_varlen(q, k, v, cu, kwargs.get("max_length_q"), scaling, window, kw)
    else:
        out = _per_sample(q, k, v, cu, scaling, dropout if module.training else 0.0, window)
    return out.unsqueeze(0), None


def _kernel_call(q, k, dropout, scaling, window) -> dict | None:
    """`varlen_attn`'s keywords for this call, or None where the kernel cannot run it."""
    import torch

    if q.device.type not in KERNEL_DEVICES or dropout or not _has_kernel():
        return None
    if q.dtype not in (torch.float16, torch.bfloat16) and not torch.is_autocast_enabled(q.device.type):
        return None
    return kernel_kwargs(_kernel_params(), scaling, window, q.shape[-1], q.shape[1] != k.shape[1])


def kernel_kwargs(params: frozenset[str], scaling: float | None, window: int | None, head_dim: int,
                  gqa: bool) -> dict | None:
    """The keywords for this torch's `varlen_attn` (its signature has changed from release to release), or
    None where it cannot do the job. 2.9 and 2.10 take `is_causal`, with no scale and no window; 2.11 takes
    `scale` and `window_size` ((-1, 0) is causal); later releases also `enable_gqa`, which only guards their
    cuDNN path: the flash kernel takes fewer key/value heads than query heads in every release."""
    kw: dict = {}
    if "window_size" in params:
        kw["window_size"] = (window - 1 if window else -1, 0)
    elif "is_causal" in params and not window:
        kw["is_causal"] = True
    else:
        return None
    if "scale" in params:
        kw["scale"] = scaling
    elif scaling is not None and abs(scaling - head_dim**-0.5) > 1e-6 * head_dim**-0.5:
        return None
    if "enable_gqa" in params:
        kw["enable_gqa"] = gqa
    return kw


def _flash_varlen(q, k, v, cu, max_len, scaling, window, kw: dict):
    import torch
    from torch.nn.attention.varlen import varlen_attn

    dtype = q.dtype
    if dtype not in (torch.float16, torch.bfloat16):  # fp32 masters under autocast: the kernel wants 16-bit
        half = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(half), k.to(half), v.to(half)
    cu = cu.to(device=q.device, dtype=torch.int32)
    if max_len is None:
        max_len = int((cu[1:] - cu[:-1]).max())
    out = varlen_attn(q, k, v, cu, cu, int(max_len), int(max_len), **kw)
    return out.to(dtype)


def _per_sample(q, k, v, cu, scaling, dropout, window):
    """The reference path: each sample attends to itself alone, causally."""
    import torch
    import torch.nn.functional as F

    outs = []
    bounds = cu.tolist()
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b <= a:
            continue
        qs, ks, vs = (t[a:b].transpose(0, 1) for t in (q, k, v))  # (heads, n, D)
        mask = None
        if window and b - a > window:
            i = torch.arange(b - a, device=q.device)
            mask = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
        outs.append(F.scaled_dot_product_attention(
            qs, ks, vs, attn_mask=mask, is_causal=mask is None, dropout_p=dropout, scale=scaling,
            enable_gqa=qs.shape[0] != ks.shape[0]).transpose(0, 1))
    return torch.cat(outs, 0)
