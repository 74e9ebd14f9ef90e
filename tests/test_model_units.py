"""Units: encoders, fusion masking, windowing, determinism, metrics, saved-model integrity, text tower."""

import numpy as np
import pytest
import torch

from lyric2vec_models.artifacts import ArtifactError
from lyric2vec_models.audio import LogMel, SpectrogramSpec
from lyric2vec_models.config import TrainConfig, preset
from lyric2vec_models.data import mel_windows, synthetic_training_data
from lyric2vec_models.inference import Lyric2VecEncoder
from lyric2vec_models.metrics import random_baseline, ranks, retrieval_metrics
from lyric2vec_models.text import TextEncoder, default_text_model_path, describe_track
from lyric2vec_models.train import build_model, configure_for_data, load_model, save_model


def tiny_config(window_seconds=10.0) -> TrainConfig:
    cfg = preset("tiny")
    cfg.window_seconds = window_seconds
    return cfg


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    data = synthetic_training_data(n_tracks=8, clips_per_track=1, frames=32, text_dim=384)
    cfg = configure_for_data(tiny_config(), data)
    model = build_model(cfg, len(data.artist_vocab), len(data.genre_vocab))
    out = tmp_path_factory.mktemp("model") / "model"
    save_model(model, cfg, out, data.artist_vocab, data.genre_vocab, data.spec)
    return out


def test_encoders_give_normalised_vectors_of_the_model_dim():
    cfg = configure_for_data(tiny_config(), synthetic_training_data(n_tracks=4, frames=32))
    model = build_model(cfg, n_artists=3, n_genres=2).eval()
    z_a = model.encode_audio(torch.randn(5, cfg.model.n_mels, 44))  # (B, n_mels, T)
    z_t = model.encode_text(torch.randn(5, cfg.model.text_dim))
    z_m = model.encode_meta(torch.tensor([0, 1, 2, 3, 99]), torch.tensor([0, 1, 2, 0, 0]))
    for z in (z_a, z_t, z_m):
        assert z.shape == (5, cfg.model.embed_dim)
        assert torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)
    # an id beyond the vocabulary falls into the unknown bucket (row 0)
    assert torch.allclose(z_m[4], model.encode_meta(torch.tensor([0]), torch.tensor([0]))[0])
    # the audio encoder accepts any number of frames (whole windows at inference)
    assert model.encode_audio(torch.randn(2, cfg.model.n_mels, 431)).shape == (2, cfg.model.embed_dim)


def test_fusion_masks_missing_views_and_renormalises_gates():
    cfg = configure_for_data(tiny_config(), synthetic_training_data(n_tracks=4, frames=32))
    model = build_model(cfg, 3, 2).eval()
    d = cfg.model.embed_dim
    zt, za, zm = (torch.nn.functional.normalize(torch.randn(4, d), dim=-1) for _ in range(3))
    mt = torch.tensor([True, False, True, False])
    ma = torch.tensor([True, True, False, False])
    mm = torch.tensor([True, True, True, False])
    fused, gates = model.fuse(zt, za, zm, mt, ma, mm)
    assert torch.allclose(gates[:3].sum(1), torch.ones(3))
    assert gates[1, 0] == 0 and gates[2, 1] == 0  # missing view -> gate exactly 0
    assert torch.all(gates[3] == 0) and torch.all(fused[3] == 0)  # nothing present -> zero vector
    # with only text and meta present, the fused vector lies in their span
    only = model.fuse(zt, za, zm, mt, torch.zeros(4, dtype=torch.bool), mm)[0][0]
    g = model.fuse(zt, za, zm, mt, torch.zeros(4, dtype=torch.bool), mm)[1][0]
    expect = torch.nn.functional.normalize(g[0] * zt[0] + g[2] * zm[0], dim=0)
    assert torch.allclose(only, expect, atol=1e-6)


def test_mel_windows_do_not_count_any_frame_twice():
    mel = np.arange(2 * 25, dtype=np.float32).reshape(1, 50)  # 50 frames, window 10 -> 5 windows
    w = mel_windows(mel, 10, pad_value=-1.0)
    assert w.shape == (5, 1, 10) and np.array_equal(w.reshape(-1), mel.reshape(-1))
    w = mel_windows(np.ones((1, 26), np.float32), 10, pad_value=-1.0)  # tail of 6 >= half: kept, padded
    assert w.shape == (3, 1, 10) and (w[2, 0, 6:] == -1).all() and (w[2, 0, :6] == 1).all()
    assert mel_windows(np.ones((1, 24), np.float32), 10, -1.0).shape[0] == 2  # tail of 4 < half: dropped


def test_whole_track_windowing_25s_and_20s(saved_model):
    enc = Lyric2VecEncoder.load(saved_model)
    sr = enc.spec.sample_rate
    rng = np.random.default_rng(0)
    wave25 = rng.normal(0, 0.1, 25 * sr).astype(np.float32)
    mels = enc.audio_windows(wave25)
    assert mels.shape == (3, enc.spec.n_mels, enc.spec.frames_for(10.0))  # 10 s + 10 s + 5 s (padded)
    logmel = LogMel(enc.spec)
    for i, (s, e) in enumerate([(0, 10 * sr), (10 * sr, 20 * sr)]):
        assert torch.allclose(mels[i], logmel(wave25[s:e]))  # window i is exactly seconds [10i, 10i+10)
    tail = np.zeros(10 * sr, np.float32)
    tail[: 5 * sr] = wave25[20 * sr :]
    assert torch.allclose(mels[2], logmel(tail))
    assert enc.audio_windows(wave25[: 20 * sr]).shape[0] == 2  # exactly two, no overlap, no extra


def test_same_input_gives_the_same_embedding_twice(saved_model):
    enc = Lyric2VecEncoder.load(saved_model)
    wave = np.random.default_rng(1).normal(0, 0.1, 23 * enc.spec.sample_rate).astype(np.float32)
    a, b = enc.encode_audio(wave), enc.encode_audio(wave.copy())
    assert a.shape == (enc.dim,) and a.dtype == np.float32 and np.array_equal(a, b)
    assert np.isclose(np.linalg.norm(a), 1.0, atol=1e-5)
    again = Lyric2VecEncoder.load(saved_model).encode_audio(wave)  # a fresh load too
    assert np.array_equal(a, again)
    feats = np.random.default_rng(2).normal(size=(3, 384)).astype(np.float32)
    assert np.array_equal(enc.encode_text_features(feats), enc.encode_text_features(feats))
    m1 = enc.encode_meta(["artist1", "nobody"], ["genre2", None])
    m2 = enc.encode_meta(["artist1", None], ["genre2", None])
    assert np.array_equal(m1, m2)  # an unknown artist is the unknown bucket
    fused, gates = enc.fuse(None, a[None], m1[:1])
    assert gates[0, 0] == 0 and np.isclose(gates[0].sum(), 1.0)


def test_ties_are_broken_at_random_not_in_the_models_favour():
    G, Q = 50, 2000
    gallery = np.tile(np.array([[1.0, 0.0]]), (G, 1))  # identical vectors: the model knows nothing
    query = np.tile(np.array([[1.0, 0.0]]), (Q, 1))
    truth = np.arange(Q) % G
    m = retrieval_metrics(query, gallery, truth, seed=0)
    assert m["random"]["recall@10"] == pytest.approx(10 / G)  # exact: k / G
    assert m["random"]["recall@1"] == pytest.approx(1 / G)
    assert abs(m["recall@10"] - 10 / G) < 0.03  # observed 0.2085 at seed 0, not 1.0
    assert abs(m["recall@1"] - 1 / G) < 0.01
    # perfect retrieval is still 1.0, and a distinct better item pushes the relevant one down
    eye = np.eye(5)
    assert retrieval_metrics(eye, eye, np.arange(5))["recall@1"] == 1.0
    assert ranks(np.array([[1.0, 0.0]]), np.array([[0.9, 0.1], [1.0, 0.0]]), np.array([0]))[0] == 2


def test_random_baseline_with_several_relevant_items_is_exact():
    G, R = 20, 3
    base = random_baseline(G, np.array([R]), ks=(1, 5))
    assert base["recall@1"] == pytest.approx(R / G)
    assert base["recall@5"] == pytest.approx(1 - (17 * 16 * 15 * 14 * 13) / (20 * 19 * 18 * 17 * 16))
    sim = np.random.default_rng(0).permuted(np.tile(np.arange(G), (20000, 1)), axis=1)  # random rankings
    best = np.argsort(sim, axis=1)[:, :R].min(axis=1) + 1  # best rank of items 0..R-1
    assert np.mean(1 / best) == pytest.approx(base["mrr"], rel=0.02)


def test_saved_model_round_trips_and_truncation_names_the_file(saved_model, tmp_path):
    loaded = load_model(saved_model)
    assert loaded.model_version.startswith("l2v-tiny-") and loaded.spec == SpectrogramSpec()
    assert loaded.artist_vocab == [f"artist{k}" for k in range(1, 6)]
    fresh = build_model(loaded.config, len(loaded.artist_vocab), len(loaded.genre_vocab))
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    broken = tmp_path / "broken"
    save_model(loaded.model, loaded.config, broken, loaded.artist_vocab, loaded.genre_vocab)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match=r"model\.safetensors"):
        load_model(broken)


def test_describe_track_reads_like_a_description():
    row = {"title": "Befiehl du deine Wege", "artist": "J.S. Bach", "genre": "chorale", "language": "German",
           "key": "G", "mode": "minor", "meter": "4/4", "parts": 4, "program_name": "organ"}  # fmt: skip
    assert describe_track(row) == "a German chorale by J.S. Bach in G minor, 4/4, four parts, played on organ"
    assert describe_track({"genre": "aria", "language": None}) == "an aria"
    assert describe_track({"title": "X"}, include_title=True) == 'a song, titled "X"'


def test_text_encoder_on_real_minilm():
    enc = TextEncoder(default_text_model_path(), progress=False)
    v = enc.encode(["a sad song about lost love", "a melancholy ballad of a broken heart",
                    "the quarterly tax report is due on friday"])  # fmt: skip
    assert v.shape == (3, 384) and v.dtype == np.float32
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # observed 0.62 vs -0.10
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TextEncoder("/tmp/no-such-model")


def test_text_tower_in_bfloat16_and_compiled_agrees_with_float32():
    """Serving runs MiniLM in bfloat16 (where native) and torch.compiled; the vectors must stay float32's."""
    texts = ["a sad song about lost love", "kyrie eleison",
             "the lord is my shepherd, I shall not want; he maketh me to lie down in green pastures"]  # fmt: skip
    ref = TextEncoder(default_text_model_path(), progress=False).encode(texts)
    fast = TextEncoder(default_text_model_path(), progress=False, dtype="bfloat16", compile=True)
    assert fast.dtype == torch.bfloat16 and fast.compiled
    fast.warm_up()  # compiles batch 1 and batch > 1
    for got in (fast.encode(texts), np.concatenate([fast.encode([t]) for t in texts])):
        assert got.dtype == np.float32 and got.shape == ref.shape
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.999, cos  # observed >= 0.99996
    from lyric2vec_models.text import resolve_text_dtype

    assert resolve_text_dtype("float32", torch.device("cpu")) == torch.float32
    assert resolve_text_dtype("auto", torch.device("cpu")) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="float16"):
        resolve_text_dtype("float16", torch.device("cpu"))


def test_text_tower_falls_back_to_eager_when_compiling_fails(monkeypatch):
    """No C++ compiler (a slim image) must not stop the service: warm_up goes on with the eager model."""

    def broken_compile(model, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("InductorError: no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    enc = TextEncoder(default_text_model_path(), progress=False, compile=True)
    enc.warm_up()
    assert not enc.compiled
    ref = TextEncoder(default_text_model_path(), progress=False).encode(["kyrie eleison"])
    np.testing.assert_allclose(enc.encode(["kyrie eleison"]), ref, rtol=1e-5, atol=1e-6)
