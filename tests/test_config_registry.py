"""Bad configuration names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import load_settings
from hub.errors import ConfigError
from hub.registry import load_registry

DEMO = Path(__file__).resolve().parents[1] / "examples" / "sites" / "demo.yaml"


def test_demo_registry_loads_all_four_kinds():
    reg = load_registry(DEMO)
    kinds = {ref.model.kind for ref in reg.devices.values()}
    assert {"elevator", "gate", "fire_panel", "fire_detector", "parking_lane", "parking_meter"} <= kinds
    assert {ref.model.protocol for ref in reg.devices.values()} == {"mqtt", "modbus"}
    assert len(reg.sites["demo"].buildings) >= 2 and len(reg.sites["demo"].grids) >= 2
    # grid is derived from the building when the device does not name one
    assert reg.device("demo", "el-b3-1").grid == "south"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MODEL = """models:
  - id: lift
    kind: elevator
    protocol: mqtt
    metrics:
      - {name: floor, type: int}
"""


def test_unknown_model_reported_with_file_line_and_field(tmp_path):
    path = _write(tmp_path, MODEL + """sites:
  - id: s1
    devices:
      - id: d1
        model: lift
      - id: d2
        model: no-such-model
""")
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert f"{path}:13: sites[0].devices[1].model: unknown device model 'no-such-model'" in str(err.value)


def test_type_error_reported_with_line(tmp_path):
    path = _write(tmp_path, MODEL + """sites:
  - id: s1
    buildings:
      - {id: b1, floors: many}
""")
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert f"{path}:10: sites[0].buildings[0].floors:" in str(err.value)
    assert "integer" in str(err.value)


def test_missing_field_and_bad_id_and_unknown_key(tmp_path):
    path = _write(tmp_path, MODEL + """sites:
  - id: Bad Site
    devices:
      - model: lift
        colour: red
""")
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    text = str(err.value)
    assert f"{path}:8: sites[0].id: String should match pattern" in text
    assert f"{path}:10: sites[0].devices[0].id: Field required" in text
    assert f"{path}:11: sites[0].devices[0].colour: Extra inputs are not permitted" in text


def test_modbus_register_for_undeclared_metric(tmp_path):
    path = _write(tmp_path, """models:
  - id: meter
    kind: parking_meter
    protocol: modbus
    metrics: [{name: free_spaces, type: int}]
    modbus:
      registers:
        - {metric: free_spaces, address: 0}
        - {metric: fees, address: 1}
""")
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert f"{path}:9: models[0].modbus.registers[1].metric: metric 'fees' is not declared" in str(err.value)


def test_yaml_syntax_error_names_line(tmp_path):
    path = _write(tmp_path, "sites:\n  - id: s1\n    name: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert str(err.value).startswith(f"{path}:")
    assert "invalid YAML" in str(err.value)


def test_registry_folder_merges_and_reports_duplicates(tmp_path):
    (tmp_path / "a.yaml").write_text(MODEL)
    (tmp_path / "b.yaml").write_text(MODEL)
    with pytest.raises(ConfigError) as err:
        load_registry(tmp_path)
    assert f"{tmp_path / 'b.yaml'}:2: models[0].id: duplicate model id 'lift'" in str(err.value)


def test_settings_file_error_names_file_line_field(tmp_path, monkeypatch):
    path = tmp_path / "hub.yaml"
    path.write_text("api_port: 8000\ningest:\n  batch_rows: lots\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert f"{path}:3: ingest.batch_rows:" in str(err.value)


def test_environment_wins_over_file_and_errors_name_the_variable(tmp_path, monkeypatch):
    path = tmp_path / "hub.yaml"
    path.write_text("api_port: 8001\nmqtt_url: mqtt://broker.example:1883\n")
    monkeypatch.setenv("HUB_API_PORT", "9000")
    settings = load_settings(path)
    assert settings.api_port == 9000
    assert settings.mqtt.host == "broker.example"
    monkeypatch.setenv("HUB_MQTT_URL", "http://nope")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "environment variable HUB_MQTT_URL" in str(err.value)


def test_secrets_do_not_leak_into_repr(monkeypatch):
    monkeypatch.setenv("HUB_MQTT_URL", "mqtt://hub:s3cret-pass@127.0.0.1:1883")
    monkeypatch.setenv("HUB_DATABASE_URL", "postgresql://hub:db-pass@127.0.0.1/hub")
    settings = load_settings(None)
    assert settings.mqtt.password is not None and settings.mqtt.password.get_secret_value() == "s3cret-pass"
    assert "s3cret-pass" not in repr(settings) and "db-pass" not in repr(settings)
    from hub.store.db import redact

    assert "db-pass" not in redact(settings.dsn)
