"""How privsplit installs and starts: a lazy top-level package, a command line whose --help
needs no torch, the torch-free edge distribution, version ranges with exact pins kept aside."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EDGE_SRC = ROOT / "src" / "privsplit_edge"
EDGE_DEPS = {"numpy", "onnxruntime", "pillow", "simplejpeg"}
HEAVY = ("torch", "torchvision", "yaml")


def run_python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _commands() -> list[str]:
    from privsplit.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(sub.choices)


def help_imports(command: str) -> list[str]:
    """The heavy modules loaded by ``privsplit --help`` (command "") or ``privsplit COMMAND --help``
    in a fresh process."""
    code = (
        "import contextlib, io, json, sys\n"
        "from privsplit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        f"    main({[command, '--help'] if command else ['--help']!r})\n"
        "assert 'usage: privsplit' in out.getvalue(), out.getvalue()[:200]\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    return json.loads(run_python(code))


@pytest.mark.parametrize("command", ["", *_commands()])
def test_help_does_not_import_torch(command):
    """``privsplit --help`` and ``privsplit COMMAND --help`` load neither torch nor PyYAML."""
    loaded = help_imports(command)
    assert loaded == [], f"privsplit {command} --help imported {loaded[:5]}"


@pytest.mark.slow
def test_import_privsplit_is_lazy_and_keeps_its_public_names():
    out = run_python(
        "import sys, privsplit\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'yaml')], 'import privsplit loaded torch'\n"
        "names = list(privsplit.__all__)\n"
        "import privsplit.train.engine  # binds the subpackage privsplit.train: the name must stay the function\n"
        "from privsplit import train, load_config, Trainer, TrainConfig, Config, evaluate_run\n"
        "assert callable(train) and train is privsplit.train and train.__module__ == 'privsplit.train.engine'\n"
        "assert all(getattr(privsplit, n) is not None for n in names) and set(names) <= set(dir(privsplit))\n"
        "print(len(names), len(set(names)))\n"
    )
    n, unique = map(int, out.split())
    assert n == unique >= 40
    import privsplit

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        privsplit.nope  # noqa: B018


def test_cli_defaults_match_the_library():
    """The command line states a few constants of torch-importing modules, for its --help."""
    from privsplit.cli import export as cli_export
    from privsplit.cli import infer as cli_infer
    from privsplit.cli import serve as cli_serve
    from privsplit.export import FORMATS
    from privsplit.serve import server
    from privsplit.serve.client import BACKENDS

    assert cli_export.FORMATS == FORMATS and cli_infer.BACKENDS == BACKENDS
    for name in ("DEFAULT_MAX_BATCH", "DEFAULT_BODY_TIMEOUT", "DEFAULT_HEADER_TIMEOUT", "DEFAULT_KEEP_ALIVE",
                 "DEFAULT_MAX_CONNECTIONS"):
        assert getattr(cli_serve, name) == getattr(server, name), name
    from privsplit.attacks.base import AttackOptions
    from privsplit.cli import build_parser

    for command in ("evaluate", "attack"):
        args = build_parser().parse_args([command, "RUN"] + (["--attack", "inversion"] if command == "attack" else []))
        for name in ("inversion_steps", "inversion_lr", "inversion_tv"):
            assert getattr(args, name) == getattr(AttackOptions, name), (command, name)


def test_edge_package_imports_only_the_standard_library_and_its_dependencies():
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "PIL", "simplejpeg", "privsplit_edge"}
    found = {}
    for path in EDGE_SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    assert {m: f for m, f in found.items() if m not in allowed} == {}


def test_edge_client_runs_with_torch_and_privsplit_unimportable():
    """Every module of privsplit_edge, and its command's --help, with torch, PyYAML and privsplit blocked."""
    modules = sorted(f"privsplit_edge.{p.stem}" for p in EDGE_SRC.glob("*.py") if p.stem not in ("__init__", "__main__"))
    out = run_python(
        "import contextlib, io, sys\n"
        "for name in ('torch', 'torchvision', 'yaml', 'privsplit'): sys.modules[name] = None  # import raises\n"
        f"import privsplit_edge, {', '.join(modules)}\n"
        "from privsplit_edge import EdgeClient\n"
        "from privsplit_edge.client import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['infer', '--help'])\n"
        "print(out.getvalue().splitlines()[0])\n"
    )
    assert out.startswith("usage: privsplit-edge infer ")


@pytest.fixture(scope="module")
def edge_wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The privsplit-edge wheel, built from a copy of edge/ and src/privsplit_edge (the build
    writes its metadata next to the project file: not in this checkout)."""
    setuptools = pytest.importorskip("setuptools", reason="building the edge wheel here needs setuptools")
    if int(setuptools.__version__.split(".")[0]) < 68:
        pytest.skip(f"edge/pyproject.toml builds with setuptools>=68; this venv has {setuptools.__version__}")
    tmp = tmp_path_factory.mktemp("edge-dist")
    (tmp / "edge").mkdir()
    shutil.copy(ROOT / "edge" / "pyproject.toml", tmp / "edge")
    shutil.copytree(EDGE_SRC, tmp / "src" / "privsplit_edge", ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(tmp / "edge"),
                        "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp / "dist").glob("privsplit_edge-*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.slow
def test_edge_distribution_is_the_client_alone(edge_wheel):
    files = edge_wheel.namelist()
    package = sorted(f for f in files if not f.startswith("privsplit_edge-"))
    assert package == sorted(f"privsplit_edge/{p.name}" for p in EDGE_SRC.glob("*.py")), package
    info = next(f for f in files if f.endswith(".dist-info/METADATA"))
    meta = edge_wheel.read(info).decode()
    requires = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    runtime = {re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in requires if "extra ==" not in r}
    assert runtime == EDGE_DEPS, requires
    entry_points = edge_wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert re.findall(r"^(\S+) = (\S+)$", entry_points, re.M) == [("privsplit-edge", "privsplit_edge.client:main")]


def test_edge_dependencies_agree_and_privsplit_pins_only_in_constraints():
    main = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    edge = tomllib.loads((ROOT / "edge" / "pyproject.toml").read_text())["project"]
    assert sorted(edge["dependencies"]) == sorted(main["optional-dependencies"]["edge"])
    assert edge["version"] == main["version"]
    assert edge["scripts"] == {"privsplit-edge": main["scripts"]["privsplit-edge"]}
    # Ranges in the package (a user's torch stays), the exact versions in constraints.txt.
    torch_deps = [d for d in main["dependencies"] if d.startswith(("torch", "torchvision"))]
    assert len(torch_deps) == 2 and not any("==" in d for d in torch_deps), torch_deps
    pins = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(pins) and all("==" in p for p in pins), pins
    declared = main["dependencies"] + [d for ds in main["optional-dependencies"].values() for d in ds]
    assert not any("==" in d for d in declared), "exact versions belong in constraints.txt, not in the package"


def test_readme_and_ci_install_with_the_constraints():
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    assert "pip install -c constraints.txt -e '.[dev]'" in first, first
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -c constraints.txt -e '.[dev]'" in ci
    assert "pip install ./edge" in readme
