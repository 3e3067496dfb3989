"""Reference-free preference tuning, ORPO and SimPO, on trl's DPO trainer: its tokenised pairs, collator, tiled LM
head and logging, with the loss computed from the policy alone (no reference forward, no reference copy).

trl 1.x ships these only in `trl.experimental` (CPO, ORPO), as trainers of their own that tokenise, truncate and
build full logits otherwise than its DPO trainer; here the pairs train exactly as DPO's do (`engine.dpo.Truncate`),
and only the loss differs. Both score an answer by its average log-probability per token (its length-normalised
likelihood), so a long answer is not favoured for its length, and both log trl's `rewards/*` as beta x that average.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl import DPOTrainer

from .config import REFERENCE_FREE


def average_logps(per_token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's mean log-probability over its masked (answer) tokens."""
    mask = mask.to(per_token_logps.dtype)
    return (per_token_logps * mask).sum(1) / mask.sum(1).clamp(min=1)


def simpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimPO (Meng et al., 2024, Eq. 6) per pair, from average log-probabilities: -log sigmoid(beta x (chosen -
    rejected) - gamma); gamma is the reward margin the chosen answer must win by."""
    return -F.logsigmoid(beta * (chosen - rejected) - gamma)


def log_odds_ratio(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """ORPO's log odds ratio of the chosen answer over the rejected one, odds = p / (1 - p) with p the answer's
    length-normalised likelihood exp(average log-probability). log(1 - p) = log(-expm1(avg)), exact near p = 1;
    an average of exactly 0 (p = 1, odds infinite) is held just below it."""
    chosen, rejected = chosen.clamp(max=-1e-6), rejected.clamp(max=-1e-6)
    return (chosen - rejected) - (torch.log(-torch.expm1(chosen)) - torch.log(-torch.expm1(rejected)))


def orpo_ratio_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """ORPO's odds-ratio term per pair (Hong et al., 2024, Eq. 7): -log sigmoid(log odds ratio). The whole loss is
    the chosen answers' NLL plus lambda (here `dpo.beta`) times this."""
    return -F.logsigmoid(log_odds_ratio(chosen, rejected))


class ReferenceFreeTrainer(DPOTrainer):
    """trl's DPOTrainer with ORPO's or SimPO's loss. Built with `precompute_ref_log_probs` where there is no adapter
    to turn off (full, freeze), so that trl loads no reference model; there is nothing to precompute, so that pass
    returns the data as it is (trl still hashes the weights once at the start: seconds, not a second model)."""

    def __init__(self, *args, method: str, gamma: float = 0.0, sft_weight: float = 0.0, **kwargs):
        if method not in REFERENCE_FREE:
            raise ValueError(f"method must be one of {REFERENCE_FREE}, got {method!r}")
        self.method, self.gamma, self.sft_weight = method, gamma, sft_weight
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        return dataset

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        kwargs = {k: v for k, v in inputs.items() if k not in ("completion_mask", "ref_chosen_logps",
                                                               "ref_rejected_logps")}
        completion = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion == 0, -100)
        outputs = model(**kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        mask = completion[:, 1:]
        per_token = outputs.log_probs[:, -mask.size(1):].float()
        avg_chosen, avg_rejected = average_logps(per_token, mask).chunk(2)  # the batch is [chosen; rejected]
        chosen_tokens = per_token.chunk(2)[0][mask.chunk(2)[0].bool()]
        nll = -chosen_tokens.mean() if chosen_tokens.numel() else per_token.sum() * 0  # as trl's "sft" loss
        said: dict[str, torch.Tensor] = {}
        if self.method == "orpo":
            loss = nll + self.beta * orpo_ratio_loss(avg_chosen, avg_rejected).mean()
            said |= {"log_odds_ratio": log_odds_ratio(avg_chosen, avg_rejected).mean(), "nll_loss": nll}
        else:
            loss = simpo_loss(avg_chosen, avg_rejected, self.beta, self.gamma).mean()
            if self.sft_weight:
                loss = loss + self.sft_weight * nll
        chosen_rewards, rejected_rewards = self.beta * avg_chosen, self.beta * avg_rejected
        sums = (per_token * mask.to(per_token.dtype)).sum(1)  # summed, as trl's DPO logs them
        said |= {"rewards/chosen": chosen_rewards.mean(), "rewards/rejected": rejected_rewards.mean(),
                 "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
                 "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
                 "logps/chosen": sums.chunk(2)[0].mean(), "logps/rejected": sums.chunk(2)[1].mean()}
        tokens = inputs["attention_mask"].sum().to(per_token.dtype)
        *values, tokens = torch.stack([*(v.detach().float() for v in said.values()), tokens]).tolist()  # one read
        for key, value in zip(said, values, strict=True):
            self._metrics[mode][key].append(value)
        if mode == "train":
            self._total_train_tokens += int(tokens)
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        if return_outputs:  # logits wanted (an evaluation with prediction_loss_only off): the tiled head has none
            with torch.no_grad():
                return loss, model(**kwargs, use_cache=False)
        return loss
