"""The configuration reference is made from the typed sections, so it cannot drift."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from gateway.config import GatewayConfig
from onionmail.config.box import Config, render_config
from onionmail.config.reference import field_docs, file_markdown, section_markdown, toml_value
from onionmail.config.sections import InboundSection


def sections(config_class: type[Any]) -> list[tuple[str, type[Any]]]:
    return [
        (item.name, item.default_factory)  # type: ignore[misc]
        for item in dataclasses.fields(config_class)
        if item.name != "path"
    ]


@pytest.mark.parametrize("config_class", [Config, GatewayConfig], ids=["box", "gateway"])
def test_every_key_is_in_the_reference_with_its_docstring(config_class: type[Any]) -> None:
    page = file_markdown("title", "intro", config_class)
    for name, cls in sections(config_class):
        assert f"### `[{name}]`" in page
        docs = field_docs(cls)
        for item in dataclasses.fields(cls):
            assert docs.get(item.name), f"[{name}] {item.name}: no docstring to document it"
            assert f"#### `{item.name}`" in section_markdown(name, cls)


def test_inherited_keys_carry_their_base_class_docstring() -> None:
    text = section_markdown("inbound", InboundSection)
    assert "#### `transaction_timeout`" in text and "Type `float`, default `300.0`." in text
    assert "Commands that carry no mail" in text


def test_every_key_the_generated_config_shows_is_documented() -> None:
    template = render_config(("alice",), 1587, "", None)
    page = file_markdown("title", "intro", Config)
    current = ""
    for line in template.splitlines():
        if match := re.match(r"^\[([a-z_]+)\]", line):
            current = match.group(1)
        elif (match := re.match(r"^#? ?([a-z_]+) = ", line)) and current:
            section = page.split(f"### `[{current}]`", 1)[1].split("\n### ", 1)[0]
            assert f"#### `{match.group(1)}`" in section, f"[{current}] {match.group(1)}"


@pytest.mark.parametrize(
    ("value", "written"),
    [(True, "true"), ("", '""'), ("x", '"x"'), (("a", 1), '["a", 1]'), (2.5, "2.5"), ({}, "{}")],
)
def test_defaults_are_written_as_toml(value: object, written: str) -> None:
    assert toml_value(value) == written
