"""Chant recogniser: CTC learns on generated samples, greedy decoding, generator determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyric2vec_models.asr import ChantRecogniser, cer, ctc_loss, greedy_decode
from lyric2vec_models.chant_data import (
    ALPHABET,
    ChantConfig,
    TextSource,
    decode_ids,
    encode_chars,
    generate,
    normalise_chars,
)

pytest.importorskip("tinysoundfont")

SOURCE = TextSource.from_lyrics(
    ["Nun danket alle Gott mit Herzen Mund und Händen", "Lasciatemi morire e chi volete voi"],
    ["German", "Italian"],
)
CFG = ChantConfig(seconds=3.0)


def _espeak_or_skip():
    from lyric2vec_pipeline.songbook import render

    try:
        render._espeak()
    except RuntimeError as exc:
        pytest.skip(str(exc))


def test_normalise_and_round_trip():
    assert normalise_chars("Nun danket, alle Gott’s Füße!") == "nun danket alle gott's fusse"
    assert decode_ids(encode_chars("Händen und")) == "handen und"


def test_greedy_decode_of_a_known_alignment():
    code = {c: ALPHABET.index(c) + 1 for c in "helo "}
    path = "_hh_ee__l_loo _"  # "_" = blank; repeats collapse unless a blank splits them
    ids = [0 if c == "_" else code[c] for c in path]
    lp = torch.full((len(ids), len(ALPHABET) + 1), -10.0)
    lp[torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    assert greedy_decode(lp) == "hello "
    assert cer(["hallo"], ["hello"]) == pytest.approx(0.2)


def test_generator_is_deterministic_per_seed():
    _espeak_or_skip()
    a = [x for batch in generate([3, 4], SOURCE, CFG, batch=2) for x in zip(*batch, strict=True)]
    b = [x for batch in generate([4, 3], SOURCE, CFG, batch=1) for x in zip(*batch, strict=True)]
    assert a[0][1] == b[1][1] and a[1][1] == b[0][1] and a[0][1]
    np.testing.assert_array_equal(a[0][0], b[1][0])
    np.testing.assert_array_equal(a[1][0], b[0][0])
    assert a[0][0].shape == (int(CFG.seconds * CFG.sample_rate),)


def test_ctc_loss_decreases_on_generated_samples():
    _espeak_or_skip()
    torch.manual_seed(0)
    ((mels, labels),) = list(generate([0, 1, 2, 3], SOURCE, CFG, batch=4, as_mel=True))
    x = torch.as_tensor(np.stack(mels).astype(np.float32))
    targets = [encode_chars(t) for t in labels]
    model = ChantRecogniser(hidden=64, layers=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = ctc_loss(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
