"""The repository stands alone: code, help texts and docs cite no document outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A citation of an outside design document ("SPEC 1.1", "SPEC.md", "(SPEC)"); names such as
# `EnvSpec` or `_SPECS` are code, not citations.
CITATION = re.compile(r"(?<![A-Za-z_])SPEC(?![A-Za-z_])")


def _texts():
    for folder in ("src", "docs", "benchmarks", "examples"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".md", ".txt", ".toml"):
                yield path
    yield ROOT / "README.md"


def test_no_text_cites_an_outside_design_document():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _texts()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if CITATION.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_config_help_cites_no_outside_document():
    from reppo.config import Config, field_help

    for name in Config.__dataclass_fields__:
        assert not CITATION.search(field_help(name)), name


def _readme_commands() -> list[str]:
    """Every `reppo ...` command line of the README's code blocks, comments stripped."""
    lines, in_block = [], False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block and line.startswith("reppo "):
            command = line.split("  #")[0].split(" # ")[0].strip()
            lines.append(command)
    return lines


def test_every_readme_command_parses_with_the_cli():
    import shlex

    from reppo.cli import build_parser

    commands = _readme_commands()
    assert len(commands) >= 15
    parser = build_parser()
    for command in commands:
        words = [w for w in shlex.split(command)[1:] if w != "..."]
        if "--help" in words:  # help exits with 0 after printing: check the command exists
            words = [w for w in words if w != "--help"]
        try:
            parser.parse_args(words)
        except SystemExit as err:  # argparse's way of refusing
            raise AssertionError(f"README command does not parse: {command}") from err


def _cells(line: str) -> int:
    """The cells of a Markdown table row: its unescaped pipes, less the outer ones (a pipe
    inside a code span splits the cell too, as on GitHub)."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return len(re.split(r"(?<!\\)\|", inner))


_SEPARATOR = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?$")


def _table_problems(path: Path) -> list[str]:
    """Each table of `path` without its separator row (second line), or with a row whose cell
    count is not the header's; a table is a run of lines that start with '|'."""
    problems, block, in_code = [], [], False
    lines = path.read_text(encoding="utf-8").splitlines() + [""]
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.lstrip().startswith("|"):
            block.append((number, line))
            continue
        if block:
            (first, header), rows = block[0], block[1:]
            where = f"{path.relative_to(ROOT)}:{first}"
            if not rows or not _SEPARATOR.match(rows[0][1].strip()):
                problems.append(f"{where}: a table without its separator row (| --- |)")
            else:
                problems += [
                    f"{path.relative_to(ROOT)}:{n}: {_cells(row)} cells, the header has "
                    f"{_cells(header)}"
                    for n, row in rows if _cells(row) != _cells(header)
                ]
            block = []
    return problems


def test_every_markdown_table_is_whole():
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    problems = [problem for path in paths for problem in _table_problems(path)]
    assert not problems, "\n".join(problems)


def test_the_readme_layout_names_every_module_and_subpackage():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("\n```\n", layout.index("```") + 3)]
    names = [p.name + ("/" if p.is_dir() else "")
             for p in sorted((ROOT / "src" / "reppo").iterdir())
             if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())]
    missing = [name for name in names if not re.search(rf"(?<![\w/]){re.escape(name)}", layout)]
    assert not missing, f"the README's layout omits {missing}"
