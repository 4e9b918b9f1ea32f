"""Strings stay strings (issue 24, kind 2): a string-typed key takes its text as written, in overrides
and in YAML files; text YAML cannot read is an error that names the override or the file and line."""
from __future__ import annotations

import pytest

from gen import config

BASE = ["data.root=/data"]


@pytest.mark.parametrize("override, key, expected", [
    ("data.pattern=*.jpg", "data.pattern", "*.jpg"),           # the README's spelling, after the shell
    ("data.pattern=**/*.png", "data.pattern", "**/*.png"),
    ("data.pattern={a,b}.png", "data.pattern", "{a,b}.png"),
    ("data.pattern=[ab]*.png", "data.pattern", "[ab]*.png"),
    ("log.name=@x", "log.name", "@x"),
    ("log.name=yes", "log.name", "yes"),                       # not the boolean True
    ("log.name=0123", "log.name", "0123"),                     # not the integer 83
    ("log.name=!important", "log.name", "!important"),
    ("log.name=a: b", "log.name", "a: b"),
    ("log.name=${x}", "log.name", "${x}"),                     # no interpolation
    ("log.name=\"*quoted*\"", "log.name", "*quoted*"),         # YAML quotes are taken off
    ("run.dir=runs/x=y", "run.dir", "runs/x=y"),              # only the first '=' splits
    ("method=pix2pix", "method", "pix2pix"),
])
def test_string_overrides_take_the_text_as_written(override, key, expected):
    cfg = config.load(None, BASE + [override])
    section, _, leaf = key.rpartition(".")
    value = getattr(getattr(cfg, section), leaf) if section else getattr(cfg, leaf)
    assert value == expected


@pytest.mark.parametrize("text", ["null", "~"])
def test_null_still_unsets_an_optional_string_key(text):
    assert config.load(None, BASE + [f"data.val={text}"]).data.val is None


def test_null_is_text_for_a_required_string_key():
    assert config.load(None, BASE + ["data.pattern=null"]).data.pattern == "null"


@pytest.mark.parametrize("override, match", [
    ("train.max_steps=*3", r"override 'train.max_steps=\*3'.*train.max_steps.*int"),
    ("train.lr=[1", r"override 'train.lr=\[1'.*train.lr.*float"),
    ("train.max_steps=abc", r"train.max_steps"),
    ("data.patern=*.jpg", r"unknown config key 'data.patern'.*data.pattern"),
])
def test_values_yaml_cannot_read_name_the_override(override, match):
    with pytest.raises(ValueError, match=match):
        config.load(None, BASE + [override])


def test_yaml_file_with_an_unquoted_glob_names_file_line_and_the_fix(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("method: colorization\ndata:\n  kind: images\n  pattern: *.jpg\n  root: /x\n")
    with pytest.raises(ValueError) as err:
        config.load(f)
    msg = str(err.value)
    assert str(f) in msg and "line 4" in msg and "pattern: *.jpg" in msg and 'pattern: "*.jpg"' in msg


def test_yaml_file_keeps_unquoted_words_at_string_keys(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("data:\n  root: /x\n  pattern: '*.jpg'\n  val: null\nlog:\n  name: yes\n  project: 0123\n"
                 "train:\n  max_steps: 0x10\n")
    cfg = config.load(f)
    assert (cfg.data.pattern, cfg.data.val, cfg.log.name, cfg.log.project) == ("*.jpg", None, "yes", "0123")
    assert cfg.train.max_steps == 16  # non-string keys are still read as YAML
    saved = tmp_path / "saved.yaml"  # config.yaml of a run round-trips
    saved.write_text(config.to_yaml(cfg))
    assert config.load(saved) == cfg


def test_yaml_file_that_is_not_a_mapping(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"list.yaml must hold a mapping"):
        config.load(f)


def test_train_cli_reports_a_bad_override_without_a_traceback(capsys):
    import train

    assert train.main(["data.root=/x", "train.max_steps=*3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: override 'train.max_steps=*3'") and "Traceback" not in err


def test_train_cli_accepts_the_readme_glob(tmp_path, capsys):
    """The override reaches the data: the error is about the (absent) images, not about YAML."""
    import train

    code = train.main(["method=colorization", "data.kind=images", f"data.root={tmp_path}",
                       "data.pattern=*.jpg", f"run.dir={tmp_path / 'run'}", "log.wandb=disabled"])
    err = capsys.readouterr().err
    assert code == 1 and "ScannerError" not in err and "alias" not in err
    assert str(tmp_path) in err  # the missing split folder is named


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_sample_cli_overrides_keep_globs(tmp_path, capsys, command):
    import sample

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config.to_yaml(config.load(None, [
        "method=colorization", "data.kind=images", f"data.root={tmp_path / 'data'}"])))
    argv = (["evaluate", str(run), "data.pattern=*.jpg", "log.name=@x"] if command == "evaluate" else
            ["compare", str(run), "--data", str(run), "--output", str(tmp_path / "rep"), "--set",
             "data.pattern=*.jpg", "log.name=@x"])
    assert sample.main(argv) == 2
    err = capsys.readouterr().err
    assert "ScannerError" not in err and "alias" not in err and str(tmp_path / "data") in err


def test_a_section_given_a_scalar_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"override 'data=3'.*DataConfig"):
        config.load(None, BASE + ["data=3"])
    f = tmp_path / "exp.yaml"
    f.write_text("data: 3\n")
    with pytest.raises(ValueError, match=r"exp.yaml"):
        config.load(f)
