"""Settings.from_env: embedded defaults, and one readable SettingsError line per bad value, naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from amem_dagster.errors import SettingsError
from amem_dagster.settings import Settings


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.home == (tmp_path / ".amem").resolve()
    assert (s.kafka_bootstrap, s.pg_dsn, s.milvus_uri, s.embed_model) == (None, None, None, None)
    assert (s.deployment, s.regions, s.default_region, s.events_partitions) == ("local", ("eu", "us"), "eu", 12)
    assert s.default_milvus_uri == str(s.home / "milvus.db")
    assert dict(s.retention_days) == {"eu": 90, "us": 365, "default": 365}
    assert (s.retention_for("eu"), s.retention_for("us"), s.retention_for("elsewhere")) == (90, 365, 365)


def test_empty_values_mean_defaults(tmp_path):
    names = ["AMEM_KAFKA_BOOTSTRAP", "AMEM_PG_DSN", "AMEM_MILVUS_URI", "AMEM_EMBED_MODEL", "AMEM_DEPLOYMENT",
             "AMEM_REGIONS", "AMEM_DEFAULT_REGION", "AMEM_EVENTS_PARTITIONS", "AMEM_EMBED_BACKEND"]
    s = Settings.from_env({"AMEM_HOME": str(tmp_path), **dict.fromkeys(names + ["AMEM_RETENTION"], "")})
    assert s == Settings.from_env({"AMEM_HOME": str(tmp_path)})
    assert (s.kafka_bootstrap, s.deployment, s.regions, s.events_partitions) == (None, "local", ("eu", "us"), 12)
    assert s.embed_backend == "auto"


def test_explicit_values():
    s = Settings.from_env({"AMEM_HOME": "/tmp/x/../amem-h", "AMEM_KAFKA_BOOTSTRAP": "k:9092",
                           "AMEM_PG_DSN": "postgresql://h/db", "AMEM_MILVUS_URI": "http://m:19530",
                           "AMEM_EMBED_MODEL": "/models/m", "AMEM_DEPLOYMENT": "prod",
                           "AMEM_REGIONS": " ap_south , eu,", "AMEM_DEFAULT_REGION": "eu",
                           "AMEM_EVENTS_PARTITIONS": "1000", "AMEM_RETENTION": " eu = 30d, default=36500d ,",
                           "AMEM_EMBED_BACKEND": "openvino-int8"})
    assert s.embed_backend == "openvino-int8"
    assert s.home == Path("/tmp/amem-h")
    assert (s.kafka_bootstrap, s.pg_dsn, s.milvus_uri, s.embed_model) == (
        "k:9092", "postgresql://h/db", "http://m:19530", "/models/m")
    assert (s.deployment, s.regions, s.default_region, s.events_partitions) == ("prod", ("ap_south", "eu"), "eu", 1000)
    assert dict(s.retention_days) == {"eu": 30, "default": 36500} and s.retention_for("ap_south") == 36500
    assert Settings.from_env({"AMEM_REGIONS": "us,eu"}).default_region == "us"  # the first region


@pytest.mark.parametrize(("env", "variable"), [
    ({"AMEM_DEPLOYMENT": "staging"}, "AMEM_DEPLOYMENT"),
    ({"AMEM_DEPLOYMENT": "Local"}, "AMEM_DEPLOYMENT"),
    ({"AMEM_REGIONS": " , ,"}, "AMEM_REGIONS"),
    ({"AMEM_REGIONS": "eu,US"}, "AMEM_REGIONS"),
    ({"AMEM_REGIONS": "eu,1us"}, "AMEM_REGIONS"),
    ({"AMEM_REGIONS": "eu;us"}, "AMEM_REGIONS"),
    ({"AMEM_REGIONS": "eu,a_very_long_region_name"}, "AMEM_REGIONS"),
    ({"AMEM_REGIONS": "eu,us-east"}, "AMEM_REGIONS"),
    ({"AMEM_REGIONS": "eu,us,eu"}, "AMEM_REGIONS"),
    ({"AMEM_DEFAULT_REGION": "ap"}, "AMEM_DEFAULT_REGION"),
    ({"AMEM_REGIONS": "us", "AMEM_DEFAULT_REGION": "eu"}, "AMEM_DEFAULT_REGION"),
    ({"AMEM_EVENTS_PARTITIONS": "0"}, "AMEM_EVENTS_PARTITIONS"),
    ({"AMEM_EVENTS_PARTITIONS": "1001"}, "AMEM_EVENTS_PARTITIONS"),
    ({"AMEM_EVENTS_PARTITIONS": "-3"}, "AMEM_EVENTS_PARTITIONS"),
    ({"AMEM_EVENTS_PARTITIONS": "twelve"}, "AMEM_EVENTS_PARTITIONS"),
    ({"AMEM_EVENTS_PARTITIONS": "1.5"}, "AMEM_EVENTS_PARTITIONS"),
    ({"AMEM_EVENTS_PARTITIONS": "12\nx"}, "AMEM_EVENTS_PARTITIONS"),
    ({"AMEM_EMBED_BACKEND": "tensorrt"}, "AMEM_EMBED_BACKEND"),
    ({"AMEM_EMBED_BACKEND": "ONNX"}, "AMEM_EMBED_BACKEND"),
    ({"AMEM_RETENTION": "eu=90"}, "AMEM_RETENTION"),
    ({"AMEM_RETENTION": "eu:90d,default=1d"}, "AMEM_RETENTION"),
    ({"AMEM_RETENTION": "eu=0d,default=1d"}, "AMEM_RETENTION"),
    ({"AMEM_RETENTION": "eu=36501d,default=1d"}, "AMEM_RETENTION"),
    ({"AMEM_RETENTION": "eu=1w,default=1d"}, "AMEM_RETENTION"),
    ({"AMEM_RETENTION": "mars=9d,default=1d"}, "AMEM_RETENTION"),
    ({"AMEM_RETENTION": "eu=9d,eu=10d,default=1d"}, "AMEM_RETENTION"),
    ({"AMEM_RETENTION": "eu=9d,us=10d"}, "AMEM_RETENTION"),
], ids=lambda v: repr(v) if isinstance(v, dict) else None)
def test_bad_value_names_its_variable(env, variable, tmp_path):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"AMEM_HOME": str(tmp_path), **env})
    message = str(info.value)
    assert message.startswith(variable) and "\n" not in message, message


@pytest.mark.parametrize("raw", ["²", "①", "١٢", "12 "])
def test_only_ascii_digits_count_as_partitions(raw, tmp_path):
    # str.isdigit() accepted "²" and "①", which int() then failed on with a bare ValueError.
    with pytest.raises(SettingsError, match="^AMEM_EVENTS_PARTITIONS"):
        Settings.from_env({"AMEM_HOME": str(tmp_path), "AMEM_EVENTS_PARTITIONS": raw})


@pytest.mark.parametrize(("regions", "windows"), [
    ("ap_south", {"default": 365}),
    ("eu,ap_south", {"eu": 90, "default": 365}),
    ("us", {"us": 365, "default": 365}),
])
def test_custom_regions_load_without_an_explicit_retention(regions, windows, tmp_path):
    # The built-in retention default named eu and us, so any other region list failed to load.
    s = Settings.from_env({"AMEM_HOME": str(tmp_path), "AMEM_REGIONS": regions})
    assert s.regions == tuple(regions.split(",")) and dict(s.retention_days) == windows
