"""MkDocs hooks: the reference pages are generated from the code at build time, never written twice.

A page holds a marker such as ``<!-- generated: cli -->``; ``on_page_markdown`` replaces it with
Markdown made from the typer app (typer's own doc generator), the node registry's config schemas or
the FastAPI app's OpenAPI schema. ``on_files`` adds every ``how-to/*.md`` missing from the nav to
its How-to section, the OpenAPI document, and the Mermaid bundle the package ships (so no page
loads anything from the internet). Every ``weflow ...`` line of a shell example on any page is
checked against the CLI, and every whole definition in a YAML example against ``weflow apply``'s
checks (but those an operator's setting would lift, whose message names a ``WEFLOW_`` variable): a
command or option the CLI does not have, or a refused definition, is a warning (an error with --strict).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import textwrap
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

HOW_TO = "How-to guides"
log = logging.getLogger("mkdocs.hooks.weflow")
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")
STATIC = Path(__file__).parent / "weflow" / "api" / "static"


# --- files and nav -----------------------------------------------------------------


def on_files(files: Files, config: MkDocsConfig) -> Files:
    _add_unlisted_how_tos(files, config)
    files.append(File.generated(config, "assets/mermaid.min.js", abs_src_path=str(STATIC / "mermaid.min.js")))
    files.append(File.generated(config, "reference/openapi.json", content=json.dumps(_openapi(), indent=2)))
    return files


def _add_unlisted_how_tos(files: Files, config: MkDocsConfig) -> None:
    """Other pages land in docs/how-to/ without touching mkdocs.yml: each joins the How-to section."""
    listed = set(_nav_paths(config.nav or []))
    section = next((item[HOW_TO] for item in config.nav or [] if isinstance(item, dict) and HOW_TO in item), None)
    if section is None:
        return
    for file in sorted(files.documentation_pages(), key=lambda f: f.src_uri):
        if file.src_uri.startswith("how-to/") and file.src_uri not in listed:
            section.append(file.src_uri)


def _nav_paths(items: Iterable[Any]) -> Iterable[str]:
    for item in items:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for value in item.values():
                yield from _nav_paths(value if isinstance(value, list) else [value])


# --- commands in shell examples must exist -------------------------------------------

SHELL = {"", "bash", "console", "sh", "shell"}
WEFLOW_CALL = re.compile(r"(?:^|[;&|(]|\$\()\s*(?:[A-Z_]+=\S*\s+)*(?:\S*/)?weflow\s+([^#|;&)\n]*)")


def _command_problems(markdown: str) -> list[str]:
    """Each ``weflow ...`` line of a shell example whose command or option the CLI does not have."""
    import shlex

    problems = []
    for line in _shell_lines(markdown):
        for call in WEFLOW_CALL.findall(line.strip().removeprefix("$ ")):
            try:
                words = shlex.split(call)
            except ValueError:
                words = call.split()
            problem = _check_call(words)
            if problem:
                problems.append(f"`weflow {call.strip()}`: {problem}")
    return problems


def _shell_lines(markdown: str) -> Iterable[str]:
    for language, text in _fences(markdown):
        if language in SHELL:
            yield from text.splitlines()


def _fences(markdown: str) -> Iterable[tuple[str, str]]:
    """Each fenced code block of a page: its language and its text."""
    fence, language, lines = "", "", list[str]()
    for line in markdown.splitlines():
        opening = re.match(r"\s*(`{3,}|~{3,})\s*([\w-]*)", line)
        if not fence and opening:
            fence, language, lines = opening.group(1), opening.group(2), []
        elif fence and line.strip() == fence:
            yield language, textwrap.dedent("\n".join(lines))
            fence = ""
        elif fence:
            lines.append(line)


def _definition_problems(markdown: str) -> list[str]:
    """What ``weflow apply`` would refuse in each whole definition (``name:`` and ``nodes:``) of a YAML example."""
    from weflow.core.document import parse
    from weflow.errors import DefinitionError, WeflowError
    from weflow.workflows import check

    problems = []
    documents = [d for lang, text in _fences(markdown) if lang == "yaml" for d in re.split(r"^---$", text, flags=re.M)]
    for text in documents:
        if re.search(r"^name:", text, re.M) and re.search(r"^nodes:", text, re.M):
            try:
                check(parse(text, "example"))
            except DefinitionError as exc:
                # what only the operator's settings allow (buckets, modules, hosts) is fine in an example
                found = [f"{path}: {message}" for path, message in exc.problems if "WEFLOW_" not in message]
                problems += [f"a definition example is refused: {p}" for p in found]
            except WeflowError as exc:
                problems.append(f"a definition example is refused: {exc}")
    return problems


@cache
def _root_command() -> Any:
    import typer

    from weflow.cli.app import app

    return typer.main.get_command(app)


def _check_call(words: list[str]) -> str | None:
    import typer
    from typer.core import TyperGroup

    root = command = _root_command()
    known = {o for p in root.params for o in p.opts}
    for word in words:
        if isinstance(command, TyperGroup) and not word.startswith("-"):
            sub = command.get_command(typer.Context(command), word)
            if sub is None:
                return f"no command {word!r}"
            command = sub
            known |= {o for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
        elif word.startswith("-") and word != "-" and word.split("=")[0] not in known | {"--help"}:
            return f"no option {word.split('=')[0]}"
    return None


# --- generated sections ------------------------------------------------------------


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    for problem in [*_command_problems(markdown), *_definition_problems(markdown)]:
        log.warning("Doc file '%s': %s", page.file.src_uri, problem)
    if page.file.src_uri == "reference/environment.md":
        return markdown.replace("<!-- generated: environment -->", _environment(files))
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


ENV_NAME = re.compile(r"\b(?:WEFLOW_[A-Z0-9_]+|WORKFLOW_[A-Z]+_QUEUE)\b")
INTERNAL_ENV = {  # read by weflow, set by weflow for its own child processes: nothing for a user to set
    "WEFLOW_API_BODY_LIMIT": "weflow serve --body-limit, passed to the server process",
    "WEFLOW_SERVER_HOME": "marks the processes of a Prefect home's local server",
}


def _environment(files: Files) -> str:
    """Every variable the package reads, with the pages that explain it (found in the pages' text)."""
    package = Path(__file__).parent / "weflow"
    names = sorted({n for f in package.rglob("*.py") for n in ENV_NAME.findall(f.read_text())})
    pages = [f for f in files.documentation_pages() if f.src_uri != "reference/environment.md"]
    rows = []
    for name in names:
        if name in INTERNAL_ENV:
            rows.append([f"`{name}`", f"internal: {INTERNAL_ENV[name]}"])
            continue
        where = [f for f in pages if re.search(rf"\b{name}\b", f.content_string)]
        links = ", ".join(f"[{_title(f)}](../{f.src_uri})" for f in where)
        rows.append([f"`{name}`", links or "not documented yet"])
    return _table(["variable", "explained in"], rows)


def _title(file: File) -> str:
    heading = re.search(r"^# (.+)$", file.content_string, re.M)
    return heading.group(1).strip() if heading else file.src_uri


def _cli() -> str:
    """The whole command tree, by typer's own Markdown generator (``typer ... utils docs``)."""
    import typer
    from typer.cli import get_docs_for_click

    from weflow.cli.app import app

    command = typer.main.get_command(app)
    text = get_docs_for_click(obj=command, ctx=typer.Context(command), indent=1, name="weflow")
    return _escape_html(text)


def _nodes() -> str:
    """Each node type with its config fields, from its pydantic config model's JSON schema."""
    from weflow.nodes.registry import node_types

    out = []
    for kind in ("source", "transform", "python", "validate", "sink"):
        for t in sorted((t for t in node_types().values() if t.kind == kind), key=lambda t: t.name):
            inputs = _inputs(t.inputs, t.variadic, t.min_inputs)
            about = f"{_cell(t.description)}\n\n**Kind:** {kind} · **Inputs:** {inputs}"
            out.append(_schema(f"`{t.name}`", t.config.model_json_schema(), "##", about))
    # a secret-capable field's type names the reference model: say what a user writes instead
    return re.sub(r"\[SecretRef\]\(#secretref\)", "`{secret: NAME}`", "\n".join(out))


def _inputs(ports: tuple[str, ...], variadic: bool, minimum: int) -> str:
    if not ports:
        return "none"
    if variadic:
        return f"any number (at least {minimum})"
    return "one" if len(ports) == 1 else "ports " + ", ".join(f"`{p}`" for p in ports)


@cache
def _openapi() -> dict[str, Any]:
    from weflow.api.app import create_app

    with tempfile.TemporaryDirectory() as tmp:  # the app opens a catalog; never this checkout's
        return create_app(Path(tmp) / "docs.duckdb").openapi()


def _rest_api() -> str:
    spec = _openapi()
    out = [f"OpenAPI {spec['openapi']}, {spec['info']['title']} {spec['info']['version']}.\n", "## Routes\n"]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            out.append(_operation(method.upper(), path, op))
    out.append("## Schemas\n")
    out += [_schema(name, schema, "###") for name, schema in spec.get("components", {}).get("schemas", {}).items()]
    return "\n".join(out)


def _definition() -> str:
    """Every field of a definition document, from the pydantic model ``apply`` checks against."""
    from weflow.core.model import Definition

    schema = Definition.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    models = {"Definition": schema, **schema.pop("$defs", {})}
    return "\n".join(_schema(name, s, "###") for name, s in models.items())


def _schema(name: str, schema: dict[str, Any], level: str, description: str | None = None) -> str:
    required = set(schema.get("required", []))
    rows = [
        [
            f"`{prop}`",
            _escape_html(_schema_type(s) + _bounds(s)),
            "yes" if prop in required else "",
            "" if "default" not in s else f"`{json.dumps(s['default'])}`",
            _cell(s.get("description", "")),
        ]
        for prop, s in schema.get("properties", {}).items()
    ]
    header = ["field", "type", "required", "default", "description"]
    if not any(row[-1] for row in rows):  # most models describe their fields in their docstring only
        header, rows = header[:-1], [row[:-1] for row in rows]
    table = _table(header, rows) if rows else "No config fields.\n"
    text = _escape_html(schema.get("description", "")) if description is None else description
    return f"{level} {name}\n\n{text}\n\n{table}"


BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<", "maxLength": "length <="}


def _bounds(schema: dict[str, Any]) -> str:
    """A field's limits (``ge``, ``gt``, ``le``, ``max_length``), also inside ``X or null``."""
    parts = [schema, *schema.get("anyOf", [])]
    found = [f"{sign} {p[key]}" for p in parts for key, sign in BOUNDS.items() if key in p]
    return f" ({', '.join(found)})" if found else ""


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    out = [f"### `{method} {path}`\n", _cell(op.get("summary", "")) + "\n"]
    if op.get("description"):
        out.append(_escape_html(op["description"]) + "\n")
    params = [
        [f"`{p['name']}`", p["in"], "yes" if p.get("required") else "", _schema_type(p.get("schema", {}))]
        for p in op.get("parameters", [])
    ]
    if params:
        out.append(_table(["parameter", "in", "required", "type"], params))
    body = op.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        out.append(f"**Body** ({media}): {_schema_type(content.get('schema', {}))}\n")
    responses = [
        [f"`{code}`", _cell(r.get("description", "")), _response_type(r)] for code, r in op.get("responses", {}).items()
    ]
    out.append(_table(["status", "meaning", "body"], responses))
    return "\n".join(out)


def _response_type(response: dict[str, Any]) -> str:
    content = response.get("content", {})
    return ", ".join(f"{_schema_type(c.get('schema', {}))} ({media})" for media, c in content.items())


def _schema_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " or ".join(_schema_type(s) for s in schema[key])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_schema_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"map of {_schema_type(extra) if isinstance(extra, dict) else 'any'}"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    return str(kind)


# --- Markdown helpers --------------------------------------------------------------


def _escape_html(text: str) -> str:
    """Help texts say ``<API key>`` or ``<path>``: shown as text, not swallowed as HTML tags (code kept as is)."""
    parts = re.split(r"(```.*?```|`[^`\n]*`)", text, flags=re.S)
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;") for p in parts)


def _cell(text: str) -> str:
    return _escape_html(" ".join(str(text).split()))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": _cli,
    "definition": _definition,
    "nodes": _nodes,
    "rest-api": _rest_api,
}
