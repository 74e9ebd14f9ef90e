"""Contrastive losses over view pairs; each returns {"<name>_loss": tensor} and the trainer sums them.

Views are L2-normalised (B, d) tensors with a (B,) bool mask; a row whose view is missing (an
instrumental has no lyrics) is left out of every pair that uses that view.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lyric2vec_models.config import LossConfig


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A 0 that stays in the graph, so every rank runs the same backward even when a pair is empty."""
    return sum(t.sum() * 0.0 for t in tensors)


def _valid_pair(a, b, mask_a, mask_b):
    keep = mask_a & mask_b  # (B,)
    return a[keep], b[keep]


def infonce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: row i of `a` should pick row i of `b` and vice versa. (n, d), (n, d) -> ()."""
    if len(a) < 2:  # one row has no negatives
        return _zero(a, b, logit_scale)
    logits = logit_scale * a @ b.T  # (n, n)
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def hard_triplet(a: torch.Tensor, b: torch.Tensor, margin: float) -> torch.Tensor:
    """Triplet loss with the hardest in-batch negative, both directions. (n, d), (n, d) -> ()."""
    if len(a) < 2:
        return _zero(a, b)
    sim = a @ b.T  # (n, n) cosine
    pos = sim.diagonal()  # (n,)
    off = sim.masked_fill(torch.eye(len(a), dtype=torch.bool, device=a.device), float("-inf"))
    neg_ab = off.max(dim=1).values  # hardest b for each a
    neg_ba = off.max(dim=0).values  # hardest a for each b
    return 0.5 * (F.relu(margin - pos + neg_ab).mean() + F.relu(margin - pos + neg_ba).mean())


def contrastive_losses(
    views: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    logit_scale: torch.Tensor,
    cfg: LossConfig,
) -> dict[str, torch.Tensor]:
    """Named, weighted terms: "infonce_<a>-<b>_loss" for each InfoNCE pair, "triplet_<a>-<b>_loss"."""
    terms = {}
    for pair in cfg.infonce_pairs:
        x, y = pair.split("-")
        a, b = _valid_pair(views[x], views[y], masks[x], masks[y])
        terms[f"infonce_{pair}_loss"] = cfg.infonce_weight * infonce(a, b, logit_scale)
    for pair in cfg.triplet_pairs:
        x, y = pair.split("-")
        a, b = _valid_pair(views[x], views[y], masks[x], masks[y])
        terms[f"triplet_{pair}_loss"] = cfg.triplet_weight * hard_triplet(a, b, cfg.triplet_margin)
    return terms


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for the local slice.

    Each rank computes the same global loss from the gathered batch, so the gradient reaching rank
    r's embeddings is the sum over ranks; averaging parameter gradients afterwards (as DDP does)
    then gives exactly the single-process gradient, including for the temperature, which every rank
    sees in full. (Open_clip's "put the local tensor back" variant leaves encoder gradients 1/W
    smaller than the temperature's, which Adam hides but an equality test does not.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)  # (W*B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) per rank -> (W*B, ...) in rank order, differentiable; identity when not distributed.

    Every rank must hold the same B (the trainer splits each global batch evenly).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Masks and ids: gathered without autograd (bool is sent as uint8 for gloo)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    y = x.to(torch.uint8) if x.dtype == torch.bool else x
    parts = [torch.empty_like(y) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, y.contiguous())
    out = torch.cat(parts, dim=0)
    return out.bool() if x.dtype == torch.bool else out
