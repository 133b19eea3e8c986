"""Audit a bundle's configs before running them: every ``$`` expression, ``_target_``,
``_requires_`` and import is checked against an allow-list of what the collection's own configs
use, and anything else is a finding that names the file, the id and the text.

    python -m tools.bundle.audit bundles/mtms_contrastive_cardiac_mri
    python -m tools.bundle.audit received/mtms_contrastive_cardiac_mri_v0.3.0.zip
    python -m tools.bundle.audit received/X.zip --accept configs/inference.json:evil   # after reading it

A bundle config is code: MONAI evaluates a ``$`` expression with Python's ``eval`` and imports and
calls any ``_target_``, with the rights of whoever runs it. The audit reads the configs as text
(a zip's are not unpacked) and never evaluates them. Allowed:

- ``_target_``: MONAI components (short names such as ``LoadImaged``, or ``monai.transforms.*``,
  ``monai.networks.*`` ...: :data:`MONAI_COMPONENTS`, not ``monai.utils`` or ``monai.bundle``),
  ``torch.nn.*``, ``torch.optim.*``, the vendored ``common.*``, the bundle's own ``scripts.*`` and
  the names in :data:`TARGETS`;
- imports of the modules in :data:`IMPORTS`;
- expressions made of literals, references (``@id``), arithmetic, comparisons, conditionals,
  subscripts, lists, dicts, comprehensions and lambdas, calling methods of references and of their
  own lambda or loop variables, the builtins in :data:`BUILTINS`, and module functions under the
  names of :data:`MODULE_PREFIXES` (``os.path.*`` but not ``os.system``); no dunder attribute
  but ``__name__``; no ``%`` macro reading another file; ``_mode_`` ``default`` or ``callable``.

The audit judges configs, not code: the vendored ``common/`` and the bundle's ``scripts/`` run as
they are, which is what the export signature is for (``python -m tools.bundle.export``).
``--accept FILE:ID`` accepts the findings of one id after a person has read them. Exit status 1
when a finding is left.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from monai.bundle import ComponentLocator

IMPORTS = ("glob", "logging", "os", "sys", "numpy", "torch", "torch.distributed", "onnxruntime", "openvino")
# the names MONAI's expressions see (its ``imports`` plus these defaults), and what a config may reach through them
ALIASES = {"np": "numpy", "dist": "torch.distributed"}
# names a config may reach through a module: an entry ending in "." allows everything under it,
# any other entry that name exactly (``os.environ`` is read, ``os.environ.update`` is not allowed)
MODULE_PREFIXES = (
    "glob.glob",
    "glob.escape",
    "logging.disable",
    "logging.INFO",
    "os.path.",
    "os.environ",
    "sys.path.insert",
    "numpy.uint8",
    "numpy.int16",
    "numpy.float32",
    "torch.cat",
    "torch.from_numpy",
    "torch.as_tensor",
    "torch.device",
    "torch.float32",
    "torch.cuda.",
    "torch.nn.",
    "torch.optim.",
    "torch.distributed.init_process_group",
    "torch.distributed.destroy_process_group",
    "torch.distributed.get_rank",
    "torch.distributed.is_initialized",
    "torch.distributed.barrier",
    "monai.utils.optional_import",
    "monai.utils.set_determinism",
    "monai.handlers.",
    "onnxruntime.InferenceSession",
    "openvino.Core",
)
BUILTINS = {
    "abs", "all", "any", "bool", "dict", "enumerate", "float", "int", "isinstance", "len", "list", "max", "min",
    "range", "round", "set", "sorted", "str", "sum", "tuple", "zip", "True", "False", "None",
}  # fmt: skip
# the MONAI packages of components (not ``monai.utils`` or ``monai.bundle``, whose functions can
# import or fetch anything)
MONAI_COMPONENTS = tuple(
    f"monai.{p}."
    for p in ("transforms", "networks", "losses", "metrics", "handlers", "engines", "inferers", "data", "optimizers")
)
TARGET_PREFIXES = (*MONAI_COMPONENTS, "torch.nn.", "torch.optim.", "common.", "scripts.")
# single targets outside those packages (the writer every TensorBoard handler of a run shares)
TARGETS = ("torch.utils.tensorboard.SummaryWriter",)
# a module function allowed only with these literal first arguments
LITERAL_ARGUMENTS = {"monai.utils.optional_import": {"common"}}
DUNDERS = {"__name__"}
REFERENCE = re.compile(r"@[\w#:]+")
ALLOWED_NODES = (
    ast.Expression, ast.Module, ast.Expr, ast.Constant, ast.Name, ast.Load, ast.Store, ast.Attribute,
    ast.Subscript, ast.Slice, ast.Tuple, ast.List, ast.Dict, ast.Set, ast.BinOp, ast.UnaryOp, ast.BoolOp,
    ast.Compare, ast.IfExp, ast.Call, ast.keyword, ast.Starred, ast.Lambda, ast.arguments, ast.arg,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.JoinedStr,
    ast.FormattedValue, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context,
)  # fmt: skip


@dataclass(frozen=True)
class Finding:
    file: str
    id: str
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.id}: {self.text!r}: {self.reason}"


def qualified(node: ast.expr) -> str | None:
    """``a.b.c`` of an attribute chain on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(ALIASES.get(node.id, node.id))
    return ".".join(reversed(parts))


def allowed_module_name(name: str) -> bool:
    return any(name.startswith(p) if p.endswith(".") else name == p for p in MODULE_PREFIXES)


def expression_problems(text: str) -> list[str]:
    """Why the expression ``text`` (without its ``$``) is outside the allow-list; empty if it is not."""
    source = REFERENCE.sub("_ref_", text)
    try:
        tree = ast.parse(source, mode="exec" if source.lstrip().startswith(("import ", "from ")) else "eval")
    except SyntaxError as e:
        return [f"not a Python expression ({e.msg})"]
    if isinstance(tree, ast.Module):
        problems = []
        for statement in tree.body:
            if isinstance(statement, ast.Import):
                problems += [f"import of {a.name}" for a in statement.names if a.name not in IMPORTS]
            elif isinstance(statement, ast.ImportFrom):
                problems.append(f"import from {statement.module}")
            else:
                problems.append(f"statement {type(statement).__name__}")
        return problems
    local = {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    local |= {
        t.id
        for c in ast.walk(tree)
        if isinstance(c, ast.comprehension)
        for t in ast.walk(c.target)
        if isinstance(t, ast.Name)
    }
    modules = {name.split(".")[0] for name in IMPORTS} | set(ALIASES) | {"monai", "torch", "np"}
    problems = []
    reached: set[int] = set()  # attribute and name nodes already judged as part of a chain
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED_NODES):
            problems.append(f"{type(node).__name__} is not allowed")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__") and node.attr not in DUNDERS:
                problems.append(f"attribute {node.attr}")
            if id(node) in reached:
                continue
            name = qualified(node)
            chain = [n for n in ast.walk(node) if isinstance(n, (ast.Attribute, ast.Name))]
            if name is not None and name.split(".")[0] in {ALIASES.get(m, m) for m in modules}:
                reached.update(id(n) for n in chain)
                if not allowed_module_name(name):
                    problems.append(f"{name} is not in the allowed module functions")
        elif isinstance(node, ast.Call) and (literals := LITERAL_ARGUMENTS.get(qualified(node.func) or "")):
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Constant) and first.value in literals):
                problems.append(f"{qualified(node.func)} with another first argument than {sorted(literals)}")
        elif isinstance(node, ast.Name) and id(node) not in reached:
            if node.id.startswith("_ref_") or node.id in local or node.id in BUILTINS:
                continue
            problems.append(f"name {node.id}" + (" (a module used directly)" if node.id in modules else ""))
    return problems


def target_problem(target: str) -> str | None:
    """Why a ``_target_`` is not allowed; None if it is."""
    if target.startswith("@"):
        return None
    if target.startswith("$"):
        problems = expression_problems(target[1:])
        return "; ".join(problems) if problems else None
    if "." not in target:
        modules = ComponentLocator().get_component_module_name(target)
        modules = [modules] if isinstance(modules, str) else modules or []
        if not modules:
            return f"{target} is not a MONAI component"
        outside = [m for m in modules if not f"{m}.".startswith(MONAI_COMPONENTS)]
        return f"{target} resolves to {outside}, outside {', '.join(MONAI_COMPONENTS)}" if outside else None
    if target.startswith(TARGET_PREFIXES) or target in TARGETS:
        return None
    return f"{target} is outside {', '.join(TARGET_PREFIXES)} and is not one of {', '.join(TARGETS)}"


def walk(config: object, path: str = "") -> Iterator[tuple[str, str, str]]:
    """(id, kind, text) of every expression, target, requirement and macro in a parsed config."""
    if isinstance(config, dict):
        for key, value in config.items():
            sub = f"{path}#{key}" if path else str(key)
            if key == "_target_" and isinstance(value, str):
                yield sub, "target", value
            elif key == "_mode_":
                yield sub, "mode", str(value)
            elif key == "_requires_":
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str) and item.startswith("$"):
                        yield sub, "expression", item
            else:
                yield from walk(value, sub)
    elif isinstance(config, list):
        for index, value in enumerate(config):
            yield from walk(value, f"{path}#{index}")
    elif isinstance(config, str) and config.startswith("$"):
        yield path, "expression", config
    elif isinstance(config, str) and config.startswith("%"):
        yield path, "macro", config


def audit_text(file: str, text: str) -> list[Finding]:
    """The findings of one config file's JSON text."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        return [Finding(file, "-", text[:60], f"not JSON: {e}")]
    findings = []
    for config_id, kind, value in walk(config):
        if kind == "target":
            reason = target_problem(value)
            reasons = [reason] if reason else []
        elif kind == "mode":
            reasons = [] if value in ("default", "callable") else [f"_mode_ {value} (debug runs a debugger)"]
        elif kind == "macro":
            reasons = ["a macro reading another file"] if "#" in value and not value.startswith("%#") else []
        else:
            reasons = expression_problems(value[1:])
        findings += [Finding(file, config_id, value, reason) for reason in reasons]
    return findings


def config_texts(bundle: Path) -> dict[str, str]:
    """``configs/*.json`` of a bundle folder or an exported zip (read, not unpacked)."""
    if bundle.suffix == ".zip":
        with zipfile.ZipFile(bundle) as archive:
            return {
                name.split("/", 1)[1]: archive.read(name).decode()
                for name in archive.namelist()
                if re.fullmatch(r"[^/]+/configs/[^/]+\.json", name)
            }
    if not (bundle / "configs").is_dir():
        raise FileNotFoundError(f"{bundle} has no configs/ folder: give a bundle folder or an exported zip.")
    return {f"configs/{p.name}": p.read_text() for p in sorted((bundle / "configs").glob("*.json"))}


def audit_configs(texts: dict[str, str], accepted: set[str] = frozenset()) -> list[Finding]:
    """The findings of configs given as ``{"configs/x.json": text}``, less those accepted as
    ``FILE:ID`` (an id accepts everything below it)."""
    findings = [f for name, text in sorted(texts.items()) for f in audit_text(name, text)]
    return [
        f for f in findings if f"{f.file}:{f.id.split('#')[0]}" not in accepted and f"{f.file}:{f.id}" not in accepted
    ]


def audit(bundle: Path, accepted: set[str] = frozenset()) -> list[Finding]:
    """The findings of every config of ``bundle`` (a folder or a zip) not accepted as ``FILE:ID``."""
    return audit_configs(config_texts(bundle), accepted)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", type=Path, nargs="+", help="bundle folders or exported zips")
    parser.add_argument("--accept", action="append", default=[], metavar="FILE:ID", help="accept this id's findings")
    args = parser.parse_args(argv)
    failed = False
    for bundle in args.bundles:
        findings = audit(bundle, set(args.accept))
        for finding in findings:
            print(f"{bundle}: {finding}")
        print(f"{bundle}: {len(findings)} finding(s)" + ("" if findings else ": every expression and target allowed"))
        failed |= bool(findings)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
