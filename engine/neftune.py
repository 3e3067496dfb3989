"""NEFTune: uniform noise on the input embeddings while training, scaled per sequence as the paper scales it.

The paper (Jain et al., 2023) adds noise drawn from U(-1, 1) times alpha / sqrt(L * d) to a sequence's embeddings,
L its length and d the embedding width. transformers' hook takes L from the batch's shape: a packed or
padding-free row holding twenty sequences of 200 tokens each got noise sqrt(20) times weaker than each sequence
alone, and a padded row counted its padding. Here each token's L is its own sequence's: from the position ids
where rows are packed (they restart at 0 where a sequence begins), from the attention mask where rows are padded.

Training only: a model in eval mode (evaluation, generation after the run) sees its embeddings as they are, and
`remove()` takes the hooks off when training ends.
"""

from __future__ import annotations

import torch


def add_neftune(model: torch.nn.Module, alpha: float) -> Noise:
    """Hook `alpha`'s noise into `model`'s input embeddings (a peft model's too); `remove()` it after training."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embeddings = base.get_input_embeddings()
    owner = next(m for m in base.modules() if any(c is embeddings for c in m.children()))  # LlamaModel, Qwen2Model...
    return Noise(owner, embeddings, alpha)


def sequence_lengths(shape: tuple[int, int], position_ids=None, attention_mask=None) -> torch.Tensor:
    """(batch, tokens) -> each token's sequence length: packed sequences by where their positions restart,
    padded rows by their mask, else the row's length."""
    batch, tokens = shape
    if position_ids is not None and position_ids.shape[-1] == tokens:
        pos = position_ids.reshape(-1, tokens).expand(batch, tokens)
        starts = torch.cat([torch.ones_like(pos[:, :1], dtype=torch.bool), pos[:, 1:] <= pos[:, :-1]], dim=1)
        ids = starts.long().cumsum(dim=1)  # which sequence of its row each token is in, from 1
        counts = torch.zeros(batch, tokens + 1, dtype=torch.long, device=pos.device)
        counts.scatter_add_(1, ids, torch.ones_like(ids))
        return counts.gather(1, ids)
    if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[-1] == tokens:
        return attention_mask.sum(dim=1, keepdim=True).clamp(min=1).expand(batch, tokens)
    return torch.full((batch, tokens), tokens, dtype=torch.long)


class Noise:
    def __init__(self, owner: torch.nn.Module, embeddings: torch.nn.Module, alpha: float):
        self.alpha, self.lengths = alpha, None
        self.handles = [owner.register_forward_pre_hook(self._before, with_kwargs=True),
                        embeddings.register_forward_hook(self._after)]

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.lengths = None if ids is None else sequence_lengths(
            tuple(ids.shape), kwargs.get("position_ids"), kwargs.get("attention_mask"))

    def _after(self, module, inputs, output):
        if not module.training or self.lengths is None or self.lengths.shape != output.shape[:2]:
            return output
        scale = self.alpha / torch.sqrt(self.lengths.to(output.device, torch.float32) * output.shape[-1])
        noise = torch.empty_like(output).uniform_(-1, 1) * scale.unsqueeze(-1).to(output.dtype)
        return output + noise

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.lengths = None
