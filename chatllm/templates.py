"""Prompt templates: YAML files that describe a task or a persona.

A template is data. Its `system` and `prompt` texts are Jinja2 templates rendered
in a sandbox with the declared variables and the user's input as *values*: text
the user supplies is never parsed as template syntax. Loading validates the
file and reports problems as `file:line: message`.
"""

from __future__ import annotations

import difflib
import importlib.resources
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

from chatllm.config.settings import user_templates_dir
from chatllm.engine.base import GenerationParams
from chatllm.errors import TemplateError, UsageError
from chatllm.jobs.schemas import check_schema, short_schema
from chatllm.tools.declarations import McpServer, Tool, ToolError, parse_servers, parse_tools

Kind = Literal["task", "persona"]
InputMode = Literal["required", "optional", "none"]
# Names filled by chatllm itself, never by -v: the user's text, the persona's
# knowledge (in `system`), and passages retrieved for this turn (in `prompt`).
INPUT_VARIABLE = "input"
KNOWLEDGE_VARIABLE = "knowledge"
CONTEXT_VARIABLE = "context"
# In a persona's system prompt and examples: the tools its model may call,
# comma-separated, "" when none (so a rule or an example can depend on them).
TOOL_NAMES_VARIABLE = "tool_names"
# Filled in a persona's fixed texts (fallback, handover, no_order_lookup): the
# order number a customer named, and "zh" when they wrote in Chinese.
ORDER_VARIABLE = "order"
CUSTOMER_LANGUAGE_VARIABLE = "customer_language"
TOP_LEVEL_KEYS = set(
    "name description kind input variables system prompt defaults greeting examples knowledge fallback handover"
    " no_order_lookup labels schema tools mcp_servers".split()
)
VARIABLE_KEYS = {"description", "default", "choices", "required"}
# Generation defaults: every sampling setting, and how the repetition guard
# works for the template (jobs/repetition.py).
# (Not the tools: a template declares those under `tools:` and `mcp_servers:`.)
DEFAULT_KEYS = {f.name for f in fields(GenerationParams)} - {"tools", "tool_choice", "parallel_tool_calls"} | {
    "repetition"
}
REPETITION_MODES = ("strict", "loops", "off")


@dataclass(frozen=True)
class Variable:
    name: str
    description: str = ""
    default: str | None = None
    choices: tuple[str, ...] = ()
    required: bool = False


@dataclass(frozen=True)
class Example:
    user: str
    assistant: str
    # The answer quotes the template's own knowledge: left out when --kb replaces it.
    uses_knowledge: bool = False


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    kind: Kind
    system: str
    prompt: str
    path: Path
    source: str  # "built-in" or "user"
    input: InputMode = "required"
    variables: tuple[Variable, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    greeting: str = ""
    # What a persona says when none of its reply could be kept (jobs/grounding.py).
    fallback: str = ""
    # What a persona adds when its reply declines without offering it (jobs/handover.py).
    handover: str = ""
    # What a persona says to a question about one particular order, which it
    # cannot look up (jobs/orders.py); `{{ order }}` is the number asked about.
    no_order_lookup: str = ""
    examples: tuple[Example, ...] = ()
    knowledge: tuple[Path, ...] = ()
    # Structured output: the labels of a classifier (`chatllm classify -t NAME`),
    # or the JSON Schema every reply must match (a reusable extractor).
    labels: tuple[str, ...] = ()
    schema: dict[str, Any] | None = None
    tools: tuple[Tool, ...] = ()  # what the template brings to call (tools/declarations.py)
    mcp_servers: tuple[McpServer, ...] = ()

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)

    def resolve_variables(self, given: dict[str, str]) -> dict[str, str]:
        """Declared variables with defaults applied; unknown names, values outside
        `choices` and missing required values raise TemplateError."""
        values: dict[str, str] = {}
        for name, value in given.items():
            variable = self.variable(name)
            if variable is None:
                known = ", ".join(v.name for v in self.variables) or "none"
                raise TemplateError(f"template '{self.name}' has no variable '{name}' (its variables: {known})")
            if variable.choices and value not in variable.choices:
                raise TemplateError(
                    f"'{value}' is not a valid {name} for template '{self.name}'; choose one of: {', '.join(variable.choices)}"
                )
            values[name] = value
        for variable in self.variables:
            if variable.name in values:
                continue
            if variable.required:
                raise TemplateError(
                    f"template '{self.name}' needs the variable '{variable.name}'; pass -v {variable.name}=VALUE"
                )
            values[variable.name] = variable.default if variable.default is not None else ""
        return values

    def render_system(self, values: dict[str, str], knowledge: str = "") -> str:
        return _render(self.system, {**values, KNOWLEDGE_VARIABLE: knowledge}, self).strip()

    def render_greeting(self, values: dict[str, str]) -> str:
        return _render(self.greeting, values, self).strip()

    def render_text(self, text: str, values: dict[str, str]) -> str:
        """One of the template's own texts (an example, the fallback) with `values`."""
        return _render(text, values, self).strip()

    def render_prompt(self, values: dict[str, str], input_text: str = "", context: str = "") -> str:
        return _render(self.prompt, {**values, INPUT_VARIABLE: input_text, CONTEXT_VARIABLE: context}, self).strip()


def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _render(text: str, values: dict[str, str], template: Template) -> str:
    import jinja2

    try:
        return _environment().from_string(text).render(**values)
    except jinja2.TemplateError as error:
        raise TemplateError(f"{template.path}: cannot render: {error}") from None


# ---------------------------------------------------------------- loading


def builtin_dir() -> Path:
    return Path(str(importlib.resources.files("chatllm.prompts")))


def user_dir() -> Path:
    return user_templates_dir()


def template_files() -> dict[str, tuple[Path, str]]:
    """Every template name with its file and source; user files override built-ins."""
    found: dict[str, tuple[Path, str]] = {}
    for folder, source in ((builtin_dir(), "built-in"), (user_dir(), "user")):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
                found[path.stem] = (path, source)
    return found


def template_names(kind: Kind | None = None) -> list[str]:
    if kind is None:
        return sorted(template_files())
    return [name for name in sorted(template_files()) if load_template(name).kind == kind]


def template_kind(name: str) -> str | None:
    """A named template's kind from its YAML alone (None if unreadable): shell
    completion asks for it on every <TAB>, without compiling the Jinja."""
    import yaml

    path, _ = template_files()[name]
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return str(document.get("kind", "task")) if isinstance(document, dict) else None


def load_template(name_or_path: str) -> Template:
    """A template by name (user folder first, then built-in) or by path to a YAML file."""
    files = template_files()
    if name_or_path in files:
        path, source = files[name_or_path]
        return load_template_file(path, source)
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_template_file(candidate, "file")

    close = difflib.get_close_matches(name_or_path, files, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `chatllm templates list`"
    raise TemplateError(f"unknown template '{name_or_path}'{hint}")


def load_template_file(path: Path, source: str) -> Template:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TemplateError(f"cannot read template {path}: {error}") from None
    try:
        root = yaml.compose(text)
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise TemplateError(f"{path}{line}: {problem}") from None
    return _TemplateParser(path, source, root, document).parse()


class _TemplateParser:
    """Validates one YAML document, reporting errors with the line they are on."""

    def __init__(self, path: Path, source: str, root: Any, document: Any) -> None:
        self.path = path
        self.source = source
        self.root = root
        self.document = document

    def fail(self, message: str, *keys: str | int) -> TemplateError:
        return TemplateError(f"{self.path}:{self.line_of(*keys)}: {message}")

    def line_of(self, *keys: str | int) -> int:
        import yaml

        node = self.root
        line = node.start_mark.line + 1 if node is not None else 1
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == key), None)
                if match is None:
                    break
                line = match[0].start_mark.line + 1
                node = match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def text(self, key: str, default: str | None = None) -> str:
        value = self.document.get(key, default)
        if value is None:
            raise self.fail(f"missing required key '{key}'")
        if not isinstance(value, str):
            raise self.fail(f"'{key}' must be text", key)
        return value

    def parse(self) -> Template:
        if not isinstance(self.document, dict):
            raise self.fail("a template is a mapping of keys such as name, system and prompt")
        for key in self.document:
            if key not in TOP_LEVEL_KEYS:
                raise self.fail(f"unknown key '{key}' (allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})", key)
        name = self.text("name", self.path.stem)
        kind = self.text("kind", "task")
        if kind not in ("task", "persona"):
            raise self.fail(f"kind must be 'task' or 'persona', not '{kind}'", "kind")
        input_mode = self.text("input", "none" if kind == "persona" else "required")
        if input_mode not in ("required", "optional", "none"):
            raise self.fail("input must be 'required', 'optional' or 'none'", "input")
        variables = self.variables()
        system = self.text("system", "")
        prompt = self.text("prompt", "{{ input }}")
        if kind == "task" and not prompt.strip():
            raise self.fail("a task template needs a 'prompt'", "prompt")
        declared = {v.name for v in variables}
        self.check_jinja(system, "system", declared | {KNOWLEDGE_VARIABLE, TOOL_NAMES_VARIABLE})
        self.check_jinja(prompt, "prompt", declared | {INPUT_VARIABLE, CONTEXT_VARIABLE})
        self.check_jinja(self.text("greeting", ""), "greeting", declared)
        fixed = declared | {ORDER_VARIABLE, CUSTOMER_LANGUAGE_VARIABLE}
        self.check_jinja(self.text("fallback", ""), "fallback", fixed)
        self.check_jinja(self.text("handover", ""), "handover", fixed)
        self.check_jinja(self.text("no_order_lookup", ""), "no_order_lookup", fixed)
        tools, servers = self.tools()
        return Template(
            name=name,
            description=self.text("description", ""),
            kind=cast(Kind, kind),
            system=system,
            prompt=prompt,
            path=self.path,
            source=self.source,
            input=cast(InputMode, input_mode),
            variables=variables,
            defaults=self.defaults(),
            greeting=self.text("greeting", ""),
            fallback=self.text("fallback", ""),
            handover=self.text("handover", ""),
            no_order_lookup=self.text("no_order_lookup", ""),
            examples=self.examples(),
            knowledge=self.knowledge(),
            labels=self.labels(),
            schema=self.schema(),
            tools=tools,
            mcp_servers=servers,
        )

    def tools(self) -> tuple[tuple[Tool, ...], tuple[McpServer, ...]]:
        """`tools:` and `mcp_servers:`, checked as a tools file's are (commands run in the template's folder)."""
        try:
            tools = parse_tools(self.document.get("tools") or [], str(self.path), self.path.parent)
            return tuple(tools), tuple(
                parse_servers(self.document.get("mcp_servers") or [], str(self.path), self.path.parent)
            )
        except ToolError as error:
            raise self.fail(str(error).removeprefix(f"{self.path}: "), "tools") from None

    def variables(self) -> tuple[Variable, ...]:
        raw = self.document.get("variables") or {}
        if not isinstance(raw, dict):
            raise self.fail("'variables' must map each variable name to its settings", "variables")
        result = []
        for name, spec in raw.items():
            if name in (INPUT_VARIABLE, KNOWLEDGE_VARIABLE, CONTEXT_VARIABLE, TOOL_NAMES_VARIABLE):
                raise self.fail(f"'{name}' is filled in by chatllm; choose another variable name", "variables", name)
            spec = spec or {}
            if not isinstance(spec, dict):
                raise self.fail(
                    f"variable '{name}' must be a mapping (description, default, choices, required)", "variables", name
                )
            unknown = set(spec) - VARIABLE_KEYS
            if unknown:
                raise self.fail(f"variable '{name}' has unknown setting '{sorted(unknown)[0]}'", "variables", name)
            choices = spec.get("choices") or []
            if not isinstance(choices, list):
                raise self.fail(f"choices of '{name}' must be a list", "variables", name)
            default = spec.get("default")
            if default is not None and choices and str(default) not in map(str, choices):
                raise self.fail(f"default of '{name}' is not one of its choices", "variables", name)
            result.append(
                Variable(
                    name=str(name),
                    description=str(spec.get("description", "")),
                    default=None if default is None else str(default),
                    choices=tuple(str(c) for c in choices),
                    required=bool(spec.get("required", False)),
                )
            )
        return tuple(result)

    def defaults(self) -> dict[str, Any]:
        raw = self.document.get("defaults") or {}
        if not isinstance(raw, dict):
            raise self.fail("'defaults' must be a mapping", "defaults")
        for key in raw:
            if key not in DEFAULT_KEYS:
                raise self.fail(
                    f"unknown generation default '{key}' (allowed: {', '.join(sorted(DEFAULT_KEYS))})", "defaults", key
                )
        if raw.get("repetition", "loops") not in REPETITION_MODES:
            raise self.fail(f"repetition must be one of {', '.join(REPETITION_MODES)}", "defaults", "repetition")
        return dict(raw)

    def examples(self) -> tuple[Example, ...]:
        raw = self.document.get("examples") or []
        if not isinstance(raw, list):
            raise self.fail("'examples' must be a list of {user, assistant} pairs", "examples")
        result = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict) or not {"user", "assistant"} <= set(item) <= {
                "user",
                "assistant",
                "uses_knowledge",
            }:
                raise self.fail(
                    "each example needs 'user' and 'assistant' (and may say 'uses_knowledge: true')", "examples", index
                )
            self.check_jinja(
                str(item["assistant"]), "examples", {v.name for v in self.variables()} | {TOOL_NAMES_VARIABLE}
            )
            result.append(
                Example(
                    user=str(item["user"]),
                    assistant=str(item["assistant"]),
                    uses_knowledge=bool(item.get("uses_knowledge", False)),
                )
            )
        return tuple(result)

    def labels(self) -> tuple[str, ...]:
        raw = self.document.get("labels")
        if raw is None:
            return ()
        if not isinstance(raw, list) or not raw or not all(isinstance(label, str) and label.strip() for label in raw):
            raise self.fail("'labels' must be a list of label texts", "labels")
        if len({label.casefold() for label in raw}) != len(raw):
            raise self.fail("'labels' has a label twice", "labels")
        return tuple(label.strip() for label in raw)

    def schema(self) -> dict[str, Any] | None:
        """A JSON Schema mapping, or the short field syntax as text."""
        raw = self.document.get("schema")
        if raw is None:
            return None
        try:
            schema = short_schema(raw) if isinstance(raw, str) else raw
            check_schema(schema, "'schema'")
        except UsageError as error:
            raise self.fail(str(error), "schema") from None
        return schema

    def knowledge(self) -> tuple[Path, ...]:
        raw = self.document.get("knowledge") or []
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            raise self.fail("'knowledge' must be a list of file paths", "knowledge")
        paths = []
        for index, item in enumerate(raw):
            path = (self.path.parent / str(item)).expanduser()
            if not path.is_file():
                raise self.fail(
                    f"knowledge file '{item}' not found (paths are relative to the template)", "knowledge", index
                )
            paths.append(path)
        return tuple(paths)

    def check_jinja(self, text: str, key: str, allowed: set[str]) -> None:
        import jinja2
        from jinja2 import meta

        try:
            parsed = _environment().parse(text)
        except jinja2.TemplateSyntaxError as error:
            line = self.line_of(key) + (error.lineno or 1) - (0 if "\n" in text else 1)
            raise TemplateError(f"{self.path}:{line}: {error.message}") from None
        unknown = meta.find_undeclared_variables(parsed) - allowed
        if unknown:
            raise self.fail(
                f"'{key}' uses undeclared variable '{sorted(unknown)[0]}'; declare it under 'variables'", key
            )
