"""Tests for core.filters: syntax, matching semantics and containerd-shaped errors."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from core import filters
from core.errors import InvalidArgument
from core.filters import (
    ALWAYS,
    AllOf,
    AnyOf,
    Equal,
    Matches,
    NotEqual,
    Present,
    field_adaptor,
    parse,
    parse_all,
)

IMAGE = field_adaptor(
    {
        "name": "docker.io/library/alpine:latest",
        "target.digest": "sha256:abc123",
        "target.mediatype": "application/vnd.oci.image.index.v1+json",
    },
    {
        "labels": {
            "foo": "true",
            "a.b": "dotted",
            "empty": "",
            "eq": "a=b",
            "more complex label": "present",
            'with \\ and "': "quoted",
        },
        "annotations": {"org.opencontainers.image.ref.name": "latest"},
    },
)
CONTAINER = field_adaptor(
    {
        "id": "c1",
        "image": "docker.io/library/alpine:latest",
        "runtime.name": "io.containerd.runc.v2",
    },
    {"labels": {"io.containerd.image.config.stop-signal": "SIGTERM"}},
)
SNAPSHOT = field_adaptor({"kind": "committed", "name": "sha256:1", "parent": ""}, {"labels": {}})
TASKS_EVENT = field_adaptor({"namespace": "testns", "topic": "/tasks/create"})
OTHER_NS_TASKS_EVENT = field_adaptor({"namespace": "default", "topic": "/tasks/exit"})
CONTAINERS_EVENT = field_adaptor({"namespace": "testns", "topic": "/containers/create"})
OTHER_NS_CONTAINERS_EVENT = field_adaptor({"namespace": "default", "topic": "/containers/delete"})


@pytest.mark.parametrize(
    ("filter_str", "obj", "expected"),
    [
        # blank filters match everything
        ("", CONTAINER, True),
        ("   ", CONTAINER, True),
        ("\t\n", SNAPSHOT, True),
        # the doc's examples
        ("id==c1", CONTAINER, True),
        ("id==c2", CONTAINER, False),
        ('topic~="/tasks/"', TASKS_EVENT, True),
        ('topic~="/tasks/"', CONTAINERS_EVENT, False),
        ("namespace==testns", CONTAINERS_EVENT, True),
        ("name~=busybox", IMAGE, False),
        ("name~=alpine", IMAGE, True),
        # quoted label keys
        ('labels."io.containerd.image.config.stop-signal"==SIGTERM', CONTAINER, True),
        ('labels."io.containerd.image.config.stop-signal"==SIGKILL', CONTAINER, False),
        ('labels."io.containerd.image.config.stop-signal"', CONTAINER, True),
        ('labels."more complex label"', IMAGE, True),
        ('labels."with \\\\ and \\""==quoted', IMAGE, True),
        # an unquoted dotted key is joined back with dots
        ("labels.a.b==dotted", IMAGE, True),
        ("labels.a.b", IMAGE, True),
        ('labels."a".b', IMAGE, True),
        ('labels."a.b"', IMAGE, True),
        # nested plain fields
        ("target.digest==sha256:abc123", IMAGE, True),
        ("target.mediatype~=index", IMAGE, True),
        ("target.mediatype~=manifest", IMAGE, False),
        ("runtime.name==io.containerd.runc.v2", CONTAINER, True),
        ("runtime", CONTAINER, False),
        ('annotations."org.opencontainers.image.ref.name"==latest', IMAGE, True),
        ('"name"~=alpine', IMAGE, True),
        # presence
        ("name", IMAGE, True),
        ("labels.foo", IMAGE, True),
        ("labels.nope", IMAGE, False),
        ("labels.empty", IMAGE, True),
        ("parent", SNAPSHOT, False),
        ("labels.anything", SNAPSHOT, False),
        ("nosuchfield", IMAGE, False),
        # ==: present and equal
        ("labels.foo==true", IMAGE, True),
        ("labels.foo==false", IMAGE, False),
        ('labels.empty==""', IMAGE, True),
        ('labels.nope==""', IMAGE, False),
        ('parent==""', SNAPSHOT, False),
        ("kind==committed", SNAPSHOT, True),
        # !=: an absent field counts as ""
        ("labels.foo!=true", IMAGE, False),
        ("labels.foo!=false", IMAGE, True),
        ("labels.nope!=x", IMAGE, True),
        ('labels.nope!=""', IMAGE, False),
        ('labels.empty!=""', IMAGE, False),
        ("parent!=sha256:0", SNAPSHOT, True),
        # ~=: unanchored search; absent counts as ""
        ("name~=^docker\\.io/", IMAGE, True),
        ("name~=^alpine", IMAGE, False),
        ("labels.nope~=^$", IMAGE, True),
        ("labels.nope~=.", IMAGE, False),
        ("topic~=/^\\/tasks\\/(create|start)$/", TASKS_EVENT, True),
        ("topic~=/^\\/tasks\\/(create|start)$/", OTHER_NS_TASKS_EVENT, False),
        ("topic~=|^/containers/|", CONTAINERS_EVENT, True),
        ('name~="\\\\.io/"', IMAGE, True),
        ("name~=/[abc]{1,2}/", IMAGE, True),
        # values
        ("image==docker.io/library/alpine:latest", CONTAINER, True),
        ("labels.eq==a=b", IMAGE, True),
        ("topic==/tasks/create", TASKS_EVENT, True),
        ("topic!=/tasks/create", TASKS_EVENT, False),
        ('name=="docker.io/library/alpine:latest"', IMAGE, True),
        # comma = AND
        ("name~=alpine,labels.foo==true", IMAGE, True),
        ("name~=alpine,labels.foo==false", IMAGE, False),
        ("id==c1,image~=alpine,runtime.name~=runc", CONTAINER, True),
        ("labels.foo,name", IMAGE, True),
        ("labels.foo,labels.nope", IMAGE, False),
        # whitespace between tokens
        ("  name ==  docker.io/library/alpine:latest  ,  labels . foo  ", IMAGE, True),
        ('labels. "a.b" == dotted', IMAGE, True),
    ],
)
def test_match(filter_str: str, obj: filters.Adaptor, expected: bool) -> None:
    assert parse(filter_str).match(obj) is expected


@pytest.mark.parametrize(
    ("filter_str", "compiled"),
    [
        ("", ALWAYS),
        ("name", AllOf((Present(("name",)),))),
        ("labels.a.b==x", AllOf((Equal(("labels", "a", "b"), "x"),))),
        ('labels."a.b"!=x', AllOf((NotEqual(("labels", "a.b"), "x"),))),
        (
            "id==c1,labels.x",
            AllOf((Equal(("id",), "c1"), Present(("labels", "x")))),
        ),
        ('other=="too complex, yo"', AllOf((Equal(("other",), "too complex, yo"),))),
        ('x==""', AllOf((Equal(("x",), ""),))),
        ('labels.""', AllOf((Present(("labels", "")),))),
        # a quote in the middle of an unquoted value is plain text
        ('x==a"b', AllOf((Equal(("x",), 'a"b'),))),
        ("x==|a|", AllOf((Equal(("x",), "|a|"),))),
        ("x==héllo", AllOf((Equal(("x",), "héllo"),))),
    ],
)
def test_parse_structure(filter_str: str, compiled: filters.Filter) -> None:
    assert parse(filter_str) == compiled


@pytest.mark.parametrize(
    ("quoted", "decoded"),
    [
        (r'"plain"', "plain"),
        (r'"\a\b\f\n\r\t\v"', "\a\b\f\n\r\t\v"),
        (r'"\\"', "\\"),
        (r'"\""', '"'),
        (r'"\101\060"', "A0"),
        (r'"\x41\x7e"', "A~"),
        (r'"\u00e9"', "é"),
        (r'"\U0001F600"', "\U0001f600"),
        # \x and \ooo are bytes, so a UTF-8 sequence spelled out byte by byte decodes
        (r'"\xc3\xa9"', "é"),
        (r'"\303\251"', "é"),
        ('"é 😀"', "é 😀"),
        (r'"a/b|c"', "a/b|c"),
    ],
)
def test_go_escapes(quoted: str, decoded: str) -> None:
    assert parse(f"f=={quoted}") == AllOf((Equal(("f",), decoded),))
    assert parse(f"labels.{quoted}") == AllOf((Present(("labels", decoded)),))


@pytest.mark.parametrize(
    ("filter_str", "pattern"),
    [
        ("x~=[abc]+", "[abc]+"),
        ("x~=/[abc]+/", "[abc]+"),
        ("x~=|[abc]+|", "[abc]+"),
        ('x~="[abc]+"', "[abc]+"),
        ("x~=/a\\/b/", "a/b"),
        ("x~=|a\\|b|", "a|b"),
        ('x~=/[abc]{0,1}"\\//', '[abc]{0,1}"/'),
        ("x~=/a,b c/", "a,b c"),
    ],
)
def test_regex_quoting(filter_str: str, pattern: str) -> None:
    compiled = parse(filter_str)
    assert isinstance(compiled, AllOf)
    (selector,) = compiled.filters
    assert isinstance(selector, Matches)
    assert selector.pattern.pattern == pattern


@pytest.mark.parametrize(
    ("filter_str", "message"),
    [
        ("name==", "filters: parse error: [name==]: expected value or quoted"),
        ("name~=", "filters: parse error: [name~=]: expected value or quoted"),
        ("name==   ", "filters: parse error: [name==   ]: expected value or quoted"),
        ("==x", "filters: parse error: [ >|=|< =x]: expected field or quoted"),
        (",", "filters: parse error: [ >|,|< ]: expected field or quoted"),
        ("name=x", 'filters: parse error: [name >|=|< x]: unsupported operator "="'),
        ("name!==x", 'filters: parse error: [name >|!|< ==x]: unsupported operator "!=="'),
        ("name===x", 'filters: parse error: [name >|=|< ==x]: unsupported operator "==="'),
        ("name!x", 'filters: parse error: [name >|!|< x]: unsupported operator "!"'),
        (
            "name?",
            'filters: parse error: [name >|?|< ]: expected an operator ("=="|"!="|"~=")',
        ),
        # unquoted fields are [A-Za-z0-9_]+ only
        (
            "labels.foo-bar==x",
            "filters: parse error: [labels.foo >|-|< bar==x]: "
            'expected an operator ("=="|"!="|"~=")',
        ),
        ("name==foo,", "filters: parse error: [name==foo,]: expected field or quoted"),
        ("name==foo,,id", "filters: parse error: [name==foo, >|,|< id]: expected field or quoted"),
        ("labels.", "filters: parse error: [labels.]: expected field or quoted"),
        ("labels..x", "filters: parse error: [labels. >|.|< x]: expected field or quoted"),
        (
            "image~=,id?=?fbaq",
            "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted",
        ),
        (
            "labels.|foo|==omg_asdf.asdf-qwer",
            "filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: "
            "invalid quote encountered",
        ),
        ("/a/==x", "filters: parse error: [ >|/|< a/==x]: invalid quote encountered"),
        ("name==foo bar", "filters: parse error: [name==foo  >|b|< ar]: unexpected input: b"),
        ('name=="foo"bar', 'filters: parse error: [name=="foo" >|b|< ar]: unexpected input: b'),
        ("x~=/tasks/exit", "filters: parse error: [x~=/tasks/ >|e|< xit]: unexpected input: e"),
        # an unquoted comma ends a regex, so `{1,2}` needs quoting
        (
            "name~=[abc]{1,2}",
            'filters: parse error: [name~=[abc]{1,2 >|}|< ]: expected an operator ("=="|"!="|"~=")',
        ),
        # unterminated quotes
        (
            'labels."foo==bar',
            'filters: parse error: [labels. >|"|< foo==bar]: quoted literal not terminated',
        ),
        ('name=="foo', 'filters: parse error: [name== >|"|< foo]: quoted literal not terminated'),
        ("name~=/foo", "filters: parse error: [name~= >|/|< foo]: quoted literal not terminated"),
        (
            'name=="a\nb"',
            'filters: parse error: [name== >|"|< a\nb"]: quoted literal not terminated',
        ),
        (
            'name=="a\\',
            'filters: parse error: [name== >|"|< a\\]: quoted literal not terminated',
        ),
        # bad escapes
        (
            'labels."a\\qb"',
            'filters: parse error: [labels. >|"|< a\\qb"]: illegal escape sequence "\\q"',
        ),
        ('x=="\\8"', 'filters: parse error: [x== >|"|< \\8"]: illegal escape sequence "\\8"'),
        ('x=="\\/"', 'filters: parse error: [x== >|"|< \\/"]: illegal escape sequence "\\/"'),
        ('x=="\\\'"', 'filters: parse error: [x== >|"|< \\\'"]: illegal escape sequence "\\\'"'),
        (
            'x~=/a\\"b/',
            'filters: parse error: [x~= >|/|< a\\"b/]: illegal escape sequence "\\""',
        ),
        (
            'x=="\\x4g"',
            'filters: parse error: [x== >|"|< \\x4g"]: illegal numeric escape sequence "\\x4g"',
        ),
        (
            'x=="\\u12zz"',
            'filters: parse error: [x== >|"|< \\u12zz"]: illegal numeric escape sequence "\\u12zz"',
        ),
        (
            'x=="\\12x"',
            'filters: parse error: [x== >|"|< \\12x"]: illegal numeric escape sequence "\\12x"',
        ),
        (
            'x=="\\777"',
            'filters: parse error: [x== >|"|< \\777"]: octal escape "\\777" is greater than 255',
        ),
        (
            'x=="\\U00110000"',
            'filters: parse error: [x== >|"|< \\U00110000"]: '
            'escape "\\U00110000" is not a valid Unicode code point',
        ),
        (
            'x=="\\ud800"',
            'filters: parse error: [x== >|"|< \\ud800"]: '
            'escape "\\ud800" is not a valid Unicode code point',
        ),
    ],
)
def test_parse_errors(filter_str: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse(filter_str)
    assert excinfo.value.message == message
    assert str(excinfo.value) == f"{message}: invalid argument"


@pytest.mark.parametrize("bad_regex", ["(", "[a-", "a)", "*a", "(?P<x>a)(?P<x>b)"])
def test_invalid_regex_is_a_parse_error(bad_regex: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse(f"name~={bad_regex}")
    assert excinfo.value.message.startswith(
        f"filters: parse error: [name~= >|{bad_regex[0]}|< {bad_regex[1:]}]: "
        f'invalid regular expression "{bad_regex}": '
    )


def test_invalid_quoted_regex_points_at_the_quote() -> None:
    with pytest.raises(InvalidArgument, match=r"\[name~= >\|/\|< \(/\]: invalid regular"):
        parse("name~=/(/")


def test_adaptor_receives_the_field_path_as_components() -> None:
    seen: list[list[str]] = []

    def recorder(fieldpath: Sequence[str]) -> tuple[str, bool]:
        seen.append(list(fieldpath))
        return "", False

    parse('labels.a.b,labels."c.d"==x,id!=y,topic~=z').match(recorder)
    assert seen == [["labels", "a", "b"]]  # AND stops at the first miss
    parse_all(["labels.a.b", 'labels."c.d"==x', "id!=y"]).match(recorder)
    assert seen[1:] == [["labels", "a", "b"], ["labels", "c.d"], ["id"]]


def test_parse_once_match_many() -> None:
    compiled = parse("name~=alpine,labels.foo")
    assert [compiled.match(obj) for obj in (IMAGE, CONTAINER, IMAGE)] == [True, False, True]


@pytest.mark.parametrize(
    ("filter_strs", "expected"),
    [
        ([], [True, True, True, True]),
        ([""], [True, True, True, True]),
        (["  "], [True, True, True, True]),
        (["namespace==nope", ""], [True, True, True, True]),
        (["namespace==testns"], [True, False, True, False]),
        # ctr events 'topic~="/tasks/"' 'namespace==testns'
        (['topic~="/tasks/"', "namespace==testns"], [True, True, True, False]),
        (["topic==/tasks/exit", "topic==/containers/delete"], [False, True, False, True]),
        (
            ["namespace==testns,topic~=tasks", "namespace==default,topic~=containers"],
            [True, False, False, True],
        ),
        (["namespace==nope", "topic==nope"], [False, False, False, False]),
    ],
)
def test_parse_all_is_an_or(filter_strs: list[str], expected: list[bool]) -> None:
    compiled = parse_all(filter_strs)
    events = [TASKS_EVENT, OTHER_NS_TASKS_EVENT, CONTAINERS_EVENT, OTHER_NS_CONTAINERS_EVENT]
    assert [compiled.match(event) for event in events] == expected


def test_parse_all_shapes() -> None:
    assert parse_all([]) is ALWAYS
    assert parse_all(["id==c1", ""]) is ALWAYS
    assert parse_all(["id==c1", "id==c2"]) == AnyOf(
        (AllOf((Equal(("id",), "c1"),)), AllOf((Equal(("id",), "c2"),)))
    )


def test_parse_all_reports_the_bad_string() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse_all(["id==c1", "name=="])
    assert excinfo.value.message == "filters: parse error: [name==]: expected value or quoted"


def test_parse_all_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError):
        parse_all("id==c1")


@pytest.mark.parametrize(
    ("fieldpath", "expected"),
    [
        (["name"], ("n1", True)),
        (["target", "digest"], ("sha256:d", True)),
        (["target.digest"], ("sha256:d", True)),
        (["target"], ("", False)),
        (["empty"], ("", False)),
        (["missing"], ("", False)),
        ([], ("", False)),
        (["labels", "k"], ("v", True)),
        (["labels", "a", "b"], ("dotted", True)),
        (["labels", "a.b"], ("dotted", True)),
        (["labels", "blank"], ("", True)),
        (["labels", "missing"], ("", False)),
        (["labels"], ("", False)),
        (["annotations", "k"], ("", False)),
    ],
)
def test_field_adaptor(fieldpath: list[str], expected: tuple[str, bool]) -> None:
    adaptor = field_adaptor(
        {"name": "n1", "target.digest": "sha256:d", "empty": ""},
        {"labels": {"k": "v", "a.b": "dotted", "blank": ""}, "annotations": {}},
    )
    assert adaptor(fieldpath) == expected


def test_field_adaptor_without_maps() -> None:
    adaptor = field_adaptor({"id": "c1"})
    assert adaptor(["id"]) == ("c1", True)
    assert adaptor(["labels", "x"]) == ("", False)
