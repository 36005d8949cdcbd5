import json

import pytest

from mdw.config import RunConfig, apply_overrides
from mdw.errors import ConfigError


def test_round_trip_json(tmp_path):
    cfg = apply_overrides(RunConfig(), ["data.eta=0.4", "data.scenes.n_train=100", "name=x"])
    p = tmp_path / "c.json"
    p.write_text(cfg.to_json())
    back = RunConfig.load(str(p))
    assert back == cfg and back.data.eta == 0.4 and back.data.scenes.n_train == 100


@pytest.mark.parametrize("override,needle", [
    ("data.eta=1.0", "data.eta"), ("data.eta=-0.2", "data.eta"),
    ("data.source=imagenet", "unknown source 'imagenet'"),
    ("data.nope=1", "unknown key"), ("data.image_size=abc", "data.image_size: expected int"),
    ("novalue", "expected key=value"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        apply_overrides(RunConfig(), [override])


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        RunConfig.load(str(bad))
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="must be a JSON object"):
        RunConfig.load(str(arr))
    unk = tmp_path / "unk.json"
    unk.write_text(json.dumps({"data": {"etaa": 0.2}}))
    with pytest.raises(ConfigError, match="unk.json: unknown key 'data.etaa'"):
        RunConfig.load(str(unk))
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.load(str(tmp_path / "missing.json"))


def test_path_needed_for_file_sources():
    with pytest.raises(ConfigError, match="data.path"):
        apply_overrides(RunConfig(), ["data.source=csv"])
