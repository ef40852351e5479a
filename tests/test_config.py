"""Model configs: presets, JSON/YAML round trips, dotted overrides, errors naming the nearest key."""

import pytest

import vatt
from vatt.config import SIZES, ModelConfig, apply_overrides, get_config, list_presets, parse_override
from vatt.errors import ConfigError


def test_presets_and_fixed_geometry():
    assert list_presets() == ["tiny", "bbs", "mbs", "lbs", "ma-medium"]
    assert ModelConfig().name == "mbs" and get_config() == ModelConfig()
    mbs = get_config("mbs")
    assert (mbs.video.num_frames, mbs.video.fps, mbs.video.crop_size, mbs.video.patch_size) == (32, 10.0, 224, (4, 16, 16))
    assert mbs.video.grid == (8, 14, 14) and mbs.video.num_tokens == 1568
    assert (mbs.audio.sample_rate, mbs.audio.num_samples, mbs.audio.patch_size, mbs.audio.num_tokens) == (48000, 153600, 128, 1200)
    assert (mbs.text.max_words, mbs.text.vocab_size, mbs.text.word_dim) == (16, 2**16, 300)
    assert mbs.video_encoder == SIZES["medium"] and mbs.audio_encoder == SIZES["base"] and mbs.text_encoder == SIZES["small"]
    assert get_config("bbs").video_encoder == SIZES["base"] and get_config("lbs").video_encoder == SIZES["large"]
    assert get_config("ma-medium").shared_encoder == SIZES["medium"] and get_config("ma-medium").modality_agnostic
    assert (mbs.heads.bn_placement, mbs.droptoken, mbs.dropout) == ("official", "batch", 0.1)
    tiny = get_config("tiny")
    assert tiny.video.grid == (4, 4, 4) and tiny.audio.num_tokens == 100
    assert tiny.audio.num_samples / tiny.audio.sample_rate == tiny.video.num_frames / tiny.video.fps  # same window
    assert (tiny.video.drop_rate, tiny.audio.drop_rate) == (0.5, 0.5)
    for name in list_presets():  # head dim 64 everywhere
        cfg = get_config(name)
        for enc in (cfg.video_encoder, cfg.audio_encoder, cfg.text_encoder, cfg.shared_encoder):
            assert enc is None or enc.width // enc.num_heads == 64


@pytest.mark.parametrize("name", ["tiny", "mbs", "ma-medium"])
def test_json_and_yaml_round_trip(tmp_path, name):
    cfg = get_config(name, **{"video.drop_rate": 0.25, "heads.bn_placement": "paper"})
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"cfg{suffix}"
        cfg.save(path)
        assert ModelConfig.load(path) == cfg
    assert "drop_rate: 0.25" in (tmp_path / "cfg.yaml").read_text()
    assert (tmp_path / "cfg.json").read_text().lstrip().startswith("{")


def test_overrides_dotted_nested_and_size_names():
    a = get_config("tiny", **{"video.drop_rate": 0.25})
    b = get_config("tiny", video={"drop_rate": 0.25})
    c = get_config("tiny", video__drop_rate=0.25)
    assert a == b == c and a.video.drop_rate == 0.25
    assert a.video.crop_size == 64, "a nested dict changes only the keys it names"
    d = get_config("mbs", video_encoder="large", **{"audio_encoder.num_layers": 2})
    assert d.video_encoder == SIZES["large"] and d.audio_encoder.num_layers == 2 and d.audio_encoder.width == 768
    assert get_config("tiny").override({"video.patch_size": [4, 16, 16]}).video.patch_size == (4, 16, 16)
    assert parse_override("video.crop_size=320") == ("video.crop_size", 320)
    assert parse_override("heads.bn_placement=paper") == ("heads.bn_placement", "paper")
    m = vatt.create_model("tiny", **{"video.drop_rate": 0.25, "text.vocab_size": 100})
    assert m.config.video.drop_rate == 0.25 and m.video_backbone.drop_rate == 0.25
    assert m.text_backbone.words.weight.shape == (100, 64)
    assert m.video_backbone.encoder.blocks[0].attn.dropout == 0.1  # official attention dropout
    fast = vatt.create_model("tiny", attention_dropout=0.0)
    assert all(b.attn.dropout == 0.0 for b in fast.text_backbone.blocks)


def test_unknown_names_point_to_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown preset 'mbz' \(did you mean 'mbs'\?\)"):
        get_config("mbz")
    with pytest.raises(ConfigError, match=r"unknown preset 'ma_medium' \(did you mean 'ma-medium'\?\)"):
        vatt.create_model("ma_medium")
    with pytest.raises(ConfigError, match=r"'video.drop_rat' \(did you mean 'video.drop_rate'\?\)"):
        get_config("tiny", **{"video.drop_rat": 0.1})
    with pytest.raises(ConfigError, match=r"'vidoe' \(did you mean 'video'\?\)"):
        get_config("tiny", vidoe={"drop_rate": 0.1})
    with pytest.raises(ConfigError, match=r"'heads.bn_placment' \(did you mean 'heads.bn_placement'\?\)"):
        ModelConfig.from_dict({"heads": {"bn_placment": "paper"}})
    with pytest.raises(ConfigError, match=r"unknown encoder size 'medum' .*'medium'"):
        get_config("tiny", video_encoder="medum")


def test_bad_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="integer"):
        get_config("tiny", **{"video.crop_size": "big"})
    with pytest.raises(ConfigError, match="multiples"):
        get_config("tiny", **{"video.crop_size": 70})
    with pytest.raises(ConfigError, match="drop_rate"):
        get_config("tiny", **{"audio.drop_rate": 1.0})
    with pytest.raises(ConfigError, match="droptoken"):
        get_config("tiny", droptoken="random")
    with pytest.raises(ConfigError, match="bn_placement"):
        get_config("tiny", **{"heads.bn_placement": "everywhere"})
    with pytest.raises(ConfigError, match="not found"):
        ModelConfig.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("video.crop_size")
    with pytest.raises(ConfigError, match="is a value, not a group"):
        apply_overrides(get_config("tiny"), {"dropout.rate": 0.1})


# -- one engine for every config (issue 12) --------------------------------------------------------
@pytest.mark.parametrize("loader, key, nearest", [
    ("train", "data.augment.crop_mod", "data.augment.crop_mode"),
    ("train", "data.augmnt.crop_mode", "data.augment"),
    ("train", "optim.lrr", "optim.lr"),
    ("train", "objective.temprature", "objective.temperature"),
    ("train", "model.video.drop_rat", "video.drop_rate"),
    ("finetune", "label_smothing", "label_smoothing"),
    ("model", "heads.va_dimm", "heads.va_dim"),
    # names from other libraries, or a leaf given without its group
    ("train", "save_every", "checkpoint_every"),
    ("finetune", "save_steps", "checkpoint_every"),
    ("train", "lr", "optim.lr"),
    ("train", "optim.learning_rate", "optim.lr"),
    ("finetune", "learning_rate", "lr"),
    ("train", "num_workers", "data.num_workers"),
    ("train", "warmup_step", "optim.warmup_steps"),
    ("train", "temprature", "objective.temperature"),
    ("model", "widht", "video_encoder.width"),
])
def test_a_misspelt_key_anywhere_names_the_nearest(loader, key, nearest):
    from vatt.train.finetune import load_finetune_config
    from vatt.train.config import load_train_config

    load = {"train": lambda o: load_train_config("tiny", o), "finetune": lambda o: load_finetune_config("audio", o),
            "model": lambda o: get_config("tiny", dict(parse_override(x) for x in o))}[loader]
    with pytest.raises(ConfigError, match=f"did you mean '{nearest}'"):
        load([f"{key}=1"])


def test_a_config_file_with_another_librarys_key_names_ours(tmp_path):
    from vatt.train.config import load_train_config

    (tmp_path / "run.yaml").write_text("steps: 10\nsave_every: 5\n")
    with pytest.raises(ConfigError, match="did you mean 'checkpoint_every'"):
        load_train_config(str(tmp_path / "run.yaml"))


@pytest.mark.parametrize("cmd", [["pretrain", "--config", "tiny", "--data", "x", "--out", "y"],
                                 ["finetune", "--model", "m", "--train", "a", "--val", "b", "--out", "y"]])
def test_epochs_is_answered_with_steps_in_one_line(cmd, tmp_path, capsys, monkeypatch):
    from vatt.cli.main import main

    monkeypatch.chdir(tmp_path)
    code = main([*cmd, "--set", "epochs=3"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown config key 'epochs'" in err and "set steps=N" in err
    assert len(err.strip().splitlines()) == 1


def test_typed_augmentation_group_from_set_and_file(tmp_path):
    from vatt.data.config import AugmentConfig, DataConfig
    from vatt.train.config import TrainConfig, load_train_config

    cfg = load_train_config("tiny", ["data.augment.crop_mode=inception", "data.augment.scale_jitter=[0.9, 1.1, 0.5]"])
    assert isinstance(cfg.data.augment, AugmentConfig) and cfg.data.augment.crop_mode == "inception"
    data = DataConfig.from_model_config(cfg.model_config(), cfg.data.augment)
    assert (data.crop_mode, data.scale_jitter, data.crop_size) == ("inception", (0.9, 1.1, 0.5), 64)
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg  # round trip through YAML keeps the types
    with pytest.raises(ConfigError, match="crop_mode must be one of official, inception"):
        load_train_config("tiny", ["data.augment.crop_mode=incepton"])
    with pytest.raises(ConfigError, match="data.augment should be a mapping|group of settings"):
        load_train_config("tiny", ["data.augment=5"])


@pytest.mark.parametrize("override", [
    "optim.lr=.nan", "optim.lr=-1", "optim.lr=.inf", "optim.lr=0", "optim.eps=-1", "optim.beta1=1", "optim.final_lr=-1",
    "optim.warmup_steps=-1", "keep_last=-1", "max_minutes=.nan", "max_minutes=-1", "data.num_workers=-1", "seed=-1",
    "model.video_encoder.num_heads=0", "model.video_encoder.width=0", "model.video.patch_size=[0, 16, 16]",
    "model.video_encoder.num_layers=-1", "model.video_encoder.width=1000000000", "model_overrides=[1, 2]",
    "data.eval_sources=5", "objective.temperature=0",
])
def test_every_training_value_is_validated_at_load(override):
    from vatt.train.config import load_train_config

    with pytest.raises(ConfigError) as err:
        load_train_config("tiny", [override])
    assert "\n" not in str(err.value)


def test_yaml_alias_bombs_are_refused(tmp_path):
    from vatt.train.config import TrainConfig

    bomb = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(9))}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\nmodel: tiny\n")
    with pytest.raises(ConfigError, match="aliases"):
        TrainConfig.load(bomb)


def test_finetune_config_presets_files_and_command_header(tmp_path):
    from vatt.train.finetune import FinetuneConfig, load_finetune_config

    cfg = load_finetune_config("audio", ["steps=7", "mixup_alpha=0"])
    assert (cfg.task, cfg.steps, cfg.mixup_alpha, cfg.lr) == ("audio", 7, 0.0, FinetuneConfig().lr)
    cfg.command = "vatt finetune --config audio --set steps=7"
    cfg.save(tmp_path / "ft.yaml")
    assert (tmp_path / "ft.yaml").read_text().startswith("# vatt finetune --config audio")
    assert load_finetune_config(str(tmp_path / "ft.yaml")) == cfg
    with pytest.raises(ConfigError, match="did you mean 'audio'"):
        load_finetune_config("audi")
