"""The configuration explains itself: every mistake at once with its line and key, typos with the closest
key, cross-checks that no single key can fail, and the shipped schema and example generated from the
models (so neither can drift from what the agent reads)."""

from __future__ import annotations

import dataclasses
import re
import socket
import tomllib
from pathlib import Path

import jsonschema
import pytest

from afn_agent import config as runtime
from afn_agent.cli import main
from afn_agent.config import ConfigError, load_config
from afn_agent.config_docs import SCHEMAS, example, schema
from afn_agent.config_model import (
    AccessTable,
    AgentFile,
    ApiKeyTable,
    ApiTable,
    BrokerTable,
    MachineTable,
    SafetyTable,
    TariffTable,
)
from afn_agent.ledger.tariff import Tariff

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

FIVE = """
[agent]
site = "fablab"
id = "pi-1"
data_dir = "data"
chekpoint_s = 1.0

[tariffs.printer]
per_active_minute = 0.1

[[machines]]
id = "printer-1"
class = "fdm-printer"
profile = "marlin2"
port = "/dev/afn/printer-1"
tariff = "printr"
baud = "115200"

[[machines]]
id = "mill-1"
class = "cnc-mill"
profile = "grbl-1.1"
port = "/dev/afn/mill-1"
reader = "uart:/dev/afn/reader-1@9600"

[access]
badge_secret = "a-site-secret-long-enough"
session_idle_s = -5
"""


def test_five_mistakes_are_said_at_once_each_with_its_line_and_key(tmp_path, capsys):
    path = tmp_path / "agent.toml"
    path.write_text(FIVE)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    expected = [
        (6, r"agent\.chekpoint_s: unknown key \(did you mean checkpoint_s\?\)"),
        (17, r"machines\[0\] \(printer-1\)\.baud: expected a whole number, got '115200'"),
        (16, r"machines\[0\] \(printer-1\)\.tariff: no \[tariffs\.printr\] \(defined: default, printer\)"),
        (11, r"machines\[0\] \(printer-1\)\.reader: under \[access\] a machine needs a badge reader"),
        (28, r"access\.session_idle_s: expected a number > 0, got -5"),
    ]
    assert len(lines) == len(expected), lines
    for line, said in expected:
        assert any(re.search(f"^{re.escape(str(path))}: line {line}: {said}", x) for x in lines), (
            said,
            lines,
        )
    with pytest.raises(SystemExit) as exit_:
        main(["check-config", "--no-ports", str(path)])
    assert exit_.value.code == 2
    err_text = capsys.readouterr().err
    assert err_text.count("afn-agent: ") == 6 and f"5 mistakes in {path}" in err_text


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (('profile = "grbl-1.1"', 'profile = "grbl-9"'), r"machines\[1\] \(mill-1\)\.profile: .*grbl-9"),
        (('session_idle_s = 1', 'session_idle_s = 1\n[api]\nkeys = [{ name = "x", role = "slicer", sha256 = "'
          + "0" * 64 + '", machines = ["mill-2"] }]'), r"api\.keys\[0\]\.machines: no machine 'mill-2'"),
        (('port = "/dev/afn/mill-1"', 'port = "/dev/afn/printer-1"'),
         r"machines\[1\] \(mill-1\)\.port: /dev/afn/printer-1 is already machines\[0\]'s port"),
        (('reader = "uart:/dev/afn/reader-1@9600"', 'reader = "uart:/dev/afn/reader-1@9600"\n[booking]\nmode = "mqtt"'),
         r"booking\.mode: mqtt needs a \[broker\]"),
    ],
)  # fmt: skip
def test_cross_checks(tmp_path, change, said):
    good = FIVE.replace("chekpoint_s", "checkpoint_s").replace('tariff = "printr"\nbaud = "115200"', "")
    good = good.replace("session_idle_s = -5", "session_idle_s = 1").replace('port = "/dev/afn/printer-1"\n',
                                                           'port = "/dev/afn/printer-1"\nreader = "sim"\n')  # fmt: skip
    path = tmp_path / "agent.toml"
    path.write_text(good)
    load_config(path)
    path.write_text(good.replace(*change))
    with pytest.raises(ConfigError, match=said):
        load_config(path)


def test_check_config_says_the_api_port_is_taken(tmp_path, capsys):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        path = tmp_path / "agent.toml"
        path.write_text(f'[agent]\nsite = "fablab"\nid = "pi-1"\ndata_dir = "data"\n[api]\nport = {port}\n')
        assert main(["check-config", str(path)]) == 2
        assert f"the API's port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err
        assert main(["check-config", "--no-ports", str(path)]) == 0


def test_check_config_reads_the_fleet_config_too(tmp_path, capsys):
    text = (DEPLOY / "fleet.example.toml").read_text()
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 0
    assert "fleet dashboard of site fablab" in capsys.readouterr().out
    path.write_text(text.replace("command_secret", "comand_secret").replace("port = 8090", "port = 80900"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "fleet.comand_secret: unknown key (did you mean command_secret?)" in err
    assert "fleet.port: expected a number <= 65535, got 80900" in err


def test_the_shipped_schemas_and_example_are_the_generated_ones():
    """After a change to config_model.py: `afn-agent config-files --out deploy`."""
    for name, model in SCHEMAS.items():
        assert (DEPLOY / name).read_text() == schema(model), f"deploy/{name} is stale"
    assert (DEPLOY / "agent.example.toml").read_text() == example(), "deploy/agent.example.toml is stale"


def keys_of(model, prefix="") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        out.add(prefix + key)
        for arg in _models_in(field.annotation):
            out |= keys_of(arg, f"{prefix}{key}.")
    return out


def _models_in(annotation) -> list:
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def test_the_example_has_every_key_and_the_schema_checks_the_toml():
    text = (DEPLOY / "agent.example.toml").read_text()
    written = set(re.findall(r"^#? ?([a-z_0-9]+) = ", text, re.M))
    written |= set(re.findall(r"^#? ?\[[a-z_]+\.([a-z_]+)\]$", text, re.M))  # a key written as its own table
    leaves = {k.rsplit(".", 1)[-1] for k in keys_of(AgentFile)} - {"agent", "tariffs", "materials", "machines",
              "access", "safety", "broker", "booking", "api", "console", "keys", "opening_hours", "policy",
              "directory", "notify"}  # fmt: skip
    assert leaves - written == set()
    document = tomllib.loads(text)
    checker = jsonschema.Draft202012Validator(AgentFile.model_json_schema(by_alias=True))
    assert list(checker.iter_errors(document)) == []
    document["machines"][0]["buad"] = 115200
    document["broker"]["port"] = "8883"
    errors = list(checker.iter_errors(document))
    said = [e.message for e in errors] + [c.message for e in errors for c in e.context or ()]
    assert any("'buad' was unexpected" in s for s in said) and any("'8883' is not of type" in s for s in said)


def test_tariff_table_has_the_tariffs_fields():
    assert set(TariffTable.model_fields) == {f.name for f in dataclasses.fields(Tariff)} - {"name"}


@pytest.mark.parametrize(
    ("model", "runtime_class"),
    [(MachineTable, runtime.MachineConfig), (BrokerTable, runtime.BrokerConfig), (AccessTable, runtime.AccessConfig),
     (ApiTable, runtime.ApiConfig), (ApiKeyTable, runtime.ApiKey), (SafetyTable, runtime.SafetyConfig)],
)  # fmt: skip
def test_the_files_defaults_are_the_agents(model, runtime_class):
    """The runtime dataclasses keep defaults for code and tests that build them directly: the same ones."""
    defaults = {
        f.name: f.default for f in dataclasses.fields(runtime_class) if f.default is not dataclasses.MISSING
    }
    for name, field in model.model_fields.items():
        if name in defaults and field.default is not None and field.default_factory is None:
            assert field.default == defaults[name], (runtime_class.__name__, name)


def test_every_command_and_option_says_what_it_does(monkeypatch):
    """`afn-agent <command> --help` explains every option (a new user reads it before any doc)."""
    import argparse

    seen: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        seen.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        main(["profiles"])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real)
    silent, walked = [], 0
    stack = list(seen)
    while stack:
        parser = stack.pop()
        walked += 1
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += list(action.choices.values())
                helps = {a.dest: a.help for a in action._choices_actions}
                silent += [f"{parser.prog} {name}" for name in action.choices if not helps.get(name)]
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction) and not action.help:
                silent.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert walked > 20 and silent == []


def test_the_examples_commented_out_directory_works_once_uncommented(tmp_path):
    """The Fab-manager table shown commented out is a valid configuration once a lab uncomments it (and
    drops sync_url, which it replaces)."""
    text = (DEPLOY / "agent.example.toml").read_text()
    start = text.index("# [directory]")
    end = text.index("\n\n# heaters")
    block = "\n".join(line[2:] if re.match(r"^# (\[|[a-z_0-9\"-]+ = )", line) else line
                      for line in text[start:end].splitlines())  # fmt: skip
    mine = text[:start] + block + text[end:]
    mine = re.sub(r"^sync_(url|token) = .*$", "", mine, flags=re.M)
    path = tmp_path / "agent.toml"
    path.write_text(mine.replace("/var/lib/afn-agent", str(tmp_path / "data")))
    cfg = runtime.load_config(path)
    assert cfg.directory is not None and cfg.directory.machines["4"] == ["printer-2"]
    assert cfg.directory.trainings["formation-imprimante-3d"] == "fdm-printer"
