"""No module outside satkern/patching/ (nor its adapters) touches a Patch private name or replaces a patch's attributes by hand:
they talk to a patch through its public API (observers, the adapter API, the documented attributes)."""
import ast
from pathlib import Path

import torch

from satkern.patching.core import Patch

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("satkern", "benchmarks")
PATCHING = ROOT / "satkern" / "patching"
# the patch and its own observers may use its internals; the adapters (hf.py, s3prl.py) and the package's
# patch() use the public adapter API like any other code
SCANNED_IN_PATCHING = ("__init__.py", "hf.py", "s3prl.py")
# private names of the patch that code outside patching/ used before the observer and adapter APIs existed
HISTORICAL = {"_which", "_keep", "_spans", "_shared", "_add_layers", "_finish_setup", "_set_instance_attr", "_undo",
              "_rows", "_lengths", "_labels", "_labels_used", "_chunks", "_nan", "_record",
              "_record_chunk", "_keep_on", "_host_lengths", "_want_gates", "_num_slots", "_prune_arg", "_span_arg"}
PATCH_FACTORIES = {"patch", "Patch"}  # satkern.patch(...), satkern.patching.patch(...), Patch(...)


class _Attn(torch.nn.Module):
    num_heads = 2


def patch_private_names() -> set:
    """Private names of Patch (class and instance) and of the observers it installs, plus HISTORICAL."""
    m = _Attn()
    p = Patch(torch.nn.Sequential(m), [m], stats=("entropy",))
    try:
        names = {n for n in list(vars(Patch)) + list(vars(p)) if n.startswith("_") and not n.startswith("__")}
        for obs in p.observers:
            names |= {n for n in vars(obs) if n.startswith("_") and not n.startswith("__")}
    finally:
        p.remove()
    return names | HISTORICAL


def _dotted(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _is_patch_call(node) -> bool:
    return isinstance(node, ast.Call) and (_dotted(node.func) or "").split(".")[-1] in PATCH_FACTORIES


def patch_variables(tree) -> set:
    """Names (``h``, ``self.patch``) bound to the result of ``satkern.patch(...)`` / ``Patch(...)``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and _is_patch_call(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t for t in map(_dotted, targets) if t)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if _is_patch_call(item.context_expr) and item.optional_vars is not None:
                    name = _dotted(item.optional_vars)
                    if name:
                        names.add(name)
    changed = True
    while changed:  # aliases: patch = self.patch
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _dotted(node.value) in names:
                new = {t for t in map(_dotted, node.targets) if t} - names
                names |= new
                changed = changed or bool(new)
    return names


def offenders_in(source: str, where: str, private: set) -> list:
    tree = ast.parse(source)
    patches = patch_variables(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = _dotted(node.value)
            if base in ("self", "cls"):
                continue  # a class's own attributes
            name = node.attr
            if name.startswith("_") and not name.startswith("__") and (name in private or base in patches):
                found.append(f"{where}:{node.lineno}: {base or '<expr>'}.{name}")
            elif base in patches and isinstance(node.ctx, (ast.Store, ast.Del)):
                found.append(f"{where}:{node.lineno}: assigns {base}.{name} (use an observer)")
        elif (isinstance(node, ast.Call) and _dotted(node.func) in ("setattr", "delattr") and node.args
              and _dotted(node.args[0]) in patches):
            found.append(f"{where}:{node.lineno}: {_dotted(node.func)}({_dotted(node.args[0])}, ...)")
    return found


def test_the_scan_finds_what_it_looks_for():
    src = ("import satkern\n"
           "h = satkern.patch(model)\n"
           "h.run = timed\n"            # replacing a method by hand
           "x = other._which\n"         # a private name on any object
           "setattr(h, 'metrics', 1)\n"
           "with satkern.patch(m) as p2:\n"
           "    y = p2._something_new\n"
           "alias = h\n"
           "alias.run = timed\n"
           "z = self._which\n"          # a class's own attribute: fine
           "w = h.metrics\n")           # public: fine
    got = offenders_in(src, "x.py", patch_private_names())
    assert sorted(g.split(": ", 1)[1] for g in got) == sorted(["assigns h.run (use an observer)", "other._which",
                                                   "setattr(h, ...)", "p2._something_new",
                                                   "assigns alias.run (use an observer)"]), got


def test_no_module_outside_patching_touches_patch_privates():
    private = patch_private_names()
    assert {"_observers", "_keep", "_undo"} <= private
    offenders = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if PATCHING in path.parents and path.name not in SCANNED_IN_PATCHING:
                continue
            offenders += offenders_in(path.read_text(), str(path.relative_to(ROOT)), private)
    assert not offenders, "Patch internals used outside satkern/patching/:\n" + "\n".join(offenders)
