"""The fused InfoNCE + triplet loss against a plain loop-based reference, in value and gradient."""

import math

import torch
import torch.nn.functional as F

from lyric2vec_models.config import LossConfig
from lyric2vec_models.losses import contrastive_losses, gather_with_grad, hard_triplet, infonce

VIEWS = ("lyrics", "desc", "audio", "meta", "fused")


def seeded_batch(B=12, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = {
        v: F.normalize(torch.randn(B, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
        for v in VIEWS
    }
    masks = {v: torch.ones(B, dtype=torch.bool) for v in VIEWS}
    masks["lyrics"] = torch.rand(B, generator=g) > 0.3  # some instrumentals
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    return views, masks, log_scale


def reference_loss(views, masks, log_scale, cfg: LossConfig):
    """Written the slow, obvious way: one query at a time, python loops over candidates."""
    scale = log_scale.exp()
    total = torch.zeros((), dtype=torch.float64)
    for pair in cfg.infonce_pairs:
        x, y = pair.split("-")
        idx = [i for i in range(len(masks[x])) if masks[x][i] and masks[y][i]]
        if len(idx) < 2:
            continue
        term = torch.zeros((), dtype=torch.float64)
        for q, k in ((x, y), (y, x)):
            for i in idx:
                logits = torch.stack([scale * torch.dot(views[q][i], views[k][j]) for j in idx])
                term = term - (logits[idx.index(i)] - torch.logsumexp(logits, 0))
        total = total + cfg.infonce_weight * term / (2 * len(idx))
    for pair in cfg.triplet_pairs:
        x, y = pair.split("-")
        idx = [i for i in range(len(masks[x])) if masks[x][i] and masks[y][i]]
        a2b = b2a = torch.zeros((), dtype=torch.float64)
        for i in idx:
            pos = torch.dot(views[x][i], views[y][i])
            hardest_b = max(torch.dot(views[x][i], views[y][j]) for j in idx if j != i)
            hardest_a = max(torch.dot(views[x][j], views[y][i]) for j in idx if j != i)
            a2b = a2b + torch.relu(cfg.triplet_margin - pos + hardest_b)
            b2a = b2a + torch.relu(cfg.triplet_margin - pos + hardest_a)
        total = total + cfg.triplet_weight * 0.5 * (a2b + b2a) / len(idx)
    return total


def grads(loss, views, log_scale):
    tensors = [*views.values(), log_scale]
    return torch.autograd.grad(loss, tensors)


def test_fused_loss_and_gradient_match_reference():
    cfg = LossConfig(triplet_pairs=("lyrics-audio", "desc-audio"), triplet_margin=0.3)
    views, masks, log_scale = seeded_batch()
    assert 2 <= int(masks["lyrics"].sum()) < len(masks["lyrics"])  # the mask path is exercised
    fast = sum(contrastive_losses(views, masks, log_scale.exp(), cfg).values())
    ref = reference_loss(views, masks, log_scale, cfg)
    assert torch.allclose(fast, ref, rtol=1e-10, atol=1e-12), (float(fast), float(ref))
    for g_fast, g_ref in zip(grads(fast, views, log_scale), grads(ref, views, log_scale), strict=True):
        assert torch.allclose(g_fast, g_ref, rtol=1e-9, atol=1e-12)
    assert fast.item() > 0


def test_each_term_is_named_and_weighted():
    cfg = LossConfig(
        infonce_pairs=("lyrics-audio", "audio-meta"), triplet_pairs=("lyrics-audio",), triplet_weight=0.0
    )
    views, masks, log_scale = seeded_batch()
    terms = contrastive_losses(views, masks, log_scale.exp(), cfg)
    assert set(terms) == {"infonce_lyrics-audio_loss", "infonce_audio-meta_loss", "triplet_lyrics-audio_loss"}
    assert terms["triplet_lyrics-audio_loss"].item() == 0.0


def test_masked_rows_do_not_affect_the_pair():
    cfg = LossConfig(infonce_pairs=("lyrics-audio",), triplet_pairs=("lyrics-audio",))
    views, masks, log_scale = seeded_batch()
    before = sum(contrastive_losses(views, masks, log_scale.exp(), cfg).values())
    hidden = int(torch.nonzero(~masks["lyrics"])[0, 0])
    changed = {k: v.detach().clone() for k, v in views.items()}
    changed["lyrics"][hidden] = -changed["audio"][hidden]  # garbage in an instrumental's lyrics slot
    after = sum(contrastive_losses(changed, masks, log_scale.exp(), cfg).values())
    assert torch.allclose(before, after)


def test_infonce_limits():
    a = torch.eye(8, dtype=torch.float64)
    assert float(infonce(a, a, torch.tensor(100.0))) < 1e-30  # perfectly aligned, sharp
    assert math.isclose(
        float(infonce(a, torch.ones_like(a) / math.sqrt(8), torch.tensor(1.0))), math.log(8), rel_tol=1e-9
    )
    assert float(infonce(a[:1], a[:1], torch.tensor(10.0))) == 0.0  # one row: no negatives, zero loss
    assert math.isclose(float(hard_triplet(a, a, 0.2)), 0.0, abs_tol=1e-12)  # pos 1, hardest neg 0 > margin


def test_gather_is_identity_without_a_process_group():
    x = torch.randn(4, 3, requires_grad=True)
    assert gather_with_grad(x) is x
