"""The algorithm contract as a new maintainer meets it: what register() refuses, light
validation, and docs generated from the same rows the code reads."""
import re
import subprocess
import sys

import pytest

from raysight import algorithms
from raysight.algorithms import base
from raysight.hyperparams import schema_table
from tests.conftest import ROOT


def test_register_names_what_an_algorithm_lacks():
    class Half(base.Algorithm):
        name = "half"
        objective = "validation:score"
        tuning_metrics = ("validation:score",)
        artifact_prefix = "half"
        hyperparameters = [p for p in base.shared_rows() if p.name != "epochs"]
        image_index_channels = ("train_lst", "validation_lst")

        def build_model(self, hp):
            return None

    with pytest.raises(TypeError) as e:
        algorithms.register(Half())
    text = str(e.value)
    for missing in ("hyperparameter 'epochs' (read by the shared runtime) is not declared",
                    "decoder must be a subclass", "method 'criterion' is not supplied",
                    "method 'predictor' is not supplied", "index_rows is not supplied"):
        assert missing in text, text
    assert "build_model" not in text and "half" not in algorithms.names()


def test_built_ins_declare_every_shared_runtime_name():
    for name in ("image-classification", "object-detection"):
        declared = {p.name for p in algorithms.get(name).hyperparameters}
        assert set(base.RUNTIME_REQUIRED) <= declared


def test_overridden_rows_replace_shared_ones():
    od = {p.name: p for p in algorithms.get("object-detection").hyperparameters}
    ic = {p.name: p for p in algorithms.get("image-classification").hyperparameters}
    assert od["learning_rate"].default == 0.001 and ic["learning_rate"].default == 0.1
    assert od["optimizer"].choices == ("sgd", "adam", "rmsprop", "adadelta")
    assert od["epochs"] == ic["epochs"]  # shared, written once
    assert [p.name for p in algorithms.get("image-classification").hyperparameters].count("optimizer") == 1


@pytest.mark.parametrize("name", ["image-classification", "object-detection"])
def test_readme_hyperparameter_tables_are_the_rows(name):
    with open(f"{ROOT}/README.md") as f:
        readme = f.read()
    found = re.search(rf"<!-- hyperparameters:{name} -->\n(.*?)\n<!-- /hyperparameters -->", readme, re.S)
    assert found, f"README has no generated table for {name}"
    assert found.group(1).strip() == schema_table(algorithms.get(name).hyperparameters), \
        f"README table for {name} is stale: paste `raysight hyperparameters {name}`"


LIGHT = r"""
import json, sys
from raysight import cli
code = cli.main(["train", "--validate-only", sys.argv[1]])
cli.main(["hyperparameters", "object-detection"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith(("ray.data", "ray.train")))
print(json.dumps({"code": code, "heavy": heavy[:5]}))
"""


def test_validation_and_the_hyperparameter_table_import_neither_torch_nor_ray_data(tmp_path, digits_small):
    import json

    from raysight.sample_data import digits

    root, counts = digits_small
    request = digits.training_request(root, str(tmp_path), name="light", counts=counts, epochs="0")
    path = tmp_path / "r.json"
    path.write_text(json.dumps(request))
    proc = subprocess.run([sys.executable, "-c", LIGHT, str(path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert "hyperparameter 'epochs' must be >= 1, got '0'" in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 2, "heavy": []}


# ARCHITECTURE.md's layers, bottom (1) to top (7).
LAYERS = {
    1: ("raysight", "raysight.job_request", "raysight.hyperparams", "raysight.formats", "raysight.storage",
        "raysight.workarounds", "raysight.ray_compat", "raysight.confine", "raysight.errors"),
    2: ("raysight.data", "raysight.sources", "raysight.models", "raysight.evaluation", "raysight.images",
        "raysight.collectives", "raysight.artifacts", "raysight.plots"),
    3: ("raysight.algorithms",),
    4: ("raysight.cluster",),
    5: ("raysight.tune", "raysight.train", "raysight.serve", "raysight.transform"),
    6: ("raysight.api",),
    7: ("raysight.cli", "raysight.demo", "raysight.sample_data", "raysight.inspection", "raysight.im2rec",
        "raysight.__main__"),
}


def _layer(module: str) -> int:
    best = max((p for ps in LAYERS.values() for p in ps if module == p or module.startswith(p + ".")), key=len)
    return next(level for level, ps in LAYERS.items() if best in ps)


def _imports() -> dict[str, set[str]]:
    """module → raysight modules it imports anywhere (lazy imports included)."""
    import ast
    import os

    files = {}
    for folder, _, names in os.walk(os.path.join(ROOT, "raysight")):
        for name in names:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                files[rel.removesuffix(".__init__")] = os.path.join(folder, name)
    edges = {}
    for module, path in files.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.startswith("raysight")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("raysight"):
                for a in node.names:
                    out.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module)
        edges[module] = {m for m in out if m in files and m != module}
    return edges


def test_layers_point_down_and_nothing_imports_in_a_circle():
    edges = _imports()
    upward = [f"{a} ({_layer(a)}) imports {b} ({_layer(b)})" for a, bs in edges.items() for b in bs
              if _layer(b) > _layer(a)]
    assert not upward, upward
    assert not [a for a, bs in edges.items() if a.startswith("raysight.serve") and
                any(b.startswith("raysight.train") for b in bs)], "serve must not depend on train"
    assert not [a for a, bs in edges.items() if a.startswith("raysight.algorithms") and
                any(b.startswith("raysight.train") for b in bs)], "algorithms must not depend on train"

    def own(a, b):  # a module naming its own package (`from raysight.algorithms import register`)
        return a.startswith(b + ".")

    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if own(node, nxt):
                continue
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_an_installed_distribution_registers_through_its_entry_point(tmp_path):
    """The entry-point group `raysight.algorithms`, as `pip install` of a plugin package leaves it."""
    info = tmp_path / "digit_is_high_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: digit-is-high-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[raysight.algorithms]\nhigh = digit_is_high\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}/tests/plugins", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "raysight", "hyperparameters", "digit-is-high"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env=env)
    assert proc.returncode == 0 and "| side | no | int | >= 8 | 16 |" in proc.stdout, proc.stderr[-2000:]
    gone = subprocess.run([sys.executable, "-m", "raysight", "hyperparameters", "digit-is-high"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**env, "PYTHONPATH": f"{ROOT}/tests/plugins"})
    assert gone.returncode == 2 and gone.stderr.strip() == ("ClientError: unknown algorithm 'digit-is-high'; "
                                                            "available: image-classification, object-detection")
