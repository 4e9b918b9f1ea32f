"""gen/ is blind to the experiment config: only gen/config.py (which defines it) and the builders
(gen/data/build.py) import it, so models, metrics, pipelines, evaluation and comparison can be used
from Python with plain arguments."""
import ast

from conftest import ROOT

ALLOWED = {"gen/config.py", "gen/data/build.py"}
CONFIG_NAMES = {"ExperimentConfig", "DataConfig", "ModelConfig", "TrainConfig", "RunConfig", "Pix2PixConfig",
                "CycleGANConfig", "DDPMConfig", "ColorizationConfig", "LogConfig"}


def config_imports(path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] == "config":
            found += [f"from {node.module} import {a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and any(a.name in CONFIG_NAMES for a in node.names):
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name in CONFIG_NAMES]
        elif isinstance(node, ast.Import) and any(a.name == "gen.config" for a in node.names):
            found.append("import gen.config")
    return found


def test_only_the_builders_read_the_experiment_config():
    offenders = {}
    for path in sorted((ROOT / "gen").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel not in ALLOWED and config_imports(path):
            offenders[rel] = config_imports(path)
    assert not offenders, f"modules under gen/ that import the experiment config: {offenders}"
    assert config_imports(ROOT / "gen" / "data" / "build.py")  # the check sees a real import
