"""docs/bad-input.md lists, between <!-- cli-cases --> markers, every bad command line that host_tests/test_cli.py
checks (test_bad_input_refused's table), with the words siq's one-line error must contain. This test fails when the
document and the table differ; `python host_tests/test_bad_input_doc.py` rewrites the document from the table."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "bad-input.md"
START, END = "<!-- cli-cases -->", "<!-- /cli-cases -->"


def cli_cases() -> list[tuple[list[str], str]]:
    """(arguments, expected message) of test_cli.test_bad_input_refused, read from its source (not imported: the
    table is data, and importing the test module would run its fixtures' imports)."""
    tree = ast.parse((HERE / "test_cli.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "test_bad_input_refused":
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize":
                    return [tuple(ast.literal_eval(case)) for case in deco.args[1].elts]
    raise AssertionError("host_tests/test_cli.py has no parametrized test_bad_input_refused")


def render() -> str:
    lines = ["| command line | siq's error contains |", "|---|---|"]
    for args, message in cli_cases():
        shown = " ".join(a.replace("{empty}", "EMPTY/") for a in args).replace("|", "\\|")
        lines.append(f"| `siq {shown}` | `{message.replace('|', chr(92) + '|')}` |")
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
    for name in ("test_cli.py", "test_reliability.py", "test_data.py"):
        if name in text:
            assert (HERE / name).is_file(), name


if __name__ == "__main__":
    DOC.write_text(rewritten(DOC.read_text()))
    sys.exit(0)
