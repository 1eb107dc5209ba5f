"""The shape of the code, read from its text: one way to commit a view, modules of a readable size.

Static checks (no app, no database): each walks the source with ``ast`` and names the
place that breaks the rule, so the failure says what to change.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from portal import errors

PORTAL = Path(__file__).resolve().parents[2] / "portal"
BLUEPRINTS = PORTAL / "blueprints"

# A view commits through ``portal.views.committing``; these few places may not, and say why.
# Keyed by (file under portal/blueprints/, function): a stale entry fails the test too.
COMMIT_ALLOWED = {
    ("api/routes.py", "_verified_key"): "the API's rate limiter runs before any view: it starts a POST's "
    "transaction as a writer (begin_write) so the key check and the write keep SQLite's lock order",
    ("api/routes.py", "authenticate"): "the API's before_request hook: every POST is a writer from its "
    "first query (begin_write), before the view runs",
    ("api/routes.py", "create_signup"): "JSON API: the answer is built before the commit, and a refusal "
    "becomes a problem response through the blueprint's DomainError handler, not a form or a flash",
    ("api/routes.py", "create_conversion"): "JSON API, as create_signup",
    ("api/routes.py", "end_own_transaction"): "a conversion request ends its own transaction (the "
    "key's note of use) before its sale goes to the writer, from the view or the WSGI-level path",
    ("api/routes.py", "refund_conversion"): "JSON API, as create_signup; a replayed refund rolls back "
    "instead (nothing was written) and answers what the first one did",
    ("track/routes.py", "_follow"): "the click redirect (hot path, a lean endpoint without the request "
    "hooks): it commits the click only when the click writer writes inline, never a refusal",
    ("admin/automatic_messages.py", "_template_preview"): "writes nothing: a template the checker "
    "refuses simply has no preview (the form already shows the refusal)",
}

MAX_LINES = 800
LONG_MODULE_REASON = "Why it is long:"


def _refusals() -> set[str]:
    """``DomainError`` and every subclass of it in ``portal.errors``, by name."""
    names, todo = set(), [errors.DomainError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def _source(node: ast.AST) -> str:
    return ast.unparse(node)


class _Finder(ast.NodeVisitor):
    """Commits, hand-placed ``begin_write`` calls and ``except DomainError`` blocks, by function."""

    def __init__(self, refusals: set[str]):
        self.refusals = refusals
        self.stack: list[str] = []
        self.found: list[tuple[str, int, str]] = []

    def _function(self, node):
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def _note(self, node: ast.AST, what: str) -> None:
        self.found.append((self.stack[0] if self.stack else "<module>", node.lineno, what))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "commit":
            owner = _source(func.value)
            if owner.endswith("session") or owner.endswith("session()"):
                self._note(node, f"{_source(node)}")
        if _source(func).split(".")[-1] == "begin_write":
            self._note(node, f"{_source(node)}")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            for name in caught:
                if _source(name).split(".")[-1] in self.refusals:
                    self._note(node, f"except {_source(node.type)}")
        self.generic_visit(node)


def _views_that_commit_by_hand() -> list[tuple[str, str, int, str]]:
    refusals = _refusals()
    found = []
    for path in sorted(BLUEPRINTS.rglob("*.py")):
        finder = _Finder(refusals)
        finder.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        rel = path.relative_to(BLUEPRINTS).as_posix()
        found.extend((rel, function, line, what) for function, line, what in finder.found)
    return found


def test_views_commit_only_through_committing():
    """No view under portal/blueprints/ commits, calls begin_write or catches a refusal itself:
    ``portal.views.committing`` does all three, the same way everywhere."""
    by_hand = [
        f"portal/blueprints/{rel}:{line} in {function}(): {what}"
        for rel, function, line, what in _views_that_commit_by_hand()
        if (rel, function) not in COMMIT_ALLOWED
    ]
    assert not by_hand, (
        "Use `with committing(form) as done:` from portal/views.py instead (or add the place to "
        "COMMIT_ALLOWED with the reason it must):\n" + "\n".join(by_hand)
    )


def test_every_commit_exception_is_still_needed():
    used = {(rel, function) for rel, function, _line, _what in _views_that_commit_by_hand()}
    stale = sorted(set(COMMIT_ALLOWED) - used)
    assert not stale, f"These places no longer commit or catch refusals by hand; drop them: {stale}"


def test_the_finder_sees_what_it_forbids():
    """The checker itself: a hand-made commit, begin_write and except clause are each found."""
    source = (
        "def view():\n"
        "    begin_write(db.session())\n"
        "    try:\n"
        "        service()\n"
        "    except (ValueError, errors.InvalidTransition):\n"
        "        db.session.rollback()\n"
        "    db.session.commit()\n"
    )
    finder = _Finder(_refusals())
    finder.visit(ast.parse(source))
    assert [(function, line) for function, line, _what in finder.found] == [
        ("view", 2),
        ("view", 5),
        ("view", 7),
    ]


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PORTAL.rglob("*.py")) if len(p.read_text(encoding="utf-8").splitlines()) > MAX_LINES],
    ids=lambda p: p.relative_to(PORTAL).as_posix(),
)
def test_a_long_module_says_why(path: Path):
    """A module past ~800 lines is usually two responsibilities; one that is not says why in its
    docstring, in a paragraph starting ``Why it is long:``."""
    docstring = _docstring(path)
    _before, marker, reason = docstring.partition(LONG_MODULE_REASON)
    assert marker and len(reason.split()) >= 15, (
        f"portal/{path.relative_to(PORTAL).as_posix()} has more than {MAX_LINES} lines: split it by what "
        f"changes together, or give the reason in its docstring after '{LONG_MODULE_REASON}'"
    )
