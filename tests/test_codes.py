"""The registry of codes (`kstrade.codes`) against the code that emits them and the docs that list
them: every code an emitter uses is registered, every registered code is emitted, the docs are
the registry's, and the check catches a code nobody registered (issue 19)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from kstrade import codes

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "kstrade"
FAMILIES = {f.__name__: f for f in codes.FAMILIES}
#: Calls whose argument at this position (or whose `code=` / `reason=` keyword) is a stable code.
CODE_ARGS = {
    "MessageError": 0, "codec_error": 0, "_Stop": 0, "_err": 0, "ModelRefused": 0, "FeedMessageError": 0,
    "GuardEvent": 0, "BrokerReply": 1, "SizeDecision": 1, "reject": 1, "RaisedAlert": 1, "check": 1, "event": 0,
    "_alert": 3, "_drop": 3,
}  # fmt: skip
CODE_KEYWORDS = {"code", "reason", "error_code"}
SCREAMING = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$|^[A-Z]{4,}$")
SEVERITIES = {"INFO", "WARNING", "CRITICAL"}
#: Registered codes whose emitter is not there yet (none: the test fails once one is).
PENDING: set[tuple[object, str]] = set()
#: Codes built at run time rather than named: documented as patterns in `codes.alert_codes`
#: (ORDER_ + a BrokerCode; RETCODE_ + an MT5 number). Nothing registered is only built
#: dynamically (STATE_* alerts are named members, picked by state in guardrails.py).
DYNAMIC: set[str] = set()
#: Native error enums: file, and the family their codes belong to.
NATIVE = {"rust/codec": "DeadLetter", "rust/market": "MarketCode", "rust/bus": "BusCode"}


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _literal(node: ast.AST) -> str | None:
    """A SCREAMING_SNAKE string (or the constant head of an f-string) used as a code."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and SCREAMING.match(node.value):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        head = str(node.values[0].value)
        if re.match(r"^[A-Z][A-Z0-9_]*_$", head):
            return head + "{...}"
    if isinstance(node, ast.IfExp):
        return _literal(node.body) or _literal(node.orelse)
    return None


def check_source(source: str, module: str) -> tuple[set[tuple[str, str]], list[str]]:
    """The registered codes `module` refers to, as (family, member), and what is wrong in it: a
    code literal at a call site (or compared with, or assigned to `code`/`reason`), or a member
    the registry does not have."""
    used: set[tuple[str, str]] = set()
    problems: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.isupper():
            base = node.value
            family = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
            if family in FAMILIES:
                if node.attr in FAMILIES[family].__members__:
                    used.add((family, node.attr))
                else:
                    problems.append(f"{module}:{node.lineno}: {family}.{node.attr} is not registered")
        candidates: list[ast.AST] = []
        if isinstance(node, ast.Call):
            name = _call_name(node)
            position = CODE_ARGS.get(name or "")
            if position is not None and len(node.args) > position:
                candidates.append(node.args[position])
            candidates += [k.value for k in node.keywords if k.arg in CODE_KEYWORDS]
        elif isinstance(node, ast.Compare) and any(
            isinstance(side, ast.Attribute) and side.attr in CODE_KEYWORDS for side in [node.left, *node.comparators]
        ):
            candidates += [node.left, *node.comparators]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in CODE_KEYWORDS for t in node.targets
        ):
            candidates.append(node.value)
        for c in candidates:
            text = _literal(c)
            if text is not None and text not in SEVERITIES:
                where = f"{module}:{getattr(c, 'lineno', '?')}"
                problems.append(f"{where}: code {text!r} is a string literal: name it from kstrade.codes")
    return used, problems


def _modules() -> dict[str, str]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path.read_text()
    return out


def _native_codes() -> dict[str, set[str]]:
    """The stable codes each native crate's error enum gives (`fn code()` arms in error.rs)."""
    out = {}
    for crate in NATIVE:
        text = (ROOT / crate / "src" / "error.rs").read_text()
        body = text[text.index("pub fn code(") :]
        body = body[: body.index("\n    }\n")]
        out[crate] = set(re.findall(r'=>\s*"([A-Z][A-Z0-9_]*)"', body))
    return out


def _scan() -> tuple[dict[tuple[str, str], set[str]], list[str]]:
    """Who refers to each registered code (modules, native crates), and every problem found."""
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    problems: list[str] = []
    for module, source in _modules().items():
        if module == "codes":
            continue
        used, found = check_source(source, module)
        problems += found
        for key in used:
            where[key].add(module)
    for crate, names in _native_codes().items():
        family = FAMILIES[NATIVE[crate]]
        for name in names:
            if name in family.__members__:
                where[(family.__name__, name)].add(crate)
            else:
                problems.append(f"{crate}: code {name!r} is not registered in {family.__name__}")
    return where, problems


def test_every_code_an_emitter_uses_is_registered_and_named_from_the_registry() -> None:
    _, problems = _scan()
    assert not problems, "\n".join(problems)


def test_every_registered_code_is_emitted_by_the_emitters_it_names() -> None:
    where, _ = _scan()
    missing = []
    for family in codes.FAMILIES:
        for code in family:
            if code.value in DYNAMIC:
                continue
            refs = where.get((family.__name__, code.name), set())
            for emitter in code.emitters:
                pending = (code, emitter) in PENDING
                if emitter in refs and pending:
                    missing.append(f"{family.__name__}.{code.name}: {emitter} emits it now: remove it from PENDING")
                elif emitter not in refs and not pending:
                    missing.append(f"{family.__name__}.{code.name}: named emitter {emitter} does not refer to it")
    assert not missing, "\n".join(missing)


def test_codes_are_their_names_and_say_what_they_mean() -> None:
    for family in codes.FAMILIES:
        for code in family:
            assert code.value == code.name and SCREAMING.match(code.value), code
            assert code.meaning and code.emitters, code
    # a rejected order's ORDER_<code> must not collide with a named alert (NEVER_CONFIRMED is the
    # journal's reason for the order ORDER_NEVER_CONFIRMED announces: the same event)
    collisions = {codes.ORDER_REJECTED_PREFIX + b for b in codes.BrokerCode} & set(codes.AlertCode)
    assert collisions <= {codes.AlertCode.ORDER_NEVER_CONFIRMED}


def test_the_docs_are_the_registry() -> None:
    assert (ROOT / "CODES.md").read_text() == codes.markdown(), "run: python -m kstrade.codes --write"
    readme = (ROOT / "deploy" / "grafana" / "README.md").read_text()
    assert codes.with_alert_table(readme) == readme, "run: python -m kstrade.codes --write"
    # no code in the Grafana README that the registry does not know (CIRCUIT_BREAKER_OPEN was one)
    known = {c.value for f in codes.FAMILIES for c in f} | {r[0] for r in codes.alert_codes()}
    named = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", readme))
    assert named <= known, named - known


def test_the_check_reports_a_code_nobody_registered() -> None:
    fake = """
from kstrade.bus import MessageError
from kstrade.codes import DeadLetter

def handle(record):
    if record.value is None:
        raise MessageError("TOTALLY_NEW_CODE", "x")
    if record.key is None:
        raise MessageError(DeadLetter.ANOTHER_NEW_CODE, "y")
    raise MessageError(DeadLetter.UNKNOWN_SYMBOL, "z")
"""
    used, problems = check_source(fake, "fake.emitter")
    assert used == {("DeadLetter", "UNKNOWN_SYMBOL")}
    assert len(problems) == 2, problems
    assert "'TOTALLY_NEW_CODE' is a string literal" in problems[1] or "'TOTALLY_NEW_CODE'" in " ".join(problems)
    assert any("DeadLetter.ANOTHER_NEW_CODE is not registered" in p for p in problems)
