"""Chant recogniser: CTC learns on generated samples, greedy decoding, generator determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyric2vec_models.asr import (
    ALPHABET,
    ChantRecogniser,
    cer,
    ctc_loss,
    decode_ids,
    encode_chars,
    greedy_decode,
    normalise_chars,
)
from lyric2vec_pipeline.songbook.chant import ChantConfig, TextSource, generate

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


# ---------------------------------------------------------------- the retrieval protocol over transcripts


def _toy_corpus():
    from lyric2vec_models.lyrics_match import heard_text

    texts = ["nun danket alle gott mit herzen mund und handen", "lasciatemi morire e chi volete voi",
             "ein feste burg ist unser gott ein gute wehr und waffen", "o haupt voll blut und wunden",
             "christ lag in todesbanden fur unsre sund gegeben", "gloria in excelsis deo et in terra pax",
             "kyrie eleison christe eleison", "ave maria gratia plena dominus tecum",
             "jesu meine freude meines herzens weide", "wachet auf ruft uns die stimme",
             "allein gott in der hoh sei ehr", "vater unser im himmelreich"]  # fmt: skip
    ids = [f"t{i:02d}" for i in range(len(texts))]
    lyrics = dict(zip(ids, texts, strict=True))
    words = {t: [{"word": w, "verse": 0, "onset_s": 2.0 * j} for j, w in enumerate(x.split())] for t, x in lyrics.items()}
    heard = {t: heard_text(words[t], 30.0) for t in ids}
    split = np.array(["train"] * 6 + ["test"] * 6)
    return ids, lyrics, heard, {0: split, 1: np.roll(split, 3), 2: np.roll(split, 6)}


def test_transcript_protocol_rewards_hearing_and_only_hearing():
    from lyric2vec_models.lyrics_match import METHODS, corpus_report

    ids, lyrics, heard, splits = _toy_corpus()
    assert heard["t06"] == "kyrie eleison christe eleison"
    good = corpus_report(ids, lyrics, dict(heard), heard, splits, tie_seed=0)
    for method in METHODS:  # transcripts that are the sung words: every song found first, every seed
        for d in ("lyrics->audio", "audio->lyrics"):
            s = good["methods"][method]["summary"][d]
            assert s["recall@1"]["mean"] == 1.0 and s["gallery"] == [6, 6, 6]
            assert s["random_recall@10"] == 1.0  # a 6-item gallery: R@10 is trivial, R@1 is not
    assert good["cer_vs_sung_words"] == 0.0
    # transcripts of the WRONG clips (each clip hears another song): the recogniser rows fall, the ceiling stays
    wrong = {t: heard[ids[(i + 1) % len(ids)]] for i, t in enumerate(ids)}
    bad = corpus_report(ids, lyrics, wrong, heard, splits, tie_seed=0)
    assert bad["methods"][METHODS[0]]["summary"]["lyrics->audio"]["recall@1"]["mean"] < 0.2
    assert bad["methods"][METHODS[2]]["summary"]["lyrics->audio"]["recall@1"]["mean"] == 1.0
    assert bad["cer_vs_sung_words"] > 0.5


def test_recogniser_texts_exclude_every_seeds_val_and_test():
    from lyric2vec_models.lyrics_match import recogniser_leakage, recogniser_text_mask

    ids, lyrics, _, splits = _toy_corpus()
    texts = [lyrics[t] for t in ids]
    mask = recogniser_text_mask(splits, texts)
    assert mask.tolist() == [s0 == s1 == s2 == "train" for s0, s1, s2 in zip(*splits.values(), strict=True)]
    clean = recogniser_leakage(splits, texts, mask)
    assert all(clean[f"seed{s}"] == {"shared_texts": 0, "near_duplicate_pairs": 0} for s in splits)
    planted = np.array(mask)  # a recogniser text that is a test text of seed 0
    planted[6] = True
    assert recogniser_leakage(splits, texts, planted)["seed0"]["shared_texts"] == 1


def test_recogniser_trains_saves_as_safetensors_and_refuses_a_truncated_file(tmp_path):
    from lyric2vec_models.artifacts import ArtifactError
    from lyric2vec_models.asr import load_recogniser, save_recogniser, train_recogniser, transcribe

    rng = np.random.default_rng(0)
    mels = rng.normal(size=(6, 64, 120)).astype(np.float16)
    labels = ["ab", "ba", "abba", "a", "b", "aab"]
    model, info = train_recogniser(mels, labels, mels[:2].astype(np.float32), labels[:2], max_steps=4,
                                   batch=3, eval_every=2, progress=False)  # fmt: skip
    assert info["steps"] == 4 and [h["step"] for h in info["history"]] == [2, 4]
    assert 0.0 <= info["heldout_cer"] and np.isfinite(info["history"][0]["loss"])
    save_recogniser(model, tmp_path / "rec", {"note": "test"})
    again, manifest = load_recogniser(tmp_path / "rec")
    assert manifest["version"].startswith("chant-") and manifest["note"] == "test"
    assert (tmp_path / "rec" / "weights.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    assert transcribe(again, mels[:3].astype(np.float32)) == transcribe(model, mels[:3].astype(np.float32))
    w = tmp_path / "rec" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        load_recogniser(tmp_path / "rec")
