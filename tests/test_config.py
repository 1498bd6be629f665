"""The run config: dialects, overrides, validation messages (issue 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cifarctl.config import (
    LossSection,
    RunConfig,
    apply_overrides,
    config_from_dict,
    field_help,
    load_config,
    loss_section,
    parse_set_option,
    resolve_key,
)
from cifarctl.errors import UsageError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_published_protocol_shape():
    cfg = load_config()
    assert (cfg.model.name, cfg.optim.epochs, cfg.optim.batch_size) == ("resnet32", 200, 128)
    assert cfg.optim.steps == [160, 180] and cfg.optim.decay_factors == [0.1, 0.1]
    assert cfg.data.imbalance == 1.0 and cfg.loss.name == "ce"


def test_every_field_documented():
    for key, _default, text in field_help():
        assert text and len(text) > 10, key


def test_assignment_style_equals_native(tmp_path):
    assignment = write(tmp_path, """
Train:
  batch_size: 128
  learning_rate: 0.01
  reg: 0.005
  epochs: 50
  steps: [40, 45]
  warmup: 0
  momentum: 0.9
network:
  model: ResNet-32
data:
  imbalance: imbalance
  save_best: True
loss:
  loss_type: Focal
  gamma: 2
  beta: 0.999
""", "a.yaml")
    native = write(tmp_path, """
model: {name: resnet32}
data: {imbalance: 100}
optim: {batch_size: 128, lr: 0.01, weight_decay: 0.005, epochs: 50, steps: [40, 45],
        warmup: 0, momentum: 0.9}
loss: {name: focal, gamma: 2.0, beta: 0.999}
run: {save_best: true}
""", "n.yaml")
    assert load_config(assignment) == load_config(native)


@pytest.mark.parametrize("text, ratio", [
    ("data:\n  imbalance: imbalance\n", 100.0), ("data: {imbalance: Regular}\n", 1.0),
    ("data: {imbalance: 20}\n", 20.0),  # a number: the native dialect, as before
])
def test_a_file_with_only_the_assignments_imbalance_word(tmp_path, text, ratio):
    """The assignment's `imbalance: imbalance` alone marks its dialect (was: read as native,
    then 'data.imbalance must be a number')."""
    assert load_config(write(tmp_path, text, "only.yaml")).data.imbalance == ratio


def test_shipped_writeup_configs_have_the_writeups_values():
    ce = load_config(EXPERIMENTS / "resnet32-ce.yaml")
    assert (ce.optim.batch_size, ce.optim.lr, ce.optim.weight_decay, ce.optim.epochs) == \
        (128, 0.1, 0.0005, 50)
    assert ce.optim.steps == [100, 101] and ce.data.imbalance == 100 and ce.loss.name == "ce"
    focal = load_config(EXPERIMENTS / "resnet32-cb-focal.yaml")
    assert (focal.optim.lr, focal.optim.weight_decay, focal.optim.steps) == (0.01, 0.005, [40, 45])
    assert (focal.loss.name, focal.loss.beta, focal.loss.gamma) == ("focal", 0.999, 2.0)
    mine = load_config(EXPERIMENTS / "mymodel.yaml")
    assert (mine.model.name, mine.optim.batch_size, mine.optim.momentum) == ("mymodel", 96, 0.95)
    assert mine.optim.steps == [12, 14] and mine.data.imbalance == 1.0


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("resnet32-lt100-*.yaml")))
def test_literature_configs_follow_the_protocol(name):
    cfg = load_config(EXPERIMENTS / name)
    assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.optim.lr, cfg.optim.warmup) == \
        (200, 128, 0.1, 5)
    assert cfg.optim.weight_decay == pytest.approx(2e-4)
    assert cfg.optim.steps == [160, 180] and cfg.optim.decay_factors == [0.01, 0.01]
    assert cfg.data.imbalance == 100 and cfg.data.imbalance_type == "exp"
    text = (EXPERIMENTS / name).read_text()
    assert text.startswith("#") and "SPEC 2" in text or "resnet32-lt100-ce.yaml" in text


def test_overrides_and_short_keys():
    cfg = apply_overrides(RunConfig(), {"beta": "0.99", "seed": 3, "optim.lr": "1e-3",
                                        "optim.steps": 5})
    assert cfg.loss.beta == 0.99 and cfg.run.seed == 3 and cfg.optim.lr == 1e-3
    assert cfg.optim.steps == [5]
    assert resolve_key("epochs") == "optim.epochs"


def test_yaml_1_1_exponent_strings_are_numbers(tmp_path):
    cfg = load_config(write(tmp_path, "optim:\n  weight_decay: 2e-4\n"))
    assert cfg.optim.weight_decay == 2e-4


def test_set_option_parses_yaml_values():
    assert parse_set_option(["optim.steps=[40, 45]", "loss.name=focal", "run.run_name="]) == {
        "optim.steps": [40, 45], "loss.name": "focal", "run.run_name": None}
    with pytest.raises(UsageError, match="section.key=value"):
        parse_set_option(["nonsense"])


@pytest.mark.parametrize("loss, head, resolved", [
    ("ce", "auto", "linear"), ("focal", "auto", "linear"), ("sigmoid-focal", "auto", "linear"),
    ("ldam", "auto", "normed"),  # Cao et al.'s code: NormedLinear when the loss is LDAM
    ("ldam", "linear", "linear"), ("ce", "normed", "normed"),
])
def test_classifier_auto_follows_the_loss(loss, head, resolved):
    cfg = apply_overrides(RunConfig(), {"loss.name": loss, "model.classifier": head})
    assert cfg.classifier == resolved and cfg.to_flat()["model.classifier"] == head


def test_logit_scale_is_ldams_s_whatever_the_head():
    """Evaluation's softmax temperature is the training loss's: LDAM multiplies by s."""
    assert apply_overrides(RunConfig(), {"loss.name": "ldam", "loss.s": 10}).logit_scale == 10
    assert apply_overrides(RunConfig(), {"loss.name": "ldam", "classifier": "linear"}
                           ).logit_scale == 30
    assert apply_overrides(RunConfig(), {"loss.name": "focal", "loss.s": 10}).logit_scale == 1


def test_roundtrip_through_dict():
    cfg = apply_overrides(RunConfig(), {"loss.name": "ldam", "loss.drw_epoch": 160,
                                        "optim.decay": [0.01, 0.01]})
    assert config_from_dict(cfg.to_dict()) == cfg
    assert cfg.to_flat()["loss.drw_epoch"] == 160


def test_a_config_saved_before_model_classifier_existed_reads_as_linear():
    """Checkpoints of older versions trained a linear head, LDAM ones too."""
    saved = apply_overrides(RunConfig(), {"loss.name": "ldam"}).to_dict()
    del saved["model"]["classifier"]
    old = config_from_dict(saved)
    assert old.model.classifier == "linear" and old.classifier == "linear"
    assert old.loss.name == "ldam"


@pytest.mark.parametrize("overrides, message", [
    ({"optim.lrr": 0.1}, "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ({"betta": 0.1}, "did you mean 'beta'"),
    ({"name": "x"}, "ambiguous"),
    ({"optim.lr": 0}, "optim.lr must be > 0"),
    ({"optim.weight_decay": float("inf")}, "optim.weight_decay must be a finite number"),
    ({"loss.s": "inf"}, "loss.s must be a finite number, got inf"),
    ({"loss.max_m": float("nan")}, "loss.max_m must be"),
    ({"optim.lr": "fast"}, "optim.lr must be a number"),
    ({"optim.epochs": 0}, "optim.epochs must be >= 1"),
    ({"optim.epochs": 1.5}, "optim.epochs must be an integer"),
    ({"loss.beta": 1.0}, "loss.beta must be in [0, 1)"),
    ({"loss.beta": -0.1}, "loss.beta must be in [0, 1)"),
    ({"optim.steps": [45, 40]}, "strictly increasing"),
    ({"optim.decay": [0.1]}, "one factor per step"),
    ({"data.imbalance": 0.5}, "data.imbalance must be >= 1"),
    ({"data.imbalance_type": "linear"}, "'exp' or 'step'"),
    ({"run.save_best": "maybe"}, "run.save_best must be true or false"),
    ({"run.seed": -1}, "run.seed must be >= 0, got -1"),
    ({"model.name": "resnet33"}, "resnet3"),
    ({"classifier": "cosine"}, "model.classifier must be auto, linear, normed"),
    ({"loss.name": "sigmoid", "model.classifier": "normed"}, "the normed classifier has none"),
])
def test_bad_values_are_one_line_usage_errors(overrides, message):
    with pytest.raises(UsageError) as err:
        apply_overrides(RunConfig(), overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_loss_section_coerces_and_checks_like_the_config():
    assert loss_section() == LossSection() == RunConfig().loss
    section = loss_section(name="Sigmoid_Focal", beta="1e-1", gamma=2, drw_epoch=160.0)
    assert section == LossSection(name="sigmoid-focal", beta=0.1, gamma=2.0, drw_epoch=160)
    assert isinstance(section.gamma, float) and isinstance(section.drw_epoch, int)
    with pytest.raises(UsageError, match=r"^loss.alpha must be in \[0, 1\], got 1.5$"):
        loss_section(name="hybrid", alpha=1.5)
    with pytest.raises(UsageError, match=r"unknown config key 'loss.gama' \(did you mean"):
        loss_section(gama=2.0)


def test_bad_files(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UsageError, match="is a folder; give the config file"):
        load_config(tmp_path)
    network = Path(__file__).parents[1] / "experiments" / "theory-writeup-network.yaml"
    with pytest.raises(UsageError, match="is a network file for `cifarctl theory relu-linear"):
        load_config(network)
    (tmp_path / "archive.yaml").write_bytes(bytes(range(256)) * 4)  # a binary file by mistake
    with pytest.raises(UsageError, match="archive.yaml is not a text file, so not a YAML"):
        load_config(tmp_path / "archive.yaml")
    with pytest.raises(UsageError, match="invalid YAML"):
        load_config(write(tmp_path, "optim: [unclosed\n"))
    with pytest.raises(UsageError, match="must be a YAML mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    for empty in ("", "# nothing set yet\n"):  # it trained the defaults without a word
        with pytest.raises(UsageError, match=r"is empty \(no settings\); give the config you "
                                             r"meant, or drop --config"):
            load_config(write(tmp_path, empty))
    with pytest.raises(UsageError, match="unknown key 'Train.learnig_rate'.*learning_rate"):
        load_config(write(tmp_path, "Train:\n  learnig_rate: 0.1\n"))
    with pytest.raises(UsageError, match="section 'optim' must be a mapping of keys"):
        load_config(write(tmp_path, "optim: [1, 2]\n"))
    assert load_config(write(tmp_path, "optim:\nmodel: {name: vanillacnn}\n")).model.name == \
        "vanillacnn"  # an empty section is no section


def test_a_loss_chosen_on_top_of_a_file_takes_its_presets_as_a_sweep_entry_does(tmp_path):
    """A logged config.yaml names every key, loss.gamma included; `--config it --loss vs`
    still trains VS at its published gamma 0.3, as a sweep entry `loss.name: vs` on that
    base does, unless the command line gives gamma too."""
    from cifarctl.config import RunConfig, apply_overrides, load_config

    logged = tmp_path / "config.yaml"
    logged.write_text(yaml.safe_dump(RunConfig().to_dict()))
    assert RunConfig().loss.gamma == 1.0
    cli = load_config(logged, {"loss.name": "vs"})
    sweep = apply_overrides(load_config(logged), {"loss.name": "vs"})
    assert (cli.loss.gamma, cli.loss.tau) == (0.3, 1.0) and cli == sweep
    assert load_config(logged, {"loss.name": "vs", "loss.gamma": 0.2}).loss.gamma == 0.2
    own = tmp_path / "vs.yaml"
    own.write_text("loss: {name: vs, gamma: 0.5}\n")
    assert load_config(own).loss.gamma == 0.5
    assert load_config(own, {"loss.name": "vs"}).loss.gamma == 0.5  # the same loss: no preset


def test_params_as_mlflow_shows_them_load_back_with_set():
    """Every param of a run, copied from MLflow (`str(value)`: a null reads `None`) into
    `--set key=value`, gives back the config that ran."""
    from cifarctl.config import RunConfig, load_config, parse_set_option

    cfg = RunConfig()
    assert cfg.data.val_per_class is None
    shown = [f"{key}={value}" for key, value in cfg.to_flat().items()]
    assert load_config(None, parse_set_option(shown)) == cfg
    assert load_config(None, parse_set_option(["data.val_per_class=None"])).data.val_per_class \
        is None
