"""Generate docs/config-reference.md and docs/scenario-reference.md from the JSON Schemas.

Every field of every object in the router config's schema
(:func:`router.config.json_schema`) and the scenario's
(:func:`sim.world.scenario.scenario_json_schema`) is rendered with its type, its
constraints, its default and its description, so the references cannot drift from
the code. Run from the repository root after changing a config or scenario model::

    .venv/bin/python docs/gen_reference.py          # rewrite both files
    .venv/bin/python docs/gen_reference.py --check  # exit 1 if either is stale (the tests)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from a checkout

from pydantic import BaseModel  # noqa: E402
from pydantic_core import to_jsonable_python  # noqa: E402

from router.config import RouterConfig, json_schema  # noqa: E402
from sim.world.scenario import Scenario, scenario_json_schema  # noqa: E402

_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("minProperties", "at least {} entries"),
    ("pattern", "matches `{}`"),
)


def _rest_to_markdown(text: str) -> str:
    """Docstring reST to Markdown: roles to code, ``literal`` to `literal`."""
    role = re.compile(r":[a-z]+:`~?([^`<]*?)(?: <[^>]*>)?`")
    text = role.sub(lambda m: f"`{m.group(1).split('.')[-1]}`", text)
    return text.replace("``", "`")


def _paragraphs(text: str) -> str:
    """Docstring paragraphs joined to one line each; bullet items stay one per line."""
    out = []
    for para in _rest_to_markdown(text).split("\n\n"):
        items: list[str] = []
        for line in para.splitlines():
            line = line.strip()
            if not line:
                continue
            if items and not line.startswith(("* ", "- ")):
                items[-1] += " " + line
            else:
                items.append(line)
        if items:
            out.append("\n".join(items))
    return "\n\n".join(out)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    return name.lower()


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _constraints(schema: dict[str, Any]) -> list[str]:
    out = []
    for key, fmt in _CONSTRAINTS:
        if key in schema:
            value = schema[key]
            if key in ("minLength", "minItems", "minProperties") and value == 1:
                out.append("non-empty")
            elif isinstance(value, str):
                out.append(fmt.format(value))
            else:
                out.append(fmt.format(f"{value:g}"))
    return out


def _type(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short Markdown rendering of a property's type and constraints."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        target = defs.get(name, {})
        if "enum" in target and "properties" not in target:
            return _type(target, defs)
        return f"[{name}](#{_anchor(name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            members = [m for m in schema[key] if m.get("type") != "null"]
            nullable = len(members) < len(schema[key])
            text = " or ".join(_type(m, defs) for m in members)
            disc = schema.get("discriminator", {}).get("propertyName")
            if disc:
                text += f" (chosen by `{disc}`)"
            return text + (" or null" if nullable else "")
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    kind = schema.get("type")
    limits = _constraints(schema)
    suffix = f" ({', '.join(limits)})" if limits else ""
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), defs)}{suffix}"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return f"mapping of string to {_type(values, defs)}{suffix}"
        return f"mapping{suffix}"
    names = {"number": "number", "integer": "integer", "string": "string", "boolean": "boolean"}
    return f"{names.get(kind, kind or 'any')}{suffix}"


def _classes(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model class reachable from ``root``, by its schema title (class name)."""

    def concrete(tp: Any) -> list[Any]:
        while typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType, list, dict):
            return [c for a in typing.get_args(tp) for c in concrete(a)]
        return [tp]

    found: dict[str, type[BaseModel]] = {}
    todo: list[Any] = [root]
    while todo:
        cls = todo.pop()
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls.__name__ in found:
            continue
        found[cls.__name__] = cls
        for field in cls.model_fields.values():
            todo.extend(concrete(field.annotation))
    return found


def _default(name: str, prop: dict[str, Any], cls: type[BaseModel] | None) -> str:
    if "default" in prop:
        value = prop["default"]
    elif cls is not None and name in cls.model_fields and not cls.model_fields[name].is_required():
        # A default_factory: the schema leaves it out; the class knows it.
        value = cls.model_fields[name].get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            return "its own defaults"
        value = to_jsonable_python(value)
    else:
        return ""
    text = json.dumps(value, ensure_ascii=False)
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def _object_section(
    name: str, schema: dict[str, Any], defs: dict[str, Any], cls: type[BaseModel] | None, level: str
) -> list[str]:
    lines = [f"{level} {name}", ""]
    if schema.get("description"):
        lines += [_paragraphs(schema["description"]), ""]
    props = schema.get("properties", {})
    required = set(schema.get("required", ()))
    if not props:
        return lines
    lines += ["| field | type | required | default | description |", "|---|---|---|---|---|"]
    for field, prop in props.items():
        description = prop.get("description", "")
        if not description and "$ref" in prop:
            description = f"see [{_ref_name(prop['$ref'])}](#{_anchor(_ref_name(prop['$ref']))})"
        lines.append(
            f"| `{field}` | {_cell(_type(prop, defs))} | {'yes' if field in required else 'no'} "
            f"| {_cell(_default(field, prop, cls))} | {_cell(_rest_to_markdown(description))} |"
        )
    extra = schema.get("additionalProperties")
    lines += [
        "",
        "Unknown fields are rejected." if extra is False else "Other fields are allowed.",
        "",
    ]
    return lines


def _order(schema: dict[str, Any]) -> list[str]:
    """Definition names in the order a reader meets them (breadth-first from the root)."""
    defs = schema.get("$defs", {})
    seen: list[str] = []
    queue = [{k: v for k, v in schema.items() if k != "$defs"}]
    while queue:
        node = queue.pop(0)
        for ref in re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(node)):
            if ref not in seen:
                seen.append(ref)
                queue.append(defs[ref])
    return seen + sorted(n for n in defs if n not in seen)


def render(
    title: str, intro: str, schema: dict[str, Any], root: type[BaseModel], root_name: str
) -> str:
    defs = schema.get("$defs", {})
    classes = _classes(root)
    lines = [
        f"# {title}",
        "",
        "<!-- Generated by docs/gen_reference.py from the JSON Schema; do not edit by hand. -->",
        "",
        intro,
        "",
    ]
    lines += _object_section(root_name, schema, defs, root, "##")
    enums = []
    for name in _order(schema):
        node = defs[name]
        if "properties" in node:
            lines += _object_section(name, node, defs, classes.get(name), "##")
        else:
            enums.append((name, node))
    for name, node in enums:
        lines += [f"## {name}", ""]
        if node.get("description"):
            lines += [_paragraphs(node["description"]), ""]
        lines += [_type(node, defs), ""]
    return "\n".join(lines).rstrip() + "\n"


def outputs() -> dict[Path, str]:
    return {
        HERE / "config-reference.md": render(
            "Router config reference",
            "The file `sim init DIR` writes as `router.yaml`, `optimize export` writes, and "
            "`router.live.Router.from_config` loads (YAML, JSON or TOML by extension). "
            "Latencies are in milliseconds, prices in USD. The JSON Schema itself: "
            "`router.config.json_schema()`. See the [user guide](guide.md) for how the "
            "pieces fit.",
            json_schema(),
            RouterConfig,
            "RouterConfig (the top level)",
        ),
        HERE / "scenario-reference.md": render(
            "Scenario reference",
            "The file `sim init DIR` writes as `scenario.yaml`: the simulated providers "
            "`sim replay`, `sim serve` and `optimize run` use (YAML, or JSON by a `.json` "
            "extension). Times are in seconds, prices in USD. A distribution is chosen by "
            "its `dist` field: a latency defaults to `lognormal`, an outage's "
            "`time_between` to `exponential` and its `duration` to `lognormal`. The JSON "
            "Schema itself: `sim.world.scenario.scenario_json_schema()`. See the "
            "[user guide](guide.md).",
            scenario_json_schema(),
            Scenario,
            "Scenario (the top level)",
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run .venv/bin/python docs/gen_reference.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
