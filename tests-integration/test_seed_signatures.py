"""Every class of the seed has the seed's signatures in our source: names, positional order, defaults.

The seed (``shared/seed/000_80fdbe4f7d1f8808.txt``, beside the repository) is the contract as
written. Its API part is Python without indentation: ``class X(Base):`` lines, docstrings,
and ``def name(self, ...) -> T:`` headers. This test parses those headers with ``ast`` and
compares them with our classes, which it also reads with ``ast`` (never importing them), so
it covers fabric-xla (not installable beside the workspace's torch) and fabric-deepspeed
without their runtimes.

The rules, for ``__init__`` and for every method the seed lists:

- The seed's parameters are ours, by the same names, first and in the seed's order, and can
  be passed by position or keyword (no positional-only parameters).
- The seed's literal defaults are ours: compared as evaluated values (``logging.WARN``,
  ``1_000_000_000``, ``None``, ``True``, strings), with the same type (``1`` is not ``True``).
  Where the seed has no default, ours may have one.
- Parameters the seed does not list come after the seed's, keyword-only, with a default; a
  ``**kwargs`` of ours is always allowed. A seed ``__init__`` with ``**kwargs`` needs ours to
  take ``**kwargs`` too (the seed passes them on). A seed *method* with ``*args``/``**kwargs``
  (``reduce(self, tensor, *args, **kwargs)``) leaves the rest open: ours may name them.
- Every method the seed lists exists, defined in the class or inherited from one of our
  base classes, and the class derives from the seed's base class. A method the seed class
  inherits from its seed base (``DDPStrategy(Strategy)`` has ``Strategy.broadcast``) keeps the
  base's signature in our class too, wherever ours defines or overrides it.

Types and return annotations are not compared.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED_DIR = Path(__file__).resolve().parents[2] / "shared" / "seed"
SEED_FILE = SEED_DIR / "000_80fdbe4f7d1f8808.txt"

# seed class -> the source file under packages/ that defines our class of that name
OUR_FILES = {
    "Strategy": "fabric-core/src/fabric_core/strategies/strategy.py",
    "SingleDeviceStrategy": "fabric-core/src/fabric_core/strategies/single_device.py",
    "DataParallelStrategy": "fabric-core/src/fabric_core/strategies/dp.py",
    "ParallelStrategy": "fabric-core/src/fabric_core/strategies/parallel.py",
    "StrategyRegistry": "fabric-core/src/fabric_core/_registries.py",
    "DDPStrategy": "fabric-ddp/src/fabric_ddp/strategy.py",
    "FSDPStrategy": "fabric-fsdp/src/fabric_fsdp/fsdp.py",
    "ModelParallelStrategy": "fabric-fsdp/src/fabric_fsdp/model_parallel.py",
    "DeepSpeedStrategy": "fabric-deepspeed/src/fabric_deepspeed/strategy.py",
    "XLAStrategy": "fabric-xla/src/fabric_xla/strategy.py",
    "SingleDeviceXLAStrategy": "fabric-xla/src/fabric_xla/single_device.py",
    "XLAFSDPStrategy": "fabric-xla/src/fabric_xla/fsdp.py",
}

# the names a default may use besides literals (the seed's ``logging.WARN``)
DEFAULT_NAMESPACES: dict[str, Any] = {"logging": logging}


# -- evaluating defaults ------------------------------------------------------------------


class NotALiteral(Exception):
    """A default expression that is not a literal (nor a module constant holding one)."""


def evaluate(node: ast.expr, constants: dict[str, ast.expr] | None = None, depth: int = 0) -> Any:
    """The value of a literal default: constants, ``-x``, containers, ``logging.X``, module constants.

    Raises:
        NotALiteral: The expression is a call, an unknown name, ...
    """
    constants = constants or {}
    if depth > 10:
        raise NotALiteral
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = evaluate(node.operand, constants, depth + 1)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [evaluate(item, constants, depth + 1) for item in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        return {
            evaluate(k, constants, depth + 1): evaluate(v, constants, depth + 1)
            for k, v in zip(node.keys, node.values)
            if k is not None
        }
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        namespace = DEFAULT_NAMESPACES.get(node.value.id)
        if namespace is not None and hasattr(namespace, node.attr):
            return getattr(namespace, node.attr)
        raise NotALiteral
    if isinstance(node, ast.Name) and node.id in constants:
        return evaluate(constants[node.id], constants, depth + 1)
    raise NotALiteral


def same_default(expected: Any, found: Any) -> bool:
    """Equal values of the same type (``True`` is not ``1``), containers compared item by item."""
    if type(expected) is not type(found):
        return False
    if isinstance(expected, (tuple, list)):
        return len(expected) == len(found) and all(map(same_default, expected, found))
    return bool(expected == found)


# -- signatures ---------------------------------------------------------------------------

NO_DEFAULT = object()


@dataclass(frozen=True)
class Parameter:
    """One parameter: its name, its default (``NO_DEFAULT``, a value, or the unevaluable source)."""

    name: str
    default: Any = NO_DEFAULT
    literal: bool = True  # False: ``default`` is the source text of a non-literal expression


@dataclass
class Signature:
    """A function's parameters without ``self``/``cls``, grouped the way Python binds them."""

    positional_only: list[Parameter] = field(default_factory=list)
    positional: list[Parameter] = field(default_factory=list)
    var_positional: str | None = None
    keyword_only: list[Parameter] = field(default_factory=list)
    var_keyword: str | None = None

    def describe(self) -> str:
        parts = [p.name for p in self.positional_only]
        if self.positional_only:
            parts.append("/")
        parts += [p.name for p in self.positional]
        if self.var_positional:
            parts.append(f"*{self.var_positional}")
        elif self.keyword_only:
            parts.append("*")
        parts += [p.name for p in self.keyword_only]
        if self.var_keyword:
            parts.append(f"**{self.var_keyword}")
        return f"({', '.join(parts)})"


def signature_of(
    function: ast.FunctionDef | ast.AsyncFunctionDef, constants: dict[str, ast.expr]
) -> Signature:
    """The signature of a method (its first parameter dropped unless it is a staticmethod)."""
    args = function.args

    def parameter(arg: ast.arg, default: ast.expr | None) -> Parameter:
        if default is None:
            return Parameter(arg.arg)
        try:
            return Parameter(arg.arg, evaluate(default, constants))
        except NotALiteral:
            return Parameter(arg.arg, ast.unparse(default), literal=False)

    ordered = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(ordered) - len(args.defaults)) + list(args.defaults)
    params = [parameter(arg, default) for arg, default in zip(ordered, defaults)]
    decorators = {ast.unparse(d) for d in function.decorator_list}
    if "staticmethod" not in decorators and params:
        params = params[1:]
        skipped = 1
    else:
        skipped = 0
    positional_only_count = max(0, len(args.posonlyargs) - skipped)
    return Signature(
        positional_only=params[:positional_only_count],
        positional=params[positional_only_count:],
        var_positional=args.vararg.arg if args.vararg else None,
        keyword_only=[parameter(arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults)],
        var_keyword=args.kwarg.arg if args.kwarg else None,
    )


# -- the seed -----------------------------------------------------------------------------


@dataclass
class SeedClass:
    """A class of the seed's API: its base names and its methods' signatures."""

    name: str
    bases: list[str]
    methods: dict[str, Signature] = field(default_factory=dict)


_CLASS_LINE = re.compile(r"^class\s+(\w+)\s*(?:\((.*)\))?\s*:\s*$")


def _def_headers(lines: list[str], start: int) -> tuple[str, int]:
    """The full ``def ...:`` header starting at ``lines[start]`` (it may span lines), and the next line."""
    text, depth, index = "", 0, start
    while index < len(lines):
        line = lines[index]
        text += line.strip() + " "
        depth += line.count("(") + line.count("[") - line.count(")") - line.count("]")
        index += 1
        if depth <= 0 and line.rstrip().endswith(":"):
            return text.strip(), index
    raise ValueError(f"seed line {start + 1}: the def header {lines[start].strip()!r} never closes")


def parse_seed(text: str) -> dict[str, SeedClass]:
    """The API classes of the seed: a ``class`` line directly followed by a docstring.

    Usage snippets (``class CustomStrategy(Strategy):`` followed by code) are not API classes.
    Docstrings are skipped by counting triple quotes, so text in them is never read as code.
    """
    lines = text.splitlines()
    classes: dict[str, SeedClass] = {}
    current: SeedClass | None = None
    in_docstring = False
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if in_docstring:
            in_docstring = stripped.count('"""') % 2 == 0
            index += 1
            continue
        match = _CLASS_LINE.match(stripped)
        if match:
            following = next((lines[i].strip() for i in range(index + 1, len(lines)) if lines[i].strip()), "")
            bases = [b.strip() for b in (match.group(2) or "").split(",") if b.strip()]
            current = SeedClass(match.group(1), bases) if following.startswith('"""') else None
            if current is not None:
                classes[current.name] = current
            index += 1
            continue
        if stripped.startswith("def ") and current is not None:
            header, index = _def_headers(lines, index)
            try:
                function = ast.parse(header + "\n    pass").body[0]
            except SyntaxError as error:
                raise ValueError(f"seed: cannot parse {header!r} of class {current.name}: {error}") from None
            assert isinstance(function, ast.FunctionDef)
            current.methods[function.name] = signature_of(function, {})
            continue
        if stripped.count('"""') % 2 == 1:
            in_docstring = True
        index += 1
    return classes


def load_seed(path: Path) -> dict[str, SeedClass]:
    """The seed's API classes from ``path``; fails the test, saying where the seed belongs, when it is missing."""
    if not path.is_file():
        pytest.fail(
            f"The seed is missing: expected {path} (in shared/seed/, the shared/ folder beside the repository "
            f"root {REPO}). Put the seed there; this test compares our signatures with it."
        )
    return parse_seed(path.read_text(encoding="utf-8"))


@cache
def seed_classes() -> dict[str, SeedClass]:
    """The seed's API classes, parsed once."""
    return load_seed(SEED_FILE)


def seed_methods(name: str) -> list[tuple[str, Signature, str]]:
    """The methods the seed gives class ``name``: its own, then those it inherits from its seed bases.

    Each is ``(method, signature, seed class that declares it)``; ``__init__`` is never inherited
    (the seed lists it wherever it fixes one).
    """
    classes = seed_classes()
    found: dict[str, tuple[str, Signature, str]] = {}
    pending, seen = [name], set()
    while pending:
        current = classes.get(pending.pop(0))
        if current is None or current.name in seen:
            continue
        seen.add(current.name)
        for method, signature in current.methods.items():
            if method not in found and (current.name == name or method != "__init__"):
                found[method] = (method, signature, current.name)
        pending += current.bases
    return list(found.values())


# -- our source ---------------------------------------------------------------------------


@dataclass
class Module:
    """One of our source files: its top-level classes, imports and constants."""

    name: str
    path: Path
    classes: dict[str, ast.ClassDef]
    imports: dict[str, tuple[str, str]]  # local name -> (module, name)
    constants: dict[str, ast.expr]


@cache
def our_modules() -> dict[str, Module]:
    """Every module under packages/*/src, by dotted name, parsed (not imported)."""
    modules: dict[str, Module] = {}
    for path in sorted((REPO / "packages").glob("*/src/**/*.py")):
        src = next(parent for parent in path.parents if parent.name == "src")
        parts = list(path.relative_to(src).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        classes: dict[str, ast.ClassDef] = {}
        imports: dict[str, tuple[str, str]] = {}
        constants: dict[str, ast.expr] = {}
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        for node in _top_level(tree.body):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = node
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:
                    imports[alias.asname or alias.name] = (source, alias.name)
            elif (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                constants[node.targets[0].id] = node.value
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.value is not None
            ):
                constants[node.target.id] = node.value
        modules[name] = Module(name, path, classes, imports, constants)
    return modules


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Top-level statements, including those under ``if TYPE_CHECKING:`` / ``try:`` blocks."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body)
        else:
            yield node


@dataclass(frozen=True)
class OurClass:
    """A class of ours: the module that defines it and its ``ClassDef``."""

    module: str
    name: str

    @property
    def node(self) -> ast.ClassDef:
        return our_modules()[self.module].classes[self.name]

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


def resolve(module: str, name: str, depth: int = 0) -> OurClass | None:
    """Our class that ``name`` means in ``module`` (following imports and re-exports), if any."""
    found = our_modules().get(module)
    if found is None or depth > 10:
        return None
    if name in found.classes:
        return OurClass(module, name)
    if name in found.imports:
        source, original = found.imports[name]
        return resolve(source, original, depth + 1)
    return None


def bases_of(cls: OurClass) -> list[OurClass]:
    """The bases of ``cls`` that are ours (``ABC``, ``nn.Module``, ``Generic[T]`` are left out)."""
    bases = []
    for base in cls.node.bases:
        if isinstance(base, ast.Name):
            resolved = resolve(cls.module, base.id)
            if resolved is not None:
                bases.append(resolved)
    return bases


def mro(cls: OurClass) -> list[OurClass]:
    """The C3 linearisation over our classes, as Python computes it (external bases dropped)."""
    sequences = [mro(base) for base in bases_of(cls)] + [bases_of(cls)]
    result = [cls]
    while any(sequences):
        for sequence in sequences:
            if not sequence:
                continue
            head = sequence[0]
            if not any(head in other[1:] for other in sequences):
                break
        else:
            raise TypeError(f"{cls.qualname}: inconsistent base classes")
        result.append(head)
        sequences = [[c for c in sequence if c != head] for sequence in sequences]
    return result


def find_method(cls: OurClass, name: str) -> tuple[OurClass, ast.stmt] | None:
    """Where ``name`` is defined along our MRO of ``cls`` (the last definition in a class body wins)."""
    for owner in mro(cls):
        found: ast.stmt | None = None
        for node in owner.node.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                if "overload" not in {ast.unparse(d).rpartition(".")[2] for d in node.decorator_list}:
                    found = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    found = node
        if found is not None:
            return owner, found
    return None


# -- comparing ----------------------------------------------------------------------------


def compare(where: str, seed: Signature, ours: Signature, constructor: bool) -> list[str]:
    """One message per way ``ours`` breaks the seed's signature (empty: it keeps it)."""
    problems: list[str] = []
    expected_names = [p.name for p in seed.positional]
    our_by_name = {p.name: p for p in [*ours.positional_only, *ours.positional, *ours.keyword_only]}
    our_positional = [*ours.positional_only, *ours.positional]
    found_names = [p.name for p in our_positional][: len(expected_names)]
    if found_names != expected_names:
        detail = []
        missing = [n for n in expected_names if n not in our_by_name]
        keyword_only = [n for n in expected_names if n in {p.name for p in ours.keyword_only}]
        if missing:
            detail.append(f"missing {', '.join(missing)}")
        if keyword_only:
            detail.append(f"keyword-only in ours: {', '.join(keyword_only)}")
        intruders = [n for n in found_names if n not in expected_names]
        if intruders:
            detail.append(f"not in the seed but among its positions in ours: {', '.join(intruders)}")
        if not detail:
            detail.append("a different order")
        first = next(i for i, n in enumerate(expected_names) if i >= len(found_names) or found_names[i] != n)
        at = found_names[first] if first < len(found_names) else "nothing"
        problems.append(
            f"{where}: positional parameters expected ({', '.join(expected_names)}), found "
            f"({', '.join(found_names)}); first difference at position {first}: expected "
            f"{expected_names[first]!r}, found {at!r}; {'; '.join(detail)}"
        )
    for parameter in ours.positional_only:
        if parameter.name in expected_names:
            problems.append(
                f"{where}: parameter {parameter.name!r} is positional-only in ours; "
                "the seed's can be passed by keyword"
            )
    for expected in [*seed.positional, *seed.keyword_only]:
        found = our_by_name.get(expected.name)
        if found is None:
            continue
        if expected.default is NO_DEFAULT:
            continue
        if found.default is NO_DEFAULT:
            problems.append(
                f"{where}: parameter {expected.name!r} default expected {expected.default!r}, found none (required)"
            )
        elif not found.literal:
            problems.append(
                f"{where}: parameter {expected.name!r} default expected {expected.default!r}, found "
                f"`{found.default}` (not a literal)"
            )
        elif not same_default(expected.default, found.default):
            problems.append(
                f"{where}: parameter {expected.name!r} default expected {expected.default!r}, found "
                f"{found.default!r}"
            )
    seed_names = {p.name for p in [*seed.positional, *seed.keyword_only]}
    open_rest = seed.var_positional is not None and not constructor
    for index, parameter in enumerate(our_positional):
        if parameter.name in seed_names or index < len(expected_names):
            continue
        if not open_rest:
            problems.append(
                f"{where}: parameter {parameter.name!r} is not in the seed but positional in ours (position "
                f"{index}); the seed's positional order ends at {expected_names[-1] if expected_names else '(none)'!r}: "
                "make it keyword-only (after `*`)"
            )
        elif parameter.default is NO_DEFAULT:
            problems.append(f"{where}: parameter {parameter.name!r} is not in the seed and has no default")
    for parameter in ours.keyword_only:
        if parameter.name not in seed_names and parameter.default is NO_DEFAULT:
            problems.append(
                f"{where}: keyword-only parameter {parameter.name!r} is not in the seed and has no default "
                "(a call written as in the seed would fail)"
            )
    for expected in seed.keyword_only:
        if expected.name not in our_by_name:
            problems.append(f"{where}: keyword parameter {expected.name!r} missing")
    if ours.var_positional is not None and seed.var_positional is None:
        problems.append(
            f"{where}: ours takes *{ours.var_positional}, the seed's signature has no *args "
            "(parameters after the seed's must be keyword-only)"
        )
    if seed.var_positional is not None and constructor and ours.var_positional is None:
        problems.append(f"{where}: the seed takes *{seed.var_positional}, ours does not")
    if seed.var_keyword is not None and constructor and ours.var_keyword is None:
        problems.append(
            f"{where}: the seed takes **{seed.var_keyword} (passed on), ours takes no **kwargs: {ours.describe()}"
        )
    return problems


def mismatches(seed_class: SeedClass) -> list[str]:
    """Every way our class of the seed class's name differs from the seed."""
    path = REPO / "packages" / OUR_FILES[seed_class.name]
    module = next((m for m in our_modules().values() if m.path == path), None)
    if module is None:
        return [f"{seed_class.name}: our source file {path} is missing"]
    ours = resolve(module.name, seed_class.name)
    if ours is None or ours.module != module.name:
        return [f"{seed_class.name}: no class {seed_class.name} defined in {path.relative_to(REPO)}"]
    problems: list[str] = []
    ancestors = {c.name for c in mro(ours)}
    for base in seed_class.bases:
        if base not in ancestors:
            problems.append(
                f"{seed_class.name}: the seed derives it from {base}; ours derives from "
                f"{', '.join(c.qualname for c in mro(ours)[1:]) or 'none of our classes'}"
            )
    for method, seed_signature, declared_in in seed_methods(seed_class.name):
        where = f"{seed_class.name}.{method}"
        if declared_in != seed_class.name:
            where += f" (the seed's {declared_in}.{method})"
        found = find_method(ours, method)
        if found is None:
            problems.append(f"{where}: missing (not defined in {ours.qualname} nor inherited from our bases)")
            continue
        owner, node = found
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            problems.append(
                f"{where}: {owner.qualname} binds it by assignment, not as a method with a signature"
            )
            continue
        decorators = {ast.unparse(d).rpartition(".")[2] for d in node.decorator_list}
        if "property" in decorators or "cached_property" in decorators:
            problems.append(f"{where}: a property in {owner.qualname}; the seed has a method")
            continue
        constants = our_modules()[owner.module].constants
        for local, (source, original) in our_modules()[owner.module].imports.items():
            imported = our_modules().get(source)
            if imported is not None and original in imported.constants and local not in constants:
                constants = {**constants, local: imported.constants[original]}
        where_ours = where if owner == ours else f"{where} [ours inherited from {owner.qualname}]"
        problems += compare(where_ours, seed_signature, signature_of(node, constants), method == "__init__")
    return problems


# -- tests --------------------------------------------------------------------------------


def test_the_seed_is_found_and_lists_exactly_the_classes_this_test_maps():
    classes = seed_classes()
    assert set(classes) == set(OUR_FILES), (
        f"seed classes {sorted(classes)} differ from the mapped ones {sorted(OUR_FILES)}: map each seed class "
        "to the file of ours that defines it (OUR_FILES)"
    )
    assert "__init__" in classes["DDPStrategy"].methods
    assert list(classes["StrategyRegistry"].methods) == ["register", "get", "available_strategies", "remove"]


@pytest.mark.parametrize("name", sorted(OUR_FILES))
def test_our_class_has_the_seeds_signatures(name):
    seed_class = seed_classes().get(name)
    if seed_class is None:
        pytest.fail(f"{name} is not a class of the seed {SEED_FILE} any more; remove it from OUR_FILES")
    problems = mismatches(seed_class)
    assert not problems, f"{len(problems)} mismatch(es) with the seed:\n" + "\n".join(problems)


# -- the comparison itself ------------------------------------------------------------------


def _signature(source: str) -> Signature:
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef)
    return signature_of(function, {"LIMIT": ast.parse("1_000", mode="eval").body})


def test_the_comparison_accepts_keyword_only_extras_and_names_each_mismatch():
    seed = _signature(
        "def __init__(self, a: int = 2, b: str = 'cpu', level: int = logging.WARN, **kwargs): pass"
    )
    good = _signature(
        "def __init__(self, a=2, b='cpu', level=logging.WARNING, *, extra=None, **kwargs): pass"
    )
    assert compare("C.__init__", seed, good, constructor=True) == []
    bad = _signature("def __init__(self, b='cpu', a=2.0, level=10, extra=None, *, x): pass")
    problems = compare("C.__init__", seed, bad, constructor=True)
    assert any("positional parameters expected (a, b, level), found (b, a, level)" in p for p in problems)
    assert any("'a' default expected 2, found 2.0" in p for p in problems)
    assert any("'level' default expected 30, found 10" in p for p in problems)
    assert any("'extra' is not in the seed but positional" in p for p in problems)
    assert any("'x' is not in the seed and has no default" in p for p in problems)
    assert any("takes no **kwargs" in p for p in problems)
    assert len(problems) == 6, problems
    constant = _signature("def f(self, n=LIMIT, t=DEFAULT): pass")
    seed_f = _signature("def f(self, n=1000, t=None): pass")
    assert compare("C.f", seed_f, constant, constructor=False) == [
        "C.f: parameter 't' default expected None, found `DEFAULT` (not a literal)"
    ]


def test_a_seed_method_with_args_and_kwargs_leaves_the_rest_open():
    seed = _signature("def reduce(self, tensor, *args, **kwargs): pass")
    ours = _signature("def reduce(self, tensor, group=None, reduce_op=None): pass")
    assert compare("C.reduce", seed, ours, constructor=False) == []


def test_a_missing_seed_fails_saying_where_it_is_expected(tmp_path):
    with pytest.raises(
        pytest.fail.Exception, match=r"The seed is missing: expected .*nowhere\.txt \(in shared/seed/"
    ):
        load_seed(tmp_path / "nowhere.txt")


def test_the_seed_parser_skips_docstrings_and_usage_snippets():
    text = '''Intro text
class A(Base):
"""
Doc. def not_a_method(self): mentioned in prose
class NotAClass:
"""
def __init__(
self,
x: Optional[list[int]] = None,
n: int = 1_000,
**kwargs
):
"""Init."""
def m(self, t: Tensor, *args, **kwargs) -> Tensor:
"""M."""Trailing prose glued to the docstring.
class Snippet(A):
def setup_module(self, module):
return module
'''
    classes = parse_seed(text)
    assert list(classes) == ["A"]
    assert classes["A"].bases == ["Base"]
    assert list(classes["A"].methods) == ["__init__", "m"]
    init = classes["A"].methods["__init__"]
    assert [(p.name, p.default) for p in init.positional] == [("x", None), ("n", 1000)]
    assert init.var_keyword == "kwargs"
