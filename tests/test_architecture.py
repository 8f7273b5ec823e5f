"""The package's layers, checked from the source: imports go one way.

Module-level imports form no cycle; the backends reach the loop only through the seam
(`reppo.loop.seam`); the ground floor (envs, runs, config, errors, pytrees, the version) imports
nothing above it and nothing reaches up into the package face; the shared run bookkeeping
imports no framework; nothing imports the command line; no module uses another module's
private name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "reppo"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_main_guard(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The modules `path` imports (names of reppo modules and of outside packages)."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_main_guard(child):
                continue  # `python -m` entry points run the module as a script
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import) and not (top_level_only and in_function):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and not (top_level_only and in_function):
                target = _resolve(module, child, path.name == "__init__.py")
                found.add(target)
                # `from reppo.runs import checkpoint` imports a module too.
                found.update(f"{target}.{alias.name}" for alias in child.names)
            visit(child, nested)

    visit(tree, False)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    return {
        name: {m for m in _imports(path, top_level_only=top_level_only) if m in MODULES}
        for name, path in MODULES.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_builder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_module_level_imports_form_no_cycle():
    graph = _graph(top_level_only=True)
    # A package's __init__ importing its own submodules is not a cycle of layers.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.parametrize("backend", ["reppo.jax", "reppo.torch"])
def test_backends_reach_the_loop_only_through_the_seam(backend):
    for name, path in MODULES.items():
        if name.startswith(backend + "."):
            imported = _imports(path, top_level_only=False)
            loop = sorted(m for m in imported
                          if m.startswith("reppo.loop.") and not m.startswith("reppo.loop.seam"))
            assert not loop, f"{name} imports {loop}; a backend imports only reppo.loop.seam"


def test_run_bookkeeping_imports_no_framework():
    frameworks = {"jax", "torch", "brax", "mujoco", "mujoco_playground", "mani_skill"}
    for name, path in MODULES.items():
        if name.startswith("reppo.runs"):
            top = {m.split(".")[0] for m in _imports(path, top_level_only=True)}
            assert not top & frameworks, f"{name} imports {sorted(top & frameworks)}"


def test_nothing_imports_the_command_line():
    # The command line is the top layer: commands and library code get their errors
    # (`reppo.errors`), the compile cache (`reppo.compile_cache`) and the resume rule
    # (`reppo.config.RESUMABLE_FIELDS`) from below it.
    for name, path in MODULES.items():
        if name != "reppo.cli":
            imported = _imports(path, top_level_only=False)
            assert "reppo.cli" not in imported, f"{name} imports reppo.cli"


# The ground floor: run bookkeeping, envs, config and errors, and the small modules every layer
# may use. They import nothing above them.
GROUND_PACKAGES = ("reppo.envs", "reppo.runs")
GROUND_MODULES = {
    "reppo._version", "reppo.compile_cache", "reppo.config", "reppo.errors",
    "reppo.lazy", "reppo.preset_files", "reppo.presets", "reppo.pytrees",
}


def _is_ground(name: str) -> bool:
    return name in GROUND_MODULES or any(
        name == p or name.startswith(p + ".") for p in GROUND_PACKAGES
    )


def test_the_ground_floor_imports_no_layer_above():
    for name, path in MODULES.items():
        if _is_ground(name):
            above = sorted(
                m for m in _imports(path, top_level_only=False)
                if m in MODULES and m != "reppo" and not _is_ground(m)
            )
            assert not above, f"{name} imports {above} from a layer above the ground floor"


def _face_imports(path: Path) -> list[str]:
    """The names `path` takes from the package face (`reppo/__init__.py`): `import reppo`, or
    `from reppo import name` where the name is not a submodule."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == "reppo"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "reppo":
            found += [a.name for a in node.names if f"reppo.{a.name}" not in MODULES]
    return found


def test_nothing_below_the_face_imports_it():
    # `__version__` lives in `reppo._version`, so code below the face never needs `reppo`.
    assert _face_imports(PACKAGE / "torch" / "export.py") == []
    for name, path in MODULES.items():
        if name != "reppo":
            assert not _face_imports(path), f"{name} imports {_face_imports(path)} from reppo"


def test_the_face_check_sees_an_import_of_the_face(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import reppo\nfrom reppo import __version__, pytrees\n")
    assert _face_imports(probe) == ["reppo", "__version__"]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_names_used(path: Path, module: str) -> set[str]:
    """The other reppo modules' private names `path` uses: `from m import _name`, or
    `m._name` where `m` is a reppo module it imported (`import reppo.x as m`, `from reppo
    import x`). A private module (`reppo._version`) may be imported; its private names not."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: dict[str, str] = {}  # local name -> the reppo module it is bound to
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "reppo":
                    modules[alias.asname or "reppo"] = alias.name if alias.asname else "reppo"
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, path.name == "__init__.py")
            if target.split(".")[0] != "reppo":
                continue
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    modules[alias.asname or alias.name] = f"{target}.{alias.name}"
                elif _is_private(alias.name) and target != module:
                    found.add(f"{target}.{alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain, base = [], node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                owner = ".".join([modules[base.id], *reversed(chain)])
                if owner in MODULES and owner != module:
                    found.add(f"{owner}.{node.attr}")
    return found


def _private_name_uses() -> set[tuple[str, str]]:
    root = SRC.parent
    files = sorted(PACKAGE.rglob("*.py")) + sorted((root / "tests").rglob("*.py"))
    uses = set()
    for path in files:
        module = _module_name(path) if path.is_relative_to(SRC) else ""
        uses |= {(path.relative_to(root).as_posix(), n) for n in _private_names_used(path, module)}
    return uses


def test_no_module_uses_another_modules_private_name():
    uses = sorted(_private_name_uses())
    hint = "make them public, or keep them home"
    assert not uses, f"private names used across modules ({hint}): {uses}"


def test_the_private_name_check_sees_each_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import reppo.runs.plots as plots\n"
        "from reppo.analysis import stats\n"
        "from reppo.cli import _build_parser, main\n"
        "from reppo import _version\n"
        "plots._draw(stats._interval, _version.__version__, main, self._own)\n"
    )
    assert _private_names_used(probe, "probe") == {
        "reppo.runs.plots._draw", "reppo.analysis.stats._interval", "reppo.cli._build_parser",
    }


def test_exit_statuses_come_from_one_mapping():
    from reppo.config import ConfigError
    from reppo.errors import UserError, exit_status
    from reppo.loop.seam import NonFiniteError
    from reppo.runs import RunDirError

    assert exit_status(UserError("x")) == 2
    assert exit_status(ConfigError("x")) == 2
    assert exit_status(RunDirError("x")) == 2
    assert exit_status(NonFiniteError("x")) == 1
    assert exit_status(KeyboardInterrupt()) == 130
    assert exit_status(ValueError("a bug")) is None


def test_registering_an_env_imports_no_framework():
    # reppo.register_env is called at import time of users' env modules: it must stay cheap.
    frameworks = {"jax", "torch", "gymnasium", "mujoco", "mujoco_playground", "numpy"}
    top = {m.split(".")[0] for m in _imports(PACKAGE / "envs" / "user.py", top_level_only=True)}
    assert not top & frameworks, sorted(top & frameworks)


def test_the_envs_package_loads_no_framework_until_an_env_is_built():
    # Its __init__ runs before any of its modules: the catalogue, `register_env` and the
    # contract are reached through it by `reppo envs`, `reppo --help` and users' env modules.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import reppo.envs, reppo.envs.catalog, reppo.envs.user, reppo.envs.eval_seed\n"
        "from reppo.envs import list_envs, register_env, UnknownEnvError, EnvSpec\n"
        "frameworks = ('jax', 'torch', 'numpy', 'gymnasium', 'mujoco')\n"
        "print(sorted(m for m in frameworks if m in sys.modules))\n"
        "from reppo.envs import make_env\n"
        "print('jax' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True"], out.stdout + out.stderr


def test_the_catalog_imports_nothing_but_dataclasses():
    imported = _imports(PACKAGE / "envs" / "catalog.py", top_level_only=False)
    allowed = {"__future__", "__future__.annotations", "dataclasses", "dataclasses.dataclass"}
    assert imported <= allowed, sorted(imported - allowed)


@pytest.mark.parametrize(
    "argv",
    [["envs"], ["report", "docs/results/cpu-smoke-reppo/runs", "--out", "{tmp}/report"],
     ["sweep", "--suite", "cpu-smoke", "--seeds", "2", "--out", "{tmp}/sweep", "--dry-run"]],
    ids=["envs", "report", "sweep-dry-run"],
)
def test_commands_that_need_no_framework_do_not_import_one(argv, tmp_path):
    import subprocess
    import sys

    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = (
        "import sys\n"
        "from reppo.cli import main\n"
        f"status = main({argv!r})\n"
        "loaded = sorted(m for m in ('jax', 'torch', 'brax', 'mujoco') if m in sys.modules)\n"
        "print('LOADED', status, loaded)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=SRC.parent, timeout=300)
    assert "LOADED 0 []" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
