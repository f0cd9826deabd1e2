"""The README is a map and docs/ holds the rest; these tests keep them honest with the code.

1. Every relative link in README.md and docs/*.md points to a file that exists, and an anchor, if given,
   to a heading of that file (GitHub's heading ids).
2. README.md stays a map: at most README_MAX_LINES lines, no machine-specific paths.
3. Settings: every setting name the README and docs/settings.md name (ALL_CAPS names in backticks, and
   every backticked name in the first column of docs/settings.md's tables) is read by the code: it is a
   string literal (or the `%NAME%` of a trigger binding) somewhere under shared/ or tools/. Conversely
   every setting the app reads (an env reader's literal anywhere under shared/, a `%NAME%` binding, or a
   setting-like literal in shared/core/settings.py, however that module is arranged) is in
   docs/settings.md.
4. Every HTTP route the app registers is a row of the README's API table, with its method.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SETTINGS_DOC = DOCS / "settings.md"
README_MAX_LINES = 250

SETTING_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")  # ARM_ENDPOINT, EVENT_WEBHOOKS, ...
BACKTICKED_SETTING = re.compile(r"`(" + SETTING_NAME.pattern + r")`")
ENV_READERS = [  # how code under shared/ reads a setting by name
    re.compile(r"""\b_(?:str|int|list|bool|float)\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""\benviron\.get\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""\benviron\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\]"""),
    re.compile(r"""\bgetenv\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
]
SETTING_LIKE = re.compile(SETTING_NAME.pattern + r"|AzureWebJobs[A-Za-z]*(?:__[A-Za-z]+)?")
BINDING = re.compile(rf"^%({SETTING_LIKE.pattern})%")  # queue_name="%OPERATIONS_QUEUE%-poison", schedule=...
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MACHINE_PATHS = re.compile(r"/work/|/home/|/Users/|/tmp/|[A-Z]:\\\\|farm-studio", re.IGNORECASE)


# -- helpers (each takes the repository root, so a broken copy can be checked too) ---------------------------

def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks (their brackets and backticks are code, not links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's heading id: markdown markup and punctuation dropped, lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(root: Path) -> list[str]:
    problems = []
    for doc in doc_files(root):
        for target in LINK.findall(prose(doc.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            where = f"{doc.relative_to(root)}: ({target})"
            if not file.exists():
                problems.append(f"{where}: no file {path}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                problems.append(f"{where}: no heading #{anchor} in {file.relative_to(root)}")
    return problems


def readme_problems(root: Path) -> list[str]:
    lines = (root / "README.md").read_text(encoding="utf-8").splitlines()
    problems = [f"README.md has {len(lines)} lines; a map has at most {README_MAX_LINES}"] \
        if len(lines) > README_MAX_LINES else []
    problems += [f"README.md:{n}: machine-specific path or tool name: {line.strip()}"
                 for n, line in enumerate(lines, 1) if MACHINE_PATHS.search(line)]
    return problems


@cache
def string_literals(root: Path) -> frozenset[str]:
    """Every string constant in the Python under shared/ and tools/ (docstrings included, but a name only
    counts when a literal is exactly that name, or a `%NAME%` binding)."""
    found: set[str] = set()
    for folder in ("shared", "tools"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
    return frozenset(found)


def read_by_code(root: Path, name: str) -> bool:
    literals = string_literals(root)
    return name in literals or any((m := BINDING.match(s)) and m[1] == name for s in literals)


def settings_table_names(root: Path) -> set[str]:
    """The backticked names in the first column of docs/settings.md's tables."""
    names: set[str] = set()
    for line in (root / "docs" / "settings.md").read_text(encoding="utf-8").splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2 and not set(cells[1].strip()) <= set("-: "):
            names.update(re.findall(r"`([^`]+)`", cells[1]))
    return names - {"Setting"}


def documented_setting_names(root: Path) -> set[str]:
    """Setting names the README and docs/settings.md name."""
    names = settings_table_names(root)
    for doc in (root / "README.md", root / "docs" / "settings.md"):
        names.update(BACKTICKED_SETTING.findall(prose(doc.read_text(encoding="utf-8"))))
    return names


def settings_the_code_reads(root: Path) -> set[str]:
    names: set[str] = set()
    for path in (root / "shared").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for reader in ENV_READERS:
            names.update(reader.findall(text))
    names.update(m[1] for s in string_literals(root) if (m := BINDING.match(s)))
    settings_module = root / "shared" / "core" / "settings.py"
    for node in ast.walk(ast.parse(settings_module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SETTING_LIKE.fullmatch(node.value):
            names.add(node.value)
    return names


def unknown_settings(root: Path) -> list[str]:
    """Documented names the code never reads."""
    return sorted(n for n in documented_setting_names(root) if not read_by_code(root, n))


def undocumented_settings(root: Path) -> list[str]:
    """Settings the code reads that docs/settings.md does not name."""
    text = (root / "docs" / "settings.md").read_text(encoding="utf-8")
    return sorted(n for n in settings_the_code_reads(root) if f"`{n}`" not in text)


def literal(expr: ast.expr, constants: dict[str, ast.expr]) -> str:
    """The string a route or method expression builds from literals and the module's constants."""
    if isinstance(expr, ast.Constant):
        return str(expr.value)
    if isinstance(expr, ast.Name):
        return literal(constants[expr.id], constants)
    if isinstance(expr, ast.BinOp):
        return literal(expr.left, constants) + literal(expr.right, constants)
    if isinstance(expr, ast.JoinedStr):
        return "".join(literal(v.value if isinstance(v, ast.FormattedValue) else v, constants) for v in expr.values)
    raise AssertionError(f"cannot read {ast.dump(expr)}")


def http_routes(root: Path) -> list[tuple[str, str]]:
    """(method, route) of every HTTP trigger under shared/functions, read from the decorators."""
    routes = []
    for path in sorted((root / "shared" / "functions").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "route":
                args = {k.arg: k.value for k in node.keywords}
                methods = args["methods"]
                assert isinstance(methods, ast.List), path.name
                routes += [(literal(m, constants), literal(args["route"], constants)) for m in methods.elts]
    return routes


VM_ID = ("subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
         "/providers/Microsoft.Compute/virtualMachines/{vmName}")
ARC_ID = ("subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
          "/providers/Microsoft.HybridCompute/machines/{machineName}")


def routes_missing_from_readme(root: Path) -> list[str]:
    rows = [line for line in (root / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    missing = []
    for method, route in http_routes(root):
        path = "/api/" + route.replace(VM_ID, "{vmId}").replace(ARC_ID, "{arcId}")
        pattern = re.compile(rf"`{method} {re.escape(path)}(?:\?[^`]*)?`")
        if not any(pattern.search(row) for row in rows):
            missing.append(f"{method} {path}")
    return missing


# -- the tests -----------------------------------------------------------------------------------------------

def test_every_relative_link_points_to_a_file_and_heading_that_exist() -> None:
    assert (DOCS / "settings.md").exists()
    assert broken_links(ROOT) == []


def test_the_readme_is_a_short_map() -> None:
    assert readme_problems(ROOT) == []


def test_every_documented_setting_is_read_by_the_code() -> None:
    names = documented_setting_names(ROOT)
    assert {"ARM_ENDPOINT", "OPERATIONS_QUEUE", "AzureWebJobsStorage"} <= names  # the extraction finds them
    assert unknown_settings(ROOT) == []


def test_every_setting_the_code_reads_is_in_docs_settings() -> None:
    read = settings_the_code_reads(ROOT)
    assert {"ARM_ENDPOINT", "SWEEP_SCHEDULE", "WEBSITE_HOSTNAME", "AzureWebJobsStorage__tableServiceUri"} <= read
    assert undocumented_settings(ROOT) == []


def test_every_http_route_is_in_the_readme_api_table() -> None:
    routes = http_routes(ROOT)
    assert ("POST", "runs") in routes and len(routes) >= 26
    assert routes_missing_from_readme(ROOT) == []
