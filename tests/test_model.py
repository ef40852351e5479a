"""The full model: output contract, DropToken, embedding API, save/load, input errors."""

import json

import pytest
import torch

import vatt
from vatt.errors import CheckpointError, ConfigError, InputError
from vatt.model.tokenizers import drop_tokens, keep_indices, num_kept, take_tokens
from vatt.text import WordTokenizer


def tiny_batch(cfg, b=2, captions=5):
    v, a, t = cfg.video, cfg.audio, cfg.text
    video = torch.rand(b, v.num_frames, v.crop_size, v.crop_size, 3) * 2 - 1
    audio = torch.rand(b, a.num_samples) * 2 - 1
    text = torch.randint(2, t.vocab_size, (b, captions, t.max_words))
    text[..., 9:] = 0  # padded tail
    return video, audio, text


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return vatt.create_model("tiny")


def test_forward_contract_shapes(tiny):
    video, audio, text = tiny_batch(tiny.config)
    tiny.eval()
    out = tiny(video=video, audio=audio, text=text)
    d = 128
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "video_agg": (2, d), "video_va": (2, 512), "video_vt": (2, 256),
        "audio_agg": (2, d), "audio_va": (2, 512),
        "text_agg": (2, 5, d), "text_vt": (2, 5, 256),
    }
    single = tiny(text=text[:, 0])
    assert set(single) == {"text_agg", "text_vt"} and single["text_vt"].shape == (2, 256)
    # [B, L, W] is the same computation as L separate [B, W] calls (eval mode)
    torch.testing.assert_close(single["text_vt"], out["text_vt"][:, 0], rtol=1e-5, atol=1e-5)


def test_droptoken_only_in_training(tiny):
    video, audio, _ = tiny_batch(tiny.config)
    seen = []
    hook = tiny.video_backbone.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    hook2 = tiny.audio_backbone.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    try:
        tiny.train()
        tiny(video=video, audio=audio)
        tiny.eval()
        tiny(video=video, audio=audio)
    finally:
        hook.remove()
        hook2.remove()
    # tiny: 64 video tokens, 100 audio tokens; drop rate 0.5; +1 AGG token
    assert seen == [32 + 1, 50 + 1, 64 + 1, 100 + 1]


def test_drop_tokens_batch_shared_and_per_sample():
    b, n, d = 4, 1568, 3
    x = torch.arange(n, dtype=torch.float).view(1, n, 1).expand(b, n, d).contiguous()
    shared = drop_tokens(x, 0.5)
    assert shared.shape == (b, 784, d)
    assert torch.equal(shared[0], shared[1]), "official DropToken shares one permutation across the batch"
    assert len(set(shared[0, :, 0].tolist())) == 784  # no token kept twice
    per = drop_tokens(x, 0.5, per_sample=True)
    assert per.shape == (b, 784, d)
    kept = [frozenset(per[i, :, 0].tolist()) for i in range(b)]
    assert all(len(k) == 784 for k in kept)
    assert len(set(kept)) == b, "per-sample DropToken draws a different subset per sample"
    assert num_kept(1200, 0.5) == 600 and num_kept(1568, 0.25) == 1176 and num_kept(1200, 0.75) == 300
    assert drop_tokens(x, 0.0) is x


@pytest.mark.parametrize("per_sample", [False, True])
def test_droptoken_before_projection_equals_the_official_order(tiny, per_sample):
    """We select kept voxels before projecting them; the official code projects every voxel, adds
    positions, then drops. Same indices -> same tokens."""
    video, audio, _ = tiny_batch(tiny.config, b=3)
    for tok, x, n in ((tiny.video_backbone.tokenizer, video, 64), (tiny.audio_backbone.tokenizer, audio, 100)):
        tok.eval()  # no dropout noise; the rate is passed explicitly
        torch.manual_seed(7)
        ours = tok(x, 0.5, per_sample)
        torch.manual_seed(7)
        idx = keep_indices(3, n, 0.5, per_sample)
        official = take_tokens(tok(x), idx)
        assert ours.shape == (3, n // 2, 128)
        torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-5)


def test_per_sample_mode_from_config():
    m = vatt.create_model("tiny", droptoken="sample").train()
    assert m.video_backbone.per_sample_drop and m.audio_backbone.per_sample_drop


def test_save_load_round_trip_bit_identical(tmp_path):
    tok = WordTokenizer.build(["a man cuts an onion", "the dog runs to the ball"])
    model = vatt.create_model("tiny", vocab=tok)
    assert model.config.text.vocab_size == len(tok)
    model.train()  # one training forward moves the BN running statistics away from their init
    video, audio, _ = tiny_batch(model.config)
    text = torch.randint(0, len(tok), (2, 5, 16))
    model(video=video, audio=audio, text=text)
    model.eval()
    before = model(video=video, audio=audio, text=text)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    loaded = vatt.load_model(tmp_path / "m")
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.tokenizer == tok
    after = loaded(video=video, audio=audio, text=text)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    # a run directory with the model in model/ loads too
    model.save_pretrained(tmp_path / "run" / "model")
    assert torch.equal(vatt.load_model(tmp_path / "run")(video=video)["video_vt"], before["video_vt"])
    # strings are tokenised with the saved vocabulary
    emb = loaded.encode_text(["a man cuts an onion", "the dog"])
    assert emb["text_vt"].shape == (2, 256)
    ids = tok.encode(["a man cuts an onion", "the dog"], 16)
    with torch.no_grad():
        torch.testing.assert_close(emb["text_vt"], loaded(text=ids)["text_vt"])


def test_saved_config_is_the_architecture_and_older_files_with_runtime_switches_still_load(tmp_path):
    """config.json holds what the model is, not how one machine ran it: the runtime switches
    (validate_inputs and the CPU fast paths) stay out of it, and a file from before that change,
    which has them, loads with the loading machine's defaults and the same outputs."""
    from safetensors.torch import load_file

    from vatt.config import RUNTIME_FIELDS, ModelConfig
    from vatt.model.fast_paths import FastDropout, FastLinear

    torch.manual_seed(0)
    model = vatt.create_model("tiny", validate_inputs=False, fused_qkv=False, cpu_linear="torch", cpu_dropout="torch")
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert RUNTIME_FIELDS and not set(RUNTIME_FIELDS) & set(meta["config"])
    assert ModelConfig.from_dict(meta["config"]) == ModelConfig.from_dict(model.config.architecture_dict())
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert sorted(weights) == sorted(vatt.create_model("tiny").state_dict())  # the saved keys of either path
    meta["config"].update(validate_inputs=False, fused_qkv=False, cpu_linear="torch", cpu_dropout="torch")
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))  # as written before
    loaded = vatt.load_model(tmp_path / "m")
    defaults = ModelConfig()
    assert all(getattr(loaded.config, k) == getattr(defaults, k) for k in RUNTIME_FIELDS)
    from vatt.model.fast_paths import resolve_cpu_linear

    assert any(type(m) is FastLinear for m in loaded.modules()) == (resolve_cpu_linear("auto") == "onednn")
    assert any(type(m) is FastDropout for m in loaded.modules())
    video, audio, text = tiny_batch(model.config)
    with torch.no_grad():
        want, got = model.eval()(video=video, audio=audio, text=text), loaded(video=video, audio=audio, text=text)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)


def test_load_rejects_foreign_directories(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        vatt.load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a vatt model directory"):
        vatt.load_model(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (other / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a vatt model config"):
        vatt.load_model(other)
    good = vatt.create_model("tiny").save_pretrained(tmp_path / "good")
    (good / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        vatt.load_model(good)
    # a config that disagrees with the weights
    vatt.create_model("tiny").save_pretrained(tmp_path / "mix")
    meta = json.loads((tmp_path / "mix" / "config.json").read_text())
    meta["config"]["video_encoder"]["num_layers"] = 3
    (tmp_path / "mix" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        vatt.load_model(tmp_path / "mix")
    # a vocabulary larger than the saved word table
    vatt.create_model("tiny", **{"text.vocab_size": 3}).save_pretrained(tmp_path / "voc")
    WordTokenizer.build(["one two three four"]).save(tmp_path / "voc" / "vocab.json")
    with pytest.raises(CheckpointError, match="6 words"):
        vatt.load_model(tmp_path / "voc")


def test_bad_inputs_raise_input_error(tiny):
    video, audio, text = tiny_batch(tiny.config)
    tiny.eval()
    with pytest.raises(InputError, match=r"\[B, T, H, W, 3\] in \[-1, 1\].*channels-first"):
        tiny(video=video.permute(0, 4, 1, 2, 3))
    with pytest.raises(InputError, match=r"0\.\.255"):
        tiny(video=(video + 1) * 127.5)
    with pytest.raises(InputError, match=r"\[B, T, H, W, 3\]"):
        tiny(video=video.to(torch.uint8))
    with pytest.raises(InputError, match="multiple"):
        tiny(video=video[:, :, :60])
    with pytest.raises(InputError, match=r"audio \[B, S\]"):
        tiny(audio=audio[:, :100])
    with pytest.raises(InputError, match=r"audio \[B, S\]"):
        tiny(audio=audio * 30000)
    with pytest.raises(InputError, match="ids in"):
        tiny(text=text + 4096)
    with pytest.raises(InputError, match="int64"):
        tiny(text=text.float())
    with pytest.raises(InputError, match="at least one"):
        tiny()
    with pytest.raises(InputError, match="no vocabulary"):
        tiny.encode_text("hello")
    # validation can be turned off for speed: the same bad range then runs
    tiny(video=(video + 1) * 127.5, validate=False)


def test_vocab_larger_than_table_is_an_error():
    tok = WordTokenizer(["<pad>", "<unk>"] + [f"w{i}" for i in range(100)])
    with pytest.raises(ConfigError, match="102 words"):
        vatt.create_model("tiny", vocab=tok, **{"text.vocab_size": 50})


def test_position_tables_resample_to_other_grids(tiny):
    tiny.eval()
    big = torch.rand(1, 8, 96, 96, 3) * 2 - 1  # 6x6 spatial grid instead of 4x4
    still = torch.rand(1, 2, 64, 64, 3) * 2 - 1  # one temporal token (an image repeated)
    assert tiny(video=big)["video_vt"].shape == (1, 256)
    assert tiny(video=still)["video_vt"].shape == (1, 256)
    pos = tiny.video_backbone.tokenizer.positions
    same = pos.embedding((4, 4, 4))
    # the table's own grid is used unchanged; a resampled one keeps its endpoints' trend
    ref = (pos.temporal[:, None, None] + pos.vertical[None, :, None] + pos.horizontal[None, None, :]).reshape(64, -1)
    torch.testing.assert_close(same, pos.norm(ref))
    assert pos.embedding((1, 6, 6)).shape == (36, 128)


def test_pretrained_word_vectors_are_frozen_and_saved(tmp_path):
    model = vatt.create_model("tiny", **{"text.vocab_size": 10})
    vectors = torch.randn(10, 64)
    model.set_word_vectors(vectors)
    assert torch.equal(model.word_table.weight, vectors) and not model.word_table.weight.requires_grad
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - 10 * 64
    loaded = vatt.load_model(model.save_pretrained(tmp_path / "m"))
    assert not loaded.word_table.weight.requires_grad and torch.equal(loaded.word_table.weight, vectors)
    with pytest.raises(InputError, match=r"\[10, 64\]"):
        model.set_word_vectors(torch.randn(11, 64))


# -- the model owns its training hooks ----------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "ma-tiny"])
def test_grad_checkpointing_keeps_outputs_and_gradients(preset):
    over = {"dropout": 0.0, "attention_dropout": 0.0, "video.drop_rate": 0.0, "audio.drop_rate": 0.0}
    if preset == "ma-tiny":  # a small modality-agnostic model
        over.update({"shared_encoder": {"num_layers": 2, "width": 64, "mlp_dim": 128, "num_heads": 2},
                     "post_proj_dim": 64})
    torch.manual_seed(0)
    model = vatt.create_model("tiny", **over).train()
    video, audio, text = tiny_batch(model.config, captions=1)

    def grads():
        model.zero_grad()
        out = model(video=video, audio=audio, text=text[:, 0])
        sum(v.pow(2).mean() for v in out.values()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    blocks = list(model.transformer_blocks())
    expected = 2 if preset == "ma-tiny" else 6
    assert model.set_grad_checkpointing() == len(blocks) == expected
    assert all(b.grad_checkpointing for b in blocks)
    calls = []
    handle = torch.utils.checkpoint.checkpoint
    torch.utils.checkpoint.checkpoint = lambda *a, **k: calls.append(1) or handle(*a, **k)
    try:
        checkpointed = grads()
    finally:
        torch.utils.checkpoint.checkpoint = handle
    assert len(calls) >= expected  # every block ran under checkpoint
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=1e-5, atol=1e-6)
    model.set_grad_checkpointing(False)
    assert not any(b.grad_checkpointing for b in model.transformer_blocks())


def test_features_and_droptoken_accessors(tiny, tmp_path):
    model = vatt.create_model("tiny")
    video, audio, _ = tiny_batch(model.config)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.features(video, "video"), model(video=video)["video_agg"])
        tokens = model.token_features(audio, "audio")
    assert tokens.shape == (2, 1 + model.config.audio.num_tokens, model.feature_dim("audio"))
    assert model.droptoken_rates == {"video": 0.5, "audio": 0.5}
    model.set_droptoken_rates(video=0.0)
    assert model.droptoken_rates == {"video": 0.0, "audio": 0.5} and model.config.video.drop_rate == 0.0
    model.save_pretrained(tmp_path / "m")
    assert vatt.load_model(tmp_path / "m").droptoken_rates["video"] == 0.0
    with pytest.raises(ConfigError, match="audio DropToken rate"):
        model.set_droptoken_rates(audio=1.0)


def test_tokenizers_work_without_positions():
    from vatt.model.tokenizers import AudioTokenizer, VideoTokenizer, video_patches

    video, audio = torch.rand(2, 8, 64, 64, 3), torch.rand(2, 1280)
    vt = VideoTokenizer((4, 16, 16), (2, 4, 4), 8, with_positions=False)
    at = AudioTokenizer(128, 10, 8, with_positions=False)
    assert vt.positions is None and at.positions is None
    torch.testing.assert_close(vt(video), vt.proj(video_patches(video, (4, 16, 16))[0]))
    torch.testing.assert_close(at(audio), at.proj(audio.reshape(2, 10, 128)))
    assert vt(video, drop_rate=0.5).shape == (2, 16, 8)  # DropToken without positions: the actual-token rule


@pytest.mark.parametrize("shared", [False, True], ids=["towers", "modality-agnostic"])
def test_one_tower_accessor_serves_both_model_kinds(shared, tmp_path):
    """Every per-modality method goes through model.tower(modality); the shared backbone's view
    behaves as a per-modality backbone (features, tokens, width, DropToken rate), and the saved
    keys stay those of the files (no 'towers.' prefix)."""
    import copy

    from vatt.config import get_config

    cfg = get_config("tiny")
    if shared:
        cfg.shared_encoder = copy.deepcopy(cfg.video_encoder)
    torch.manual_seed(0)
    model = vatt.create_model(cfg).eval()
    video, audio, text = tiny_batch(model.config)
    with torch.no_grad():
        out = model(video=video, audio=audio, text=text)
        for modality, x in (("video", video), ("audio", audio)):
            tower = model.tower(modality)
            assert torch.equal(tower(x), out[f"{modality}_agg"])
            assert tower.forward_features(x)[:, 0].shape == out[f"{modality}_agg"].shape
            assert model.feature_dim(modality) == tower.width == out[f"{modality}_agg"].shape[-1]
    model.set_droptoken_rates(audio=0.25)
    assert model.tower("audio").drop_rate == 0.25 and model.droptoken_rates["audio"] == 0.25
    assert not any(k.startswith("towers.") for k in model.state_dict())
    assert any(k.startswith("backbone." if shared else "video_backbone.") for k in model.state_dict())
    with pytest.raises(InputError, match="expected a modality in video, audio, text; got 'smell'"):
        model.tower("smell")
    with pytest.raises(InputError, match=r"expected audio \[B, S\]"):
        model.check_input(video, "audio")


def test_float_inputs_are_cast_to_the_model_dtype():
    """A float64 model (precision=fp64 runs) takes the loader's float32 clips: the result equals
    feeding float64 inputs."""
    model = vatt.create_model("tiny").double().eval()
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 8, 64, 64, 3, generator=g) * 2 - 1
    audio = torch.rand(2, 12800, generator=g) * 2 - 1
    with torch.no_grad():
        out = model(video=video, audio=audio)
        ref = model(video=video.double(), audio=audio.double())
    assert out["video_va"].dtype == torch.float64
    for k in ref:
        assert torch.equal(out[k], ref[k])
