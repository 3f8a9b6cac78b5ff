"""Tests for core.identifiers and core.labels."""

from __future__ import annotations

import pytest

from core import identifiers, labels
from core.errors import InvalidArgument

PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"


@pytest.mark.parametrize(
    "identifier",
    [
        "a",
        "0",
        "default",
        "k8s.io",
        "moby",
        "c1",
        "testns",
        "a-b_c.d",
        "my-container_1.2",
        "ABC123",
        "tasks",
        "a" * 76,
        "a." + "b" * 74,
    ],
)
def test_valid_identifiers(identifier: str) -> None:
    identifiers.validate(identifier)


@pytest.mark.parametrize(
    "identifier",
    [
        "bad ns!",
        "-a",
        "a-",
        "_a",
        ".a",
        "a.",
        "a..b",
        "a.-b",
        "a__b",
        "a b",
        " a",
        "a/b",
        "a:b",
        "é",
        "a\n",
        "\na",
    ],
)
def test_identifiers_not_matching_the_pattern(identifier: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        identifiers.validate(identifier)
    assert excinfo.value.message.endswith(f" must match {PATTERN}")


@pytest.mark.parametrize(
    ("identifier", "message"),
    [
        ("", "identifier must not be empty"),
        ("bad ns!", f'identifier "bad ns!" must match {PATTERN}'),
        ('q"uote', f'identifier "q\\"uote" must match {PATTERN}'),
        (
            "a" * 77,
            f'identifier "{"a" * 77}" greater than maximum length (76 characters)',
        ),
        (
            "a-" * 40,
            f'identifier "{"a-" * 40}" greater than maximum length (76 characters)',
        ),
    ],
)
def test_identifier_messages(identifier: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        identifiers.validate(identifier)
    assert excinfo.value.message == message
    assert str(excinfo.value) == f"{message}: invalid argument"


def test_identifier_constants() -> None:
    assert identifiers.MAX_LENGTH == 76
    assert identifiers.PATTERN == PATTERN


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("k", ""),
        ("", ""),
        ("io.containerd.image.config.stop-signal", "SIGTERM"),
        ("k" * 10, "v" * 4086),
        ("k" * 4096, ""),
        ("", "v" * 4096),
        # 1 + 2 * 2047 = 4095 bytes
        ("k", "é" * 2047),
        # 4 bytes per emoji: 4 * 1024 = 4096
        ("😀" * 1024, ""),
    ],
)
def test_labels_within_limit(key: str, value: str) -> None:
    labels.validate(key, value)
    labels.validate_all({key: value})


@pytest.mark.parametrize(
    ("key", "value", "shown_key"),
    [
        ("k" * 10, "v" * 4087, "k" * 10),
        ("k" * 4097, "", "k" * 10),
        ("", "v" * 4097, ""),
        ("abcdefghijklmnop", "v" * 4081, "abcdefghij"),
        ("short", "v" * 4092, "short"),
        # 1 + 2 * 2048 = 4097 bytes, though only 2049 characters
        ("k", "é" * 2048, "k"),
        ("😀" * 1024, "x", "😀" * 10),
    ],
)
def test_labels_over_limit(key: str, value: str, shown_key: str) -> None:
    expected = f"label key and value greater than maximum size (4096 bytes), key: {shown_key}"
    with pytest.raises(InvalidArgument) as excinfo:
        labels.validate(key, value)
    assert excinfo.value.message == expected
    assert str(excinfo.value) == f"{expected}: invalid argument"
    with pytest.raises(InvalidArgument):
        labels.validate_all({"ok": "fine", key: value})


def test_validate_all_accepts_empty_and_valid_maps() -> None:
    labels.validate_all({})
    labels.validate_all({"a": "1", "containerd.io/gc.root": "2024-01-01T00:00:00Z"})


def test_label_limit_constant() -> None:
    assert labels.MAX_SIZE == 4096
