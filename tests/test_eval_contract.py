"""JSON contract: strict parse, salvage, the streaming brace scanner, key sets and types."""

from vlmsweep.evaluate.contract import (
    JsonObjectScanner,
    key_set_errors,
    salvage,
    schema_valid,
    strict_parse,
    type_errors,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": ["string", "null"]},
        "meds": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "properties": {"n": {"type": ["string", "null"]}, "d": {"type": ["integer", "null"]}},
                "required": ["n", "d"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["name", "meds"],
    "additionalProperties": False,
}


def test_strict_parse_wants_exactly_one_object():
    assert strict_parse('  {"a": 1}\n') == {"a": 1}
    assert strict_parse("1111") is None  # valid JSON, but no answer object
    assert strict_parse('"x"') is None
    assert strict_parse("[1]") is None
    assert strict_parse('{"a": 1} extra') is None
    assert strict_parse("") is None
    assert strict_parse("   ") is None
    assert strict_parse('{"a": 1') is None
    assert strict_parse('{"a": NaN}') is None and strict_parse('{"a": -Infinity}') is None


def test_salvage_finds_first_balanced_object_aware_of_strings():
    text = 'Here: {"a": {"b": "}"}} and more'
    found = salvage(text)
    assert found is not None
    assert found.obj == {"a": {"b": "}"}}
    assert (found.start, found.end) == (6, 23)
    assert text[found.end :] == " and more"


def test_salvage_skips_braces_that_are_not_json_and_refuses_cut_off_answers():
    assert salvage('note {x} then {"k": 1}').obj == {"k": 1}
    assert salvage('{"a": 1, "b": {"c": 2}') is None  # the answer never closes: its inner object is a fragment
    assert salvage("no braces at all") is None
    assert salvage('{"a": "x\\"}"}').obj == {"a": 'x"}'}  # escaped quote keeps the brace inside the string


def test_scanner_streams_pieces_and_reports_the_closing_position():
    scanner = JsonObjectScanner()
    pieces = ['Sure "quoted" ', '{"a', '": "}', '"', "}", " tail"]
    results = [scanner.feed(p) for p in pieces]
    assert results == [None, None, None, None, 1, None]
    assert scanner.done


def test_scanner_nested_and_escaped_backslash():
    scanner = JsonObjectScanner()
    text = '{"a": {"b": "c\\\\"}, "d": 1} x'  # the string ends after an escaped backslash
    assert scanner.feed(text) == len(text) - 2


def test_key_set_checks_nested_objects_and_list_items():
    good = {"name": "x", "meds": [{"n": "a", "d": 1}, {"n": "b", "d": None}]}
    assert key_set_errors(good, SCHEMA) == []
    bad = {"name": "x", "extra": 1, "meds": [{"n": "a", "d": 1}, {"n": "b"}]}
    assert key_set_errors(bad, SCHEMA) == ["<root>: missing [] extra ['extra']", "meds[1]: missing ['d'] extra []"]
    assert key_set_errors({"name": None, "meds": None}, SCHEMA) == []


def test_type_errors_follow_the_schema_types():
    obj = {"name": 5, "meds": [{"n": "a", "d": "3"}, {"n": "b", "d": 3.0}, {"n": None, "d": True}]}
    assert type_errors(obj, SCHEMA) == [
        "name: integer where ['null', 'string'] expected",
        "meds[0].d: string where ['integer', 'null'] expected",
        "meds[2].d: boolean where ['integer', 'null'] expected",
    ]
    assert type_errors({"name": "x", "meds": [], "unknown": 1}, SCHEMA) == []  # extra keys are wrong_keys' business


def test_schema_valid():
    assert schema_valid({"name": "x", "meds": [{"n": "a", "d": 1}]}, SCHEMA)
    assert not schema_valid({"name": "x"}, SCHEMA)
    assert not schema_valid({"name": "x", "meds": [{"n": "a", "d": "1"}]}, SCHEMA)
