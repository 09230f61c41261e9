"""docs/bad-input.md lists, between <!-- cli-cases --> markers, every bad command line that the tables of TABLES
check (host_tests/test_cli.py's command-line cases, host_tests/test_preflight.py's pre-flight cases), with
the words siq's one-line error must contain, and the architecture files those cases use. This test fails when the
document and the tables differ; `python host_tests/test_bad_input_doc.py` rewrites the document from the tables."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "bad-input.md"
START, END = "<!-- cli-cases -->", "<!-- /cli-cases -->"


# (test file, parametrized test whose (arguments, message) table is listed)
TABLES = (("test_cli.py", "test_bad_input_refused"), ("test_preflight.py", "test_preflight_refused"))
# how the tables' placeholders for files and folders made by the tests are shown
SHOWN = {"{empty}": "EMPTY/", "{model}": "model.pt", "{checkpoint}": "float.pt", "{export}": "EXPORT/",
         "{idx:no-test-images}": "IDX-WITHOUT-TEST-IMAGES/"}


def _tree(name: str) -> ast.Module:
    """A test module's syntax tree (not imported: the tables are data, and importing would run its imports)."""
    return ast.parse((HERE / name).read_text())


def table(name: str, test: str) -> list[tuple[list[str], str]]:
    for node in _tree(name).body:
        if isinstance(node, ast.FunctionDef) and node.name == test:
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize":
                    return [tuple(ast.literal_eval(case)) for case in deco.args[1].elts]
    raise AssertionError(f"host_tests/{name} has no parametrized {test}")


def cli_cases() -> list[tuple[list[str], str]]:
    """(arguments, expected message) of every table in TABLES, in order."""
    return [case for name, test in TABLES for case in table(name, test)]


def arch_files() -> dict[str, str]:
    """test_preflight.ARCH_FILES: the architecture files its table names as {arch:NAME}."""
    for node in _tree("test_preflight.py").body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARCH_FILES":
            return ast.literal_eval(node.value)
    raise AssertionError("host_tests/test_preflight.py has no ARCH_FILES")


def _shown(arg: str) -> str:
    if arg.startswith("{arch:"):
        return f"{arg[6:-1]}.toml"
    return SHOWN.get(arg, arg)


def render() -> str:
    lines = ["| command line | siq's error contains |", "|---|---|"]
    for args, message in cli_cases():
        shown = " ".join(map(_shown, args)).replace("|", "\\|")
        lines.append(f"| `siq {shown}` | `{message.replace('|', chr(92) + '|')}` |")
    lines += ["", "The architecture files named above:", ""]
    for name, text in arch_files().items():
        lines.append(f"- `{name}.toml`: `{' '.join(text.split())}`")
    return "\n".join(lines)


def rewritten(text: str) -> str:
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{render()}\n{END}{tail}"


def test_bad_input_doc_lists_every_checked_command_line():
    text = DOC.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    assert rewritten(text) == text, "docs/bad-input.md is stale: run python host_tests/test_bad_input_doc.py"
    assert len(cli_cases()) >= 20


def test_bad_input_doc_names_only_tests_that_exist():
    text = DOC.read_text()
    assert "xfail" not in text
    for name in ("test_cli.py", "test_reliability.py", "test_data.py", "test_preflight.py", "test_integrity.py",
                 "test_signals.py", "test_cli_fuzz.py", "test_cleanup.py"):
        if name in text:
            assert (HERE / name).is_file(), name


if __name__ == "__main__":
    DOC.write_text(rewritten(DOC.read_text()))
    sys.exit(0)
