"""Reading configuration files strictly: text only, no NaN, no key twice, one-line errors."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field, StrictBool, StrictInt

from offchain.protocol.config_files import (
    ConfigFileError,
    StrictModel,
    first_non_finite,
    key_path,
    load_yaml,
    parse_yaml,
    read_text,
    validate,
)


class Inner(StrictModel):
    id: Annotated[StrictInt, Field(ge=1)]
    min_answer: StrictInt | None = None


class Outer(StrictModel):
    flag: StrictBool = False
    ratio: float = 0.5
    markets: list[Inner] = Field(default_factory=list)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a: 1\x00\n", "binary data (a NUL byte at offset 4), not a text config"),
        (b"a: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 6)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary data"),
    ],
)
def test_load_yaml__binary_or_foreign_text_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigFileError) as excinfo:
        load_yaml(path)
    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith(str(path)) and "\n" not in str(excinfo.value)


def test_read_text__missing_file_and_directory_named(tmp_path):
    with pytest.raises(ConfigFileError, match=r"nope\.yaml: no such file"):
        read_text(tmp_path / "nope.yaml")
    with pytest.raises(ConfigFileError, match="is a directory, not a key file"):
        read_text(tmp_path, "key file")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: .nan\n", "a: nan is not a finite number"),
        ("m: [{x: 1}, {x: .inf}]\n", "m[1].x: inf is not a finite number"),
        ("v: -.Inf\n", "v: -inf is not a finite number"),
        ("a: 1\na: 2\n", "key 'a' appears twice (line 2)"),
        ("markets: [\n", "invalid YAML at line 2, column 1"),
        ("a: b: c\n", "invalid YAML at line 1, column 5"),
    ],
)
def test_parse_yaml__refusals(text, message):
    with pytest.raises(ConfigFileError) as excinfo:
        parse_yaml(text, "f.yaml")
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_parse_yaml__finite_numbers_and_plain_documents_pass():
    assert parse_yaml("a: 1.5\nb: [1, 2]\nc: {d: 'NaN'}\n", "f") == {
        "a": 1.5,
        "b": [1, 2],
        "c": {"d": "NaN"},  # a string; the schema decides whether it is a number
    }
    assert first_non_finite({"a": [1.0, {"b": 2}]}) is None


def test_key_path__lists_in_brackets():
    assert key_path(("markets", 0, "engine", "feed")) == "markets[0].engine.feed"
    assert key_path(()) == ""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"flag": "false"}, "f.yaml: flag: Input should be a valid boolean, got 'false'"),
        ({"flag": 0}, "flag: Input should be a valid boolean, got 0"),
        ({"ratio": "0.5"}, "ratio: Input should be a valid number, got '0.5'"),
        ({"ratio": float("nan")}, "ratio: Input should be a finite number"),
        ({"markets": [{"id": 1}, {}]}, "markets[1].id: required"),
        ({"markets": [{"id": "1"}]}, "markets[0].id: Input should be a valid integer, got '1'"),
        ({"markets": [{"id": 0}]}, "markets[0].id: Input should be greater than or equal to 1"),
        ({"markets": [{"id": 1, "min_anwser": 5}]}, "markets[0].min_anwser: unknown key; did"),
        ({"exchange": []}, "exchange: unknown key (known keys: flag, ratio, markets)"),
        ([1, 2], "expected a mapping of keys at the top level"),
    ],
)
def test_validate__one_line_naming_the_key_path(data, message):
    with pytest.raises(ConfigFileError) as excinfo:
        validate(Outer, data, "f.yaml")
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_validate__suggests_the_key_meant():
    with pytest.raises(ConfigFileError, match="did you mean 'min_answer'"):
        validate(Outer, {"markets": [{"id": 1, "min_anwser": 5}]}, "f.yaml")


def test_validate__counts_further_errors():
    with pytest.raises(ConfigFileError, match=r"\(and 2 more\)"):
        validate(Outer, {"flag": "no", "ratio": "x", "markets": [{}]}, "f.yaml")
