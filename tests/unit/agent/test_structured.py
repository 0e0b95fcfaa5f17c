"""edge_agent.structured: the schema allow-list, and grammars checked against llama.cpp's own grammar engine
(SmolLM2's vocabulary, loaded without weights): which texts the grammar lets a model write."""

import json
from enum import Enum
from typing import Literal

import llama_grammar
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from edge_agent import structured
from edge_agent.client_request import RequestError


@pytest.fixture(scope="module")
def vocab_model(tmp_path_factory):
    return llama_grammar.vocab_model(tmp_path_factory.mktemp("m"))


def accepts(vocab_model, gbnf: str, text: str) -> bool:
    return llama_grammar.accepts(vocab_model, gbnf, text)


class Color(str, Enum):
    red = "red"
    blue = "blue"


class Address(BaseModel):
    street: str = Field(max_length=20)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str
    age: int
    color: Color
    kind: Literal["a", "b"]
    address: Address | None
    tags: list[str]
    Address: str  # a property named like a $defs entry: its own rule, not the entry's


def test_the_openai_sdks_strict_pydantic_schema_is_accepted_and_enforced(vocab_model):
    schema = to_strict_json_schema(Person)
    structured.check_schema(schema, "s")
    gbnf = structured.schema_grammar(schema)
    good = {
        "name": "Ann",
        "age": 31,
        "color": "blue",
        "kind": "a",
        "address": {"street": "Main St 1", "zip": "01234"},
        "tags": ["x", "y"],
        "Address": "free text",
    }
    assert accepts(vocab_model, gbnf, json.dumps(good))
    assert accepts(vocab_model, gbnf, json.dumps({**good, "address": None}))
    assert Person.model_validate_json(json.dumps(good))  # the reference: pydantic agrees
    for bad in (
        {**good, "color": "green"},  # not in the enum
        {**good, "age": "31"},
        {**good, "address": {"street": "Main", "zip": "123"}},  # the pattern
        {**good, "address": {"street": "x" * 21, "zip": "01234"}},  # maxLength
        {k: v for k, v in good.items() if k != "tags"},  # required
        {**good, "extra": 1},  # additionalProperties false
    ):
        assert not accepts(vocab_model, gbnf, json.dumps(bad)), bad


def test_a_json_string_holds_no_raw_control_character(vocab_model):
    """The converter's string admitted a raw newline, which json.loads refuses; the grammar does not."""
    for gbnf in (
        structured.json_object_grammar(),
        structured.schema_grammar({"type": "object", "properties": {"a": {"type": "string"}}}),
    ):
        assert accepts(vocab_model, gbnf, '{"a": "line\\nbreak \\u00e9 \\"q\\""}')
        assert not accepts(vocab_model, gbnf, '{"a": "line\nbreak"}')
        assert not accepts(vocab_model, gbnf, '{"a": "tab\there"}')
    assert '[^"\\\\\\x00-\\x1F]' in structured.json_object_grammar()


def test_json_object_grammar_takes_any_object_and_nothing_else(vocab_model):
    gbnf = structured.json_object_grammar()
    assert accepts(vocab_model, gbnf, '{"a": [1, 2.5, true, null, {"b": "c"}]}')
    assert accepts(vocab_model, gbnf, "{}")
    assert not accepts(vocab_model, gbnf, "[1]")
    assert not accepts(vocab_model, gbnf, '"text"')
    assert not accepts(vocab_model, gbnf, '{"a": 1} trailing')


def test_a_pattern_dot_cannot_end_the_string(vocab_model):
    gbnf = structured.schema_grammar({"type": "string", "pattern": "^a.c$"})
    assert accepts(vocab_model, gbnf, '"abc"')
    assert not accepts(vocab_model, gbnf, '"a"c"')
    assert not accepts(vocab_model, gbnf, '"a\\c"')


def test_recursive_and_formatted_schemas(vocab_model):
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["v", "kids"],
            }
        },
        "$ref": "#/$defs/node",
    }
    structured.check_schema(tree, "s")
    assert accepts(vocab_model, structured.schema_grammar(tree), '{"v": 1, "kids": [{"v": 2, "kids": []}]}')
    dated = {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}, "required": ["d"]}
    assert accepts(vocab_model, structured.schema_grammar(dated), '{"d": "2026-12-05"}')
    assert not accepts(vocab_model, structured.schema_grammar(dated), '{"d": "5 Dec"}')


def test_grammars_are_remembered():
    schema = {"type": "object", "properties": {"remembered": {"type": "boolean"}}}
    first = structured.schema_grammar(schema)
    hits = structured._schema_grammar.cache_info().hits
    assert structured.schema_grammar(json.loads(json.dumps(schema))) is first
    assert structured._schema_grammar.cache_info().hits == hits + 1


@pytest.mark.parametrize(
    "schema, pointer, words",
    [
        ({"type": "integer", "minimum": 0}, "/", "uses 'minimum'"),
        (
            {"type": "object", "properties": {"age": {"type": "number", "multipleOf": 2}}},
            "/properties/age",
            "uses 'multipleOf'",
        ),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "/", "uses 'uniqueItems'"),
        ({"not": {"type": "string"}}, "/", "uses 'not'"),
        ({"type": "object", "patternProperties": {"^a": {}}}, "/", "uses 'patternProperties'"),
        ({"if": {}, "then": {}}, "/", "uses 'if'"),
        (
            {"$defs": {"E": {"type": "string", "format": "email"}}, "$ref": "#/$defs/E"},
            "/$defs/E/format",
            "format 'email'",
        ),
        ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}, "/", "'maxLength' together with 'pattern'"),
        ({"type": ["string", "null"], "maxLength": 3}, "/", "'maxLength' together with a list of types"),
        ({"anyOf": [{"type": "string"}], "type": "string"}, "/", "'type' together with 'anyOf'"),
        ({"$ref": "#/$defs/a", "description": "x", "nullable": True}, "/", "uses 'nullable'"),
        (
            {"type": "object", "properties": {"a": {}}, "required": ["b"]},
            "/required",
            "'b', which is not in 'properties'",
        ),
        ({"$ref": "https://example.com/s.json"}, "/$ref", "only local references"),
        ({"type": "string", "pattern": "[a-z]+"}, "/pattern", "anchored"),
        ({"type": "string", "pattern": "^(?=a)b$"}, "/pattern", "lookaround"),
        ({"type": "string", "pattern": "^\\d+$"}, "/pattern", "only these may be escaped"),
        ({"type": "string", "pattern": '^[^"]$'}, "/pattern", "negated character class"),
        ({"type": "array", "minItems": 1}, "/", "'minItems' is not supported in a schema of type array"),
        (
            {"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "string"}},
            "/",
            "'items' together with 'prefixItems'",
        ),
        ({"type": "object", "properties": {"a": True}}, "/properties/a", "a boolean schema"),
        ({"allOf": [{"type": "string"}]}, "/allOf/0", "an 'allOf' component must be an object schema"),
        ({"maxLength": 2}, "/", 'need "type": "string"'),
        # Counts the converter nests one level per unit: llama.cpp's parser crashed the process at about 20000.
        ({"type": "string", "maxLength": 20000}, "/maxLength", "'maxLength' above 1000"),
        ({"type": "array", "items": {}, "minItems": 1001}, "/minItems", "'minItems' above 1000"),
        ({"type": "string", "pattern": "^a{0,20000}$"}, "/pattern", "quantifier above 1000"),
        ({"type": "string", "pattern": "^" + "(" * 101 + "a" + ")" * 101 + "$"}, "/pattern", "nested deeper than 100"),
    ],
)
def test_what_the_grammar_cannot_enforce_is_refused_naming_the_keyword_and_its_pointer(schema, pointer, words):
    with pytest.raises(RequestError) as info:
        structured.check_schema(schema, "response_format.json_schema.schema")
    error = info.value
    assert (error.status, error.param, error.code) == (400, "response_format.json_schema.schema", "unsupported_schema")
    assert error.message.startswith(f"'response_format.json_schema.schema' at {pointer}: "), error.message
    assert words in error.message, error.message


@pytest.mark.parametrize(
    "schema, words",
    [
        ([], "must be a JSON schema object"),
        ({"type": "text"}, "'type' must be one of"),
        ({"type": "object", "properties": []}, "'properties' must be an object"),
        ({"type": "object", "properties": {"a": {}}, "required": "a"}, "'required' must be a list"),
        ({"$ref": "#/$defs/missing"}, "does not resolve"),
        ({"enum": []}, "'enum' must be a non-empty list"),
        ({"type": "string", "enum": ["a", 1]}, "1 is not of type string"),
        ({"type": "string", "minLength": 3, "maxLength": 2}, "'minLength' is greater than 'maxLength'"),
        ({"anyOf": []}, "non-empty list of schemas"),
        ({"type": "string", "pattern": "^a{x}$"}, "must be a quantifier"),
        ({"type": "string", "pattern": "^a{1,2$"}, "must be a quantifier"),
    ],
)
def test_a_malformed_schema_is_an_invalid_value(schema, words):
    with pytest.raises(RequestError) as info:
        structured.check_schema(schema, "s")
    assert info.value.code == "invalid_value" and words in info.value.message, info.value.message


def test_size_and_depth_are_bounded():
    deep: dict = {"type": "string"}
    for _ in range(70):
        deep = {"type": "array", "items": deep}
    with pytest.raises(RequestError, match="nests deeper than 64"):
        structured.check_schema(deep, "s")
    big = {"type": "string", "enum": ["x" * 1000] * 70}
    with pytest.raises(RequestError, match="at most 65536 are accepted"):
        structured.check_schema(big, "s")


def test_objects_and_grammars_are_bounded():
    many = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(501)}}
    with pytest.raises(RequestError, match="more than 500 properties"):
        structured.check_schema(many, "s")
    nested: dict = {"type": "string"}
    for _ in range(60):
        nested = {"type": "array", "items": nested, "maxItems": 1000}
    structured.check_schema(nested, "s")  # each count is allowed; what they multiply to is not
    with pytest.raises(RequestError, match="at most 1048576 are accepted") as info:
        structured.schema_grammar(nested)
    assert info.value.status == 400 and info.value.code == "unsupported_schema"


def test_annotations_are_accepted_and_left_out_of_the_grammar():
    schema = {
        "title": "T",
        "description": "d",
        "type": "object",
        "properties": {"title": {"type": "string", "default": "x", "examples": ["y"]}},
    }
    structured.check_schema(schema, "s")
    gbnf = structured.schema_grammar(schema)
    assert '"\\"title\\""' in gbnf  # the property named title stays
    assert "examples" not in gbnf


def test_a_const_that_looks_like_a_reference_is_data(vocab_model):
    schema = {"type": "object", "properties": {"c": {"const": {"$ref": "#/nowhere"}}}, "required": ["c"]}
    structured.check_schema(schema, "s")
    assert accepts(vocab_model, structured.schema_grammar(schema), '{"c": {"$ref": "#/nowhere"}}')


# -- every schema the checker accepts converts, and llama.cpp parses the grammar --------------------------

_leaf = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "object"},
        {"type": "array"},
        {},
        {"type": "string", "maxLength": 3},
        {"type": "string", "minLength": 1, "maxLength": 2},
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "uuid"},
        {"type": "string", "pattern": "^[a-c]{2}(x|y)?$"},
        {"type": "string", "pattern": "^a.b$"},
        {"enum": ["a", 1, None, {"k": [True]}]},
        {"const": 'fixed "quote" and \n'},
        {"type": ["string", "null"]},
        {"type": "integer", "minimum": 1},  # refused: exercises the refusal path too
        {"$ref": "#/$defs/shared"},
    ]
)
_names = st.text(alphabet='abcXYZ_- .~/\\"', min_size=1, max_size=6)
schemas = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(
            lambda props, req, extra: {
                "type": "object",
                "properties": props,
                "required": sorted(props)[:req],
                "additionalProperties": extra,
            },
            st.dictionaries(_names, inner, max_size=3),
            st.integers(0, 3),
            st.sampled_from([False, True, {"type": "integer"}]),
        ),
        st.builds(
            lambda items, lo: {"type": "array", "items": items, "minItems": lo, "maxItems": lo + 2},
            inner,
            st.integers(0, 2),
        ),
        st.builds(lambda alts: {"anyOf": alts}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda items: {"type": "array", "prefixItems": items}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(
            lambda props: {"allOf": [{"type": "object", "properties": props}]},
            st.dictionaries(_names, inner, min_size=1, max_size=2),
        ),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas)
def test_every_accepted_schema_becomes_a_grammar_llama_cpp_parses(vocab_model, schema):
    schema = {**schema, "$defs": {"shared": {"type": "object", "properties": {"s": {"type": "string"}}}}}
    try:
        structured.check_schema(schema, "s")
    except RequestError as error:
        assert error.status == 400 and error.code in ("unsupported_schema", "invalid_value")
        return
    gbnf = structured.schema_grammar(schema)
    assert llama_grammar.parses(vocab_model, gbnf), gbnf


def test_the_largest_counts_accepted_still_parse(vocab_model):
    for schema in (
        {"type": "string", "maxLength": 1000},
        {"type": "string", "pattern": "^[ab]{0,1000}$"},
        {"type": "string", "pattern": "^" + "(" * 100 + "a" + ")" * 100 + "$"},
        {"type": "string", "pattern": "^[{(]\\{x\\}$"},  # braces and a paren in a class or escaped: literal
    ):
        structured.check_schema(schema, "s")
        assert llama_grammar.parses(vocab_model, structured.schema_grammar(schema)), schema


def test_what_the_fuzz_found_stays_fixed(vocab_model):
    """A const holding a quote and a newline (the converter left its backslashes unescaped), {} as array items
    (the converter failed on it), and a schema of only $defs (the converter refused it): all convert."""
    const = {"const": 'say "hi"\n'}
    assert accepts(vocab_model, structured.schema_grammar(const), json.dumps('say "hi"\n'))
    any_items = {"type": "array", "items": {}, "maxItems": 2}
    assert accepts(vocab_model, structured.schema_grammar(any_items), '[1, "a"]')
    assert accepts(vocab_model, structured.schema_grammar({"$defs": {"a": {"type": "string"}}}), "true")
