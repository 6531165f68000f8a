"""The code reads from the top down: scripts, then the library, then its ground floor.

No module of the library imports a script or imports itself back through others, and no two
files share a name, so that a name (``study``, ``data``) means one thing.
"""

import ast
import collections
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = "ctsl_brain"
GROUND = "ctsl_brain.dataio"
# The code an exported model carries: below the ground floor, it imports nothing of the project.
INTERFACE = "ctsl_brain.custom_interface"
# What it may import at its top: what SpeechBrain installs, and transformers (pandas and
# onnxruntime only inside the functions that need them).
INTERFACE_IMPORTS = {
    "numpy",
    "soundfile",
    "speechbrain.inference.interfaces",
    "torch",
    "torchaudio",
    "tqdm",
}
STDLIB = sys.stdlib_module_names
SCRIPTS = {
    "train",
    "corpus_prepare",
    "study",
    "msp_podcast_prepare",
    "inspect_encoder",
}


def _tracked(suffix):
    files = subprocess.run(
        ["git", "ls-files"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [
        f
        for f in files
        if f.endswith(suffix) and os.path.isfile(os.path.join(ROOT, f))
    ]


def _imports(path):
    """The top-level names of the modules a file imports, anywhere in it."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as fin:
        tree = ast.parse(fin.read())
    package = os.path.dirname(path).replace("/", ".")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # "from .dataio import x" in ctsl_brain/
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            # "from ctsl_brain import noise" imports the module ctsl_brain.noise
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _module_name(path):
    """``ctsl_brain/demo/corpus.py`` -> ``ctsl_brain.demo.corpus``; a package's
    ``__init__.py`` is the package."""
    name = path[:-3].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _library_graph():
    modules = {
        _module_name(path): path
        for path in _tracked(".py")
        if path.startswith(f"{LIBRARY}/")
    }
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    return modules, graph


def test_the_library_has_no_import_circle():
    _, graph = _library_graph()
    state, circles = {}, []

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                circles.append(
                    " -> ".join([*path[path.index(imported) :], imported])
                )
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(circles)


def _part(module):
    """The subpackage a module belongs to, or None for the top level."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_the_library_shows_its_parts():
    """At most 15 modules at the top; subpackages import nothing at their top."""
    modules, _ = _library_graph()
    top = [m for m, path in modules.items() if path.count("/") == 1]
    assert len(top) <= 15, sorted(top)
    packages = [p for p in modules.values() if p.endswith("/__init__.py")]
    for path in packages:
        assert not _imports(path), f"{path} imports something"


def test_imports_run_down_only():
    """The top level (its command line aside) imports no subpackage, and no
    subpackage imports another: each part stands on the top level alone."""
    modules, graph = _library_graph()
    for module, imported in graph.items():
        for target in imported - {LIBRARY}:
            if _part(target) is None or _part(target) == _part(module):
                continue
            if module == f"{LIBRARY}.__main__":
                continue
            raise AssertionError(f"{module} imports {target}: it runs back up")


def test_the_ground_floor_imports_only_the_exported_interface():
    _, graph = _library_graph()
    assert graph[GROUND] <= {INTERFACE}
    assert graph[INTERFACE] == set()


def test_the_exported_interface_imports_only_what_speechbrain_installs():
    """A model folder must load where only speechbrain and transformers are installed."""
    path = os.path.join(ROOT, *INTERFACE.split(".")) + ".py"
    with open(path, encoding="utf-8") as fin:
        tree = ast.parse(fin.read())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, (
                "the exported interface uses no relative import"
            )
            top.add(node.module)
    third_party = {name for name in top if name.split(".")[0] not in STDLIB}
    assert third_party <= INTERFACE_IMPORTS, third_party - INTERFACE_IMPORTS


def test_the_library_imports_no_script():
    modules, _ = _library_graph()
    for path in modules.values():
        assert not _imports(path) & SCRIPTS, f"{path} imports a script"


def test_one_file_per_name():
    by_name = collections.defaultdict(list)
    for path in _tracked(".py"):
        name = os.path.basename(path)
        if name not in ("__init__.py", "__main__.py"):
            by_name[name].append(path)
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not shared, f"files sharing a name: {shared}"


def _undocumented(path, sections=True):
    """SpeechBrain's docstring form, for one file: public functions, methods and classes have
    a docstring, with an ``Arguments`` section when they take arguments and a ``Returns``
    (or ``Yields``) section when they return a value (unless ``sections`` is false, for the
    recipe scripts, where one line is enough, as in SpeechBrain's recipes); functions defined
    inside functions (the data pipelines) have a docstring."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as fin:
        tree = ast.parse(fin.read())
    found = [] if ast.get_docstring(tree) else [f"{path}: no module docstring"]

    def visit(node, prefix, nested=False):
        for child in ast.iter_child_nodes(node):
            if child.name.startswith("_") if hasattr(child, "name") else True:
                continue
            where = f"{path}:{child.lineno} {prefix}{child.name}"
            doc = ast.get_docstring(child) or ""
            if isinstance(child, ast.ClassDef):
                if not doc:
                    found.append(f"{where}: no docstring")
                visit(child, f"{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = [
                    a.arg
                    for a in child.args.args + child.args.kwonlyargs
                    if a.arg not in ("self", "cls")
                ]
                returns = any(
                    isinstance(n, ast.Return) and n.value is not None
                    for n in ast.walk(child)
                )
                visit(child, f"{child.name}.", nested=True)
                if not doc:
                    found.append(f"{where}: no docstring")
                elif nested or not sections:
                    continue
                elif arguments and "Arguments\n" not in doc:
                    found.append(f"{where}: no Arguments section")
                elif returns and not ("Returns\n" in doc or "Yields\n" in doc):
                    found.append(f"{where}: no Returns section")

    visit(tree, "")
    return found


def test_public_code_is_documented_in_speechbrains_form():
    """Arguments and Returns sections in the library and the tools; a docstring in the
    recipe scripts."""
    scripts = {f"{name}.py" for name in SCRIPTS}
    found = []
    for path in _tracked(".py"):
        if not path.startswith("tests/"):
            found += _undocumented(path, sections=path not in scripts)
    assert not found, "\n".join(found)
