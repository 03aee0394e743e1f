"""The package's architecture, pinned: which package may import which, imports at module top,
only jaxpid.io writes files, public names never shadowed by modules, no import-time side effects
(docs/architecture.md)."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import jaxpid

PACKAGE = Path(jaxpid.__file__).resolve().parent

# package (first part below jaxpid) -> the jaxpid packages its modules may import
ALLOWED = {
    "errors": set(),
    "devices": set(),
    "core": {"core", "errors"},
    "io": {"io", "core", "errors"},
    "sd": {"sd", "core", "io", "errors"},
    "priors": {"priors", "sd", "core", "io", "errors"},
    "demo": {"demo", "sd", "io", "errors"},
    "analysis": {"analysis", "core", "sd", "priors", "errors"},
    "sweeps": {"sweeps", "analysis", "core", "sd", "priors", "io", "devices", "errors"},
    "studies": {"__init__", "studies", "sweeps", "analysis", "core", "sd", "priors", "io", "demo", "devices", "errors"},
    "bench": {"__init__", "bench", "sweeps", "analysis", "core", "sd", "priors", "io", "demo", "devices", "errors"},
    "cli": {"__init__", "cli", "bench", "studies", "sweeps", "analysis", "core", "sd", "priors", "io", "demo", "devices", "errors"},
    "__init__": {"core", "devices", "errors"},
}
HEAVY = ("flax", "transformers", "pyarrow", "matplotlib", "torch")
# Calls that write to the file system; only jaxpid.io may make them.
WRITERS = {"write_text", "write_bytes", "mkdir", "savefig", "savez", "savez_compressed", "save_file", "rmtree",
           "copytree", "copyfile", "unlink", "mkdtemp", "mkstemp", "touch", "TemporaryDirectory"}
OS_WRITERS = {"replace", "rename", "remove", "makedirs"}  # as os.<name>(...)


def modules() -> list[tuple[str, Path]]:
    """(dotted name, path) of every module of the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def jaxpid_imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """(imported jaxpid module, node) for every import statement of jaxpid in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names if alias.name.split(".")[0] == "jaxpid"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxpid":
            found.append((node.module, node))
    return found


def owner(dotted: str) -> str:
    parts = dotted.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


@pytest.mark.parametrize("name, path", modules(), ids=[m[0] for m in modules()])
def test_imports_point_down_the_pipeline_and_sit_at_module_top(name, path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body} | {
        id(child) for node in tree.body if isinstance(node, ast.If) for child in node.body}  # `if TYPE_CHECKING:`
    allowed = ALLOWED[owner(name)]
    for module, node in jaxpid_imports(tree):
        target = owner(module)
        assert target in allowed, f"{name} imports {module}: {owner(name)} may import only {sorted(allowed)}"
        assert id(node) in top_level, f"{name} imports {module} inside a function (line {node.lineno}): at the top"


@pytest.mark.parametrize("name, path", [m for m in modules() if owner(m[0]) not in ("io",)],
                         ids=[m[0] for m in modules() if owner(m[0]) not in ("io",)])
def test_only_jaxpid_io_writes_files(name, path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called == "open" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                assert not set(str(node.args[1].value)) & set("wax+"), f"{name} opens a file for writing (line {node.lineno})"
            assert called not in WRITERS, f"{name} calls {called}() (line {node.lineno}): writes go through jaxpid.io"
            on_os = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "os"
            assert not (on_os and called in OS_WRITERS), f"{name} calls os.{called}() (line {node.lineno})"


def test_the_checks_above_catch_what_they_look_for():
    assert owner("jaxpid.sd.models.unet") == "sd" and owner("jaxpid") == "__init__"
    tree = ast.parse("import os\ndef f():\n    from jaxpid.sd import pipeline\n    p.write_text('x')\n")
    (module, node), = jaxpid_imports(tree)
    assert module == "jaxpid.sd" and node not in tree.body
    assert any(isinstance(n, ast.Attribute) and n.attr in WRITERS for n in ast.walk(tree))


def _fresh(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return out.stdout.strip()


def test_importing_the_core_loads_no_model_or_file_stack():
    code = ("import sys, json, jaxpid.core\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    assert json.loads(_fresh(code)) == []
    # and `import jaxpid` alone is as light (the model edge loads on first use)
    assert json.loads(_fresh(code.replace("jaxpid.core", "jaxpid"))) == []


def test_import_jaxpid_leaves_the_jax_device_count_alone():
    code = "import jax\nbefore = jax.device_count()\nimport jaxpid\nprint(before, jax.device_count())"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("XLA_FLAGS", "JAXPID_CPU_DEVICES")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    before, after = map(int, out.stdout.split())
    assert before == after == 1  # a plain CPU JAX process has one device, and jaxpid keeps it so
    # jaxpid.use_cpu_cores() is the explicit way (the CLI calls it): before JAX starts, it takes effect
    code = "import jaxpid\nasked = jaxpid.use_cpu_cores(2)\nimport jax\nprint(asked, jax.device_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["2", "2"]
    # ... and after JAX started it changes nothing and says so
    code = "import jax\njax.numpy.zeros(1)\nimport jaxpid\nprint(jaxpid.use_cpu_cores(2), jax.device_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["None", "1"]


def test_no_public_name_is_shadowed_by_a_submodule():
    packages = ["jaxpid"] + [f"jaxpid.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)]) if m.ispkg]
    before = {p: {n: getattr(importlib.import_module(p), n) for n in getattr(importlib.import_module(p), "__all__", [])}
              for p in packages}
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="jaxpid."):
        if not info.name.endswith("__main__"):  # running the command is not importing it
            importlib.import_module(info.name)
    for package, names in before.items():
        module = importlib.import_module(package)
        for name, value in names.items():
            now = getattr(module, name)
            assert now is value, f"{package}.{name} changed after importing every submodule: {now!r}"
            assert not isinstance(now, types.ModuleType), f"{package}.{name} is a module"
    # the traps users met: the function, not a module of the same name
    assert callable(jaxpid.pid) and callable(jaxpid.generate) and callable(jaxpid.analyze) and callable(jaxpid.rerun)
    assert callable(jaxpid.core.conditional_pairs)


def test_transformers_notice_about_pytorch_is_silenced():
    """Without torch, transformers prints "PyTorch was not found..." when imported; jaxpid's
    import of its BERT tokenizer drops that one message (and nothing else)."""
    hide_torch = "import sys\nsys.modules['torch'] = None\n"
    plain = subprocess.run([sys.executable, "-c", hide_torch + "import transformers"], capture_output=True, text=True)
    assert "PyTorch was not found" in plain.stderr  # the notice exists: the test below can fail
    code = (hide_torch + "import jaxpid.sd.tokenizer, jaxpid.priors\n"
            "assert 'transformers' not in sys.modules  # imported on first use only\n"
            "from jaxpid.sd.hf_tokenizers import bert_tokenizer_class\nbert_tokenizer_class()\n"
            "assert 'transformers' in sys.modules\n")
    ours = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert "PyTorch was not found" not in ours.stderr
