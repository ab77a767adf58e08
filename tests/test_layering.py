"""Lower layers never import higher ones: the package does not import data_prep (the dataset
tools) or its sampling and evaluation CLI modules, whatever the import style (top level or inside a function)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vidgan"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_package_never_imports_data_prep_or_its_clis():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "generate.py" and path.parent == PACKAGE:
            continue
        for name in _imports(path):
            if name.split(".")[0] == "data_prep" or name.startswith("vidgan.generate") or \
                    (name.startswith("vidgan.evaluate") and path.name != "evaluate.py"):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_loop_sits_on_top_of_the_training_modules():
    """vidgan/train: the loop uses the run directory, logging, loss, EMA and optimiser modules;
    none of them imports the loop (or the package's __init__, which imports the loop)."""
    offenders = []
    for path in sorted((PACKAGE / "train").glob("*.py")):
        if path.name in ("loop.py", "__init__.py"):
            continue
        for name in _imports(path):
            if name == "vidgan.train" or name.startswith("vidgan.train.loop") or \
                    name in ("vidgan.train.Trainer", "vidgan.train.train"):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)
    assert {"rundir.py", "logs.py"} <= {p.name for p in (PACKAGE / "train").glob("*.py")}
