"""Structured output: a client's JSON schema checked against what the grammar can enforce, and turned into a GBNF
grammar (llama.cpp's) that lets the model write only JSON the schema accepts.

The conversion is llama-cpp-python's ``SchemaConverter``. It ignores keywords it does not know, and some it
knows are ignored next to others (``maxLength`` next to ``pattern``); an output made under such a grammar may
not validate. So :func:`check_schema` accepts a schema only when every keyword in it is one the conversion
enforces in that place, and otherwise names the keyword and its JSON pointer in a 400. Annotations (title,
description, default, examples, ...) are accepted and dropped before the conversion.

Two corrections to the converter's output: its JSON string character admits raw control characters (a newline
in a string makes the JSON invalid), and a pattern's ``.`` admits ``"`` and ``\\``; both are narrowed.
Pure: nothing here touches the model; the engine parses the grammar (``LlamaBackend.check_grammar``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from llama_cpp.llama_grammar import DOT, PRIMITIVE_RULES, SchemaConverter

from edge_agent.client_request import RequestError

# Kept by the conversion's rules only as documentation: accepted anywhere, removed before converting.
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "discriminator",
    }
)
_CONTAINERS = ("$defs", "definitions")
JSON_TYPES = ("string", "number", "integer", "boolean", "null", "array", "object")
STRING_FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5")
# Every keyword the conversion enforces somewhere (which one, where, is checked per schema below).
SUPPORTED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "pattern",
        "format",
        "minLength",
        "maxLength",
        *_CONTAINERS,
    }
)
# What {} means (any JSON value), in a form the converter reads so.
_ANY = {"type": list(JSON_TYPES)}
# The converter writes a count as nested optional groups, one per unit: llama.cpp's grammar parser recurses once
# per level and crashed the process (SIGSEGV) at about 20000; 1000 parses. A pattern's groups nest the same way.
MAX_REPEAT = 1000
MAX_PATTERN_GROUP_DEPTH = 100
MAX_SCHEMA_BYTES = 64 * 1024
# The converter's object rule costs the square of an object's properties (and recurses once per property).
MAX_PROPERTIES = 500
# What one grammar may grow to (nested counts multiply: 60 arrays of up to 1000 items made 9.6 MB).
MAX_GRAMMAR_BYTES = 1024 * 1024
MAX_DEPTH = 64

# A JSON string's character: the converter's admits control characters (U+0000-U+001F), which JSON forbids raw.
_CHAR_RULE = r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
# A pattern's "." inside a JSON string: not a quote, backslash or control character (it would end or break it).
_DOT_RULE = r'[^"\\\x00-\x1F]'
# Patterns: anchored, and no construct whose GBNF translation could write an unescaped quote or backslash.
_PATTERN_ESCAPABLE = set("[]()|{}*+?")


def check_schema(schema: Any, param: str) -> None:
    """Refuse (400, naming ``param``, the JSON pointer and the keyword) a schema whose every keyword is not
    enforced by :func:`schema_grammar`."""
    if not isinstance(schema, dict):
        raise RequestError(f"'{param}' must be a JSON schema object", param)
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError) as exc:  # a NaN or a cycle cannot come from JSON, but a caller may pass one
        raise RequestError(f"'{param}' is not JSON: {exc}", param) from exc
    if size > MAX_SCHEMA_BYTES:
        raise RequestError(f"'{param}' is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are accepted", param)
    _Checker(schema, param).node(schema, "", 0)


def schema_grammar(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar (root rule ``root``) of JSON that ``schema`` accepts; call :func:`check_schema` first."""
    param = "response_format.json_schema.schema"
    try:
        return _schema_grammar(json.dumps(schema), param)  # property order matters to the grammar: no sort_keys
    except RequestError:
        raise
    except Exception as exc:  # the converter asserts (and python -O strips asserts): never a 500 for a schema
        raise RequestError(f"the JSON schema could not be turned into a grammar: {exc}", param) from exc


def check_size(gbnf: str, param: str | None) -> str:
    if len(gbnf) > MAX_GRAMMAR_BYTES:
        raise RequestError(
            f"the schema makes a grammar of {len(gbnf)} bytes; at most {MAX_GRAMMAR_BYTES} are accepted "
            "(lower its counts: maxLength, maxItems, nesting)",
            param,
            code="unsupported_schema",
        )
    return gbnf


def json_object_grammar() -> str:
    """The GBNF grammar of any JSON object (``response_format`` ``json_object``)."""
    return _schema_grammar(json.dumps({"type": "object"}), "response_format")


@lru_cache(maxsize=128)
def _schema_grammar(schema_json: str, param: str) -> str:
    converter = new_converter()
    converter.visit(prepare(converter, json.loads(schema_json)), "")
    return check_size(format_grammar(converter), param)  # raises: an oversized grammar is never kept


# -- conversion helpers (edge_agent.tools builds one grammar of several schemas with them) --------------


class _Converter(SchemaConverter):
    """The converter with two fixes: a literal's backslashes are escaped, and a ``$ref`` gets a rule name of its
    own (the original names the rule after the ref's last segment and reuses any rule already of that name: a
    property called like a ``$defs`` entry got the property's rule)."""

    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        self._ref_rules: dict[str, str] = {}

    def _format_literal(self, literal: str) -> str:
        # The original leaves backslashes as they are: the literal of a JSON string holding an escaped quote
        # (a const or enum value, a property name) ended early and the grammar did not parse.
        escaped = literal.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n")
        return f'"{escaped}"'

    def _resolve_ref(self, ref: str) -> str:
        rule = self._ref_rules.get(ref)
        if rule is None:
            base = "ref-" + re.sub(r"[^a-zA-Z0-9-]+", "-", ref.split("/")[-1])
            rule = base
            i = 0
            while rule in self._rules:
                i += 1
                rule = f"{base}{i}"
            self._ref_rules[ref] = rule  # before visiting: a recursive schema refers to itself by this name
            visited = self.visit(self._refs[ref], rule)
            if visited != rule:  # a primitive keeps its own name ("string"): alias it
                self._rules[rule] = visited
        return rule


def new_converter() -> SchemaConverter:
    return _Converter()


def prepare(converter: SchemaConverter, schema: Mapping[str, Any], url: str = "schema") -> dict[str, Any]:
    """A copy of a checked schema without annotations, its local refs resolved into ``converter`` under ``url``
    (one per schema: two schemas' "#/$defs/A" are different rules)."""
    stripped = _strip(schema)
    # The converter's own resolve_refs does not look inside a node holding a $ref (a root "$ref" next to
    # "$defs" leaves the refs in $defs unresolved): every local ref is registered here instead, and the
    # $defs containers removed (the converter would read a schema of only "$defs" as unknown).
    defs: list[dict[str, Any]] = []

    def register(node: Any) -> None:
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str):
            target: Any = stripped
            for segment in ref[2:].split("/"):
                target = target[segment]
            node["$ref"] = f"{url}{ref}"
            converter._refs[node["$ref"]] = target
        for key, value in node.items():
            if key in ("properties", *_CONTAINERS):  # maps of names to schemas
                for sub in value.values():
                    register(sub)
            elif key in ("items", "prefixItems", "anyOf", "oneOf", "allOf", "additionalProperties"):
                for sub in value if isinstance(value, list) else [value]:
                    register(sub)
        if any(container in node for container in _CONTAINERS):
            defs.append(node)

    register(stripped)
    for node in defs:  # after every ref is resolved: a ref's path runs through them
        for container in _CONTAINERS:
            node.pop(container, None)
        if not node:
            node.update(_ANY)
    return stripped


def format_grammar(converter: SchemaConverter) -> str:
    """The converter's rules, the string character and the pattern dot narrowed (see the module docstring)."""
    rules = converter._rules
    for name, rule in list(rules.items()):
        if rule == PRIMITIVE_RULES["char"].content:
            rules[name] = _CHAR_RULE
        elif rule == DOT:
            rules[name] = _DOT_RULE
    return str(converter.format_grammar())


def _strip(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ANNOTATIONS:
            continue
        if key in ("properties", *_CONTAINERS):  # maps of names to schemas: the names are data
            out[key] = {name: _strip(sub) for name, sub in value.items()}
        elif key in ("enum", "const"):  # values: data
            out[key] = value
        else:
            out[key] = _strip(value)
    return out or dict(_ANY)  # the converter reads {} as any object, and fails on it as "items"


# -- the allow-list ---------------------------------------------------------------------------------


class _Checker:
    def __init__(self, root: Mapping[str, Any], param: str):
        self.root = root
        self.param = param

    def fail(self, pointer: str, message: str, unsupported: bool = True) -> RequestError:
        where = f"'{self.param}' at {pointer or '/'}"
        return RequestError(
            f"{where}: {message}",
            self.param,
            code="unsupported_schema" if unsupported else "invalid_value",
        )

    def node(self, schema: Any, pointer: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.fail(pointer, f"the schema nests deeper than {MAX_DEPTH}")
        if isinstance(schema, bool):
            raise self.fail(pointer, "a boolean schema is not supported here; write {} or a typed schema")
        if not isinstance(schema, dict):
            raise self.fail(pointer, f"a schema must be an object, got {_json_type(schema)}", unsupported=False)
        for key in schema:
            if key not in SUPPORTED and key not in ANNOTATIONS:
                raise self.fail(
                    pointer,
                    f"uses '{key}', which structured output does not support "
                    f"(supported: {', '.join(sorted(SUPPORTED - set(_CONTAINERS)))})",
                )
        for container in _CONTAINERS:
            if container in schema:
                defs = schema[container]
                if not isinstance(defs, dict):
                    raise self.fail(pointer, f"'{container}' must be an object of schemas", unsupported=False)
                for name, sub in defs.items():
                    self.node(sub, f"{pointer}/{container}/{_escape(name)}", depth + 1)
        self.kind(schema, pointer, depth)

    def only(self, schema: Mapping[str, Any], pointer: str, allowed: set[str], context: str) -> None:
        """Refuse a keyword the conversion would ignore next to ``context``."""
        for key in schema:
            if key not in allowed and key not in ANNOTATIONS and key not in _CONTAINERS:
                raise self.fail(pointer, f"'{key}' together with {context} is not supported")

    def kind(self, schema: Mapping[str, Any], pointer: str, depth: int) -> None:
        """Which of the conversion's cases takes ``schema`` (in its own order), and that case's keywords checked."""
        kind_type = schema.get("type")
        if kind_type is not None and not isinstance(kind_type, list) and kind_type not in JSON_TYPES:
            raise self.fail(
                f"{pointer}/type", f"'type' must be one of {', '.join(JSON_TYPES)}, got {kind_type!r}", False
            )
        if "$ref" in schema:
            self.only(schema, pointer, {"$ref"}, "'$ref'")
            self.ref(schema["$ref"], f"{pointer}/$ref")
        elif "anyOf" in schema or "oneOf" in schema:
            if "anyOf" in schema and "oneOf" in schema:
                raise self.fail(pointer, "'anyOf' together with 'oneOf' is not supported")
            key = "anyOf" if "anyOf" in schema else "oneOf"
            self.only(schema, pointer, {key}, f"'{key}'")
            self.schemas(schema[key], f"{pointer}/{key}", depth)
        elif isinstance(kind_type, list):
            if not kind_type or any(t not in JSON_TYPES for t in kind_type) or len(set(kind_type)) != len(kind_type):
                raise self.fail(
                    f"{pointer}/type", f"a list of types must hold distinct names of {', '.join(JSON_TYPES)}", False
                )
            self.only(schema, pointer, {"type"}, "a list of types (write anyOf of typed schemas)")
        elif "const" in schema:
            self.only(schema, pointer, {"const", "type"}, "'const'")
            self.values([schema["const"]], kind_type, f"{pointer}/const")
        elif "enum" in schema:
            self.only(schema, pointer, {"enum", "type"}, "'enum'")
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise self.fail(f"{pointer}/enum", "'enum' must be a non-empty list", False)
            self.values(schema["enum"], kind_type, f"{pointer}/enum")
        elif kind_type in (None, "object") and (
            "properties" in schema or ("additionalProperties" in schema and schema["additionalProperties"] is not True)
        ):
            self.only(schema, pointer, {"type", "properties", "required", "additionalProperties"}, "'properties'")
            self.object(schema, pointer, depth)
        elif kind_type in (None, "object") and "allOf" in schema:
            self.only(schema, pointer, {"type", "allOf"}, "'allOf'")
            self.all_of(schema["allOf"], f"{pointer}/allOf", depth)
        elif kind_type in (None, "array") and ("items" in schema or "prefixItems" in schema):
            self.array(schema, pointer, depth)
        elif kind_type in (None, "string") and "pattern" in schema:
            self.only(schema, pointer, {"type", "pattern"}, "'pattern'")
            self.pattern(schema["pattern"], f"{pointer}/pattern")
        elif kind_type in (None, "string") and "format" in schema:
            self.only(schema, pointer, {"type", "format"}, "'format'")
            if schema["format"] not in STRING_FORMATS:
                raise self.fail(
                    f"{pointer}/format",
                    f"format {schema['format']!r} is not supported (supported: {', '.join(STRING_FORMATS)})",
                )
        elif "minLength" in schema or "maxLength" in schema:
            if kind_type != "string":
                raise self.fail(pointer, "'minLength' and 'maxLength' need \"type\": \"string\"")
            self.only(schema, pointer, {"type", "minLength", "maxLength"}, "'minLength'/'maxLength'")
            self.bounds(schema, pointer, "minLength", "maxLength")
        else:
            described = [
                key
                for key in schema
                if key not in ANNOTATIONS
                and key not in _CONTAINERS
                and not (key == "additionalProperties" and schema[key] is True and kind_type in (None, "object"))
            ]
            if described and described != ["type"]:
                first = next(key for key in described if key != "type")
                raise self.fail(pointer, f"'{first}' is not supported in a schema of type {kind_type or 'any'}")

    def schemas(self, value: Any, pointer: str, depth: int) -> None:
        if not isinstance(value, list) or not value:
            raise self.fail(pointer, "must be a non-empty list of schemas", False)
        for i, sub in enumerate(value):
            self.node(sub, f"{pointer}/{i}", depth + 1)

    def object(self, schema: Mapping[str, Any], pointer: str, depth: int) -> None:
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise self.fail(f"{pointer}/properties", "'properties' must be an object of schemas", False)
        if len(properties) > MAX_PROPERTIES:
            raise self.fail(
                f"{pointer}/properties", f"more than {MAX_PROPERTIES} properties in one object is not supported"
            )
        for name, sub in properties.items():
            self.node(sub, f"{pointer}/properties/{_escape(name)}", depth + 1)
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise self.fail(f"{pointer}/required", "'required' must be a list of property names", False)
        missing = [r for r in required if r not in properties]
        if missing:
            raise self.fail(
                f"{pointer}/required", f"'required' names {missing[0]!r}, which is not in 'properties' (not supported)"
            )
        extra = schema.get("additionalProperties", False)
        if isinstance(extra, dict):
            self.node(extra, f"{pointer}/additionalProperties", depth + 1)
        elif not isinstance(extra, bool):
            raise self.fail(f"{pointer}/additionalProperties", "must be a boolean or a schema", False)

    def all_of(self, value: Any, pointer: str, depth: int) -> None:
        """The conversion merges allOf's object components' properties (all required) and allows nothing else."""
        if not isinstance(value, list) or not value:
            raise self.fail(pointer, "must be a non-empty list of schemas", False)
        for i, component in enumerate(value):
            where = f"{pointer}/{i}"
            target = component
            if isinstance(component, dict) and "$ref" in component:
                self.only(component, where, {"$ref"}, "'$ref'")
                target = self.ref(component["$ref"], f"{where}/$ref")
            if not isinstance(target, dict) or "properties" not in target or target.get("type", "object") != "object":
                raise self.fail(where, "an 'allOf' component must be an object schema with 'properties'")
            self.only(target, where, {"type", "properties", "required"}, "'allOf'")
            self.node(component, where, depth + 1)

    def array(self, schema: Mapping[str, Any], pointer: str, depth: int) -> None:
        items = schema.get("items")
        if "prefixItems" in schema:
            if items not in (None, False):
                raise self.fail(pointer, "'items' together with 'prefixItems' is not supported")
            self.only(schema, pointer, {"type", "prefixItems", "items"}, "'prefixItems'")
            self.schemas(schema["prefixItems"], f"{pointer}/prefixItems", depth)
        elif isinstance(items, list):
            self.only(schema, pointer, {"type", "items"}, "a list of 'items'")
            self.schemas(items, f"{pointer}/items", depth)
        else:
            self.only(schema, pointer, {"type", "items", "minItems", "maxItems"}, "'items'")
            self.node(items, f"{pointer}/items", depth + 1)
            self.bounds(schema, pointer, "minItems", "maxItems")

    def bounds(self, schema: Mapping[str, Any], pointer: str, low_key: str, high_key: str) -> None:
        low, high = schema.get(low_key, 0), schema.get(high_key)
        for key, value in ((low_key, low), (high_key, high)):
            if value is not None and (not _is_int(value) or value < 0):
                raise self.fail(f"{pointer}/{key}", f"'{key}' must be a non-negative integer", False)
        if high is not None and low > high:
            raise self.fail(pointer, f"'{low_key}' is greater than '{high_key}'", False)
        for key, value in ((low_key, low), (high_key, high)):
            if value is not None and value > MAX_REPEAT:
                raise self.fail(f"{pointer}/{key}", f"'{key}' above {MAX_REPEAT} is not supported")

    def values(self, values: list[Any], kind_type: Any, pointer: str) -> None:
        if kind_type is None:
            return
        for value in values:
            if not _has_type(value, kind_type):
                raise self.fail(pointer, f"{value!r} is not of type {kind_type}", False)

    def ref(self, ref: Any, pointer: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/") or "~" in ref or "%" in ref:
            raise self.fail(pointer, f"only local references like '#/$defs/Name' are supported, got {ref!r}")
        target: Any = self.root
        for segment in ref[2:].split("/"):
            if not isinstance(target, dict) or segment not in target:
                raise self.fail(pointer, f"the reference {ref!r} does not resolve", False)
            target = target[segment]
        if not isinstance(target, dict):
            raise self.fail(pointer, f"the reference {ref!r} is not a schema", False)
        return target

    def pattern(self, pattern: Any, pointer: str) -> None:
        if not isinstance(pattern, str) or not pattern.startswith("^") or not pattern.endswith("$") or len(pattern) < 2:
            raise self.fail(pointer, "a pattern must be a string anchored with '^' and '$'")
        body = pattern[1:-1]
        if "(?" in body:
            raise self.fail(pointer, "lookaround, non-capturing groups and flags are not supported in a pattern")
        if "[^" in body:
            raise self.fail(pointer, "a negated character class ([^...]) is not supported in a pattern")
        if '"' in body or any(ord(c) < 0x20 for c in body):
            raise self.fail(pointer, "a quote or a control character is not supported in a pattern")
        depth = deepest = 0
        i = 0
        while i < len(body):
            c = body[i]
            if c == "\\":
                if i + 1 >= len(body) or body[i + 1] not in _PATTERN_ESCAPABLE:
                    raise self.fail(
                        pointer,
                        "in a pattern only these may be escaped with a backslash: "
                        f"{''.join(sorted(_PATTERN_ESCAPABLE))} (no \\d, \\w, \\s, \\.: write [0-9], ...)",
                    )
                i += 2
                continue
            if c == "[":  # a class is copied as it is: skip to its end
                i += 1
                while i < len(body) and body[i] != "]":
                    i += 2 if body[i] == "\\" else 1
            elif c == "{":
                close = body.find("}", i)
                counts = [part.strip() for part in body[i + 1 : close].split(",")] if close > 0 else []
                if not 1 <= len(counts) <= 2 or counts == [""] or not all(n.isdigit() or n == "" for n in counts):
                    raise self.fail(pointer, "a '{' in a pattern must be a quantifier like {2} or {1,3}", False)
                if any(n and int(n) > MAX_REPEAT for n in counts):
                    raise self.fail(pointer, f"a pattern quantifier above {MAX_REPEAT} is not supported")
                i = close
            elif c == "(":
                depth += 1
                deepest = max(deepest, depth)
            elif c == ")":
                depth -= 1
            elif c in "^$":
                raise self.fail(pointer, "'^' and '$' are supported only at the pattern's ends")
            i += 1
        if deepest > MAX_PATTERN_GROUP_DEPTH:
            raise self.fail(
                pointer, f"groups nested deeper than {MAX_PATTERN_GROUP_DEPTH} in a pattern are not supported"
            )


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_type(value: Any, kind: str) -> bool:
    checks = {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "integer": _is_int,
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    return bool(checks[kind](value))


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
