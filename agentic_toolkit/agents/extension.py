"""More revisions for a search: :meth:`AgenticSearch.extend <agentic_toolkit.AgenticSearch.extend>`.

``extend(n)`` raises ``max_revisions`` by ``n`` and appends ``{"type": "extend", "by": n,
"max_revisions": new, "after_revision": k}`` to the history; the search then runs up to
``n`` more revisions. Whatever stopped it: ``max_revisions`` is raised; ``patience`` counts
again from revision ``k`` (so a search stopped for patience goes on, and with ``patience <
n`` it stops sooner when no move is kept); a divergence stop written into revision ``k`` is
lifted; a stop that is not logged (the proposer repeated itself, the analyst had no untried
move) is cleared, and the next step asks the proposer again, which may stop the search again
at once. A search without an evaluator that already has a candidate in band cannot be
extended (it would stop at once: it stops at its first candidate in band).

Resume stays exact: the header keeps the settings the search was started with (what
:func:`~agentic_toolkit.agents.checks.check_resume` compares), and a resumed search applies
the logged ``extend`` records in order. ``resume=True`` with a ``max_revisions`` above the
logged total extends the search by the difference (:func:`resume_budget`).
"""

from __future__ import annotations

from ..errors import ToolkitError
from .decisions import stop_reason

EXTEND = "extend"


def extension_state(records: list[dict]) -> tuple[int, int]:
    """``(revisions added, revisions before the last extension)`` of a history's records.

    Args:
        records: every record of a history log (header, revisions, extend and result lines), in order.

    Returns:
        The sum of the ``extend`` records' ``by``, and the number of revision records before
        the last ``extend`` record (0 without one): where ``patience`` counts from.
    """
    added = since = revisions = 0
    for r in records:
        if r.get("type") == "revision":
            revisions += 1
        elif r.get("type") == EXTEND:
            added += int(r["by"])
            since = revisions
    return added, since


def resume_budget(records: list[dict], given: int) -> tuple[int, int]:
    """``(max_revisions the resume check compares, revisions to extend by now)``.

    Args:
        records: the records of the log being resumed (empty for a new search).
        given: the search's ``max_revisions`` (as given, or as read back from the header).

    Returns:
        The header's original ``max_revisions`` and 0 when ``given`` is it or the logged total
        (original plus extensions); the original and the difference when ``given`` is above
        the logged total; ``given`` and 0 otherwise (the resume check then refuses it).
    """
    header = records[0] if records and records[0].get("type") == "header" else {}
    original = header.get("max_revisions")
    if not isinstance(original, int):
        return given, 0
    total = original + extension_state(records)[0]
    if given in (original, total):
        return original, 0
    if given > total:
        return original, given - total
    return given, 0


def extension_record(search, n: int) -> dict:
    """The ``extend`` record that gives ``search`` ``n`` more revisions (see the module docstring).

    The search appends it and applies it (:meth:`AgenticSearch.extend
    <agentic_toolkit.AgenticSearch.extend>`).

    Args:
        search: an :class:`~agentic_toolkit.agents.search.AgenticSearch` (read, not changed).
        n: how many revisions to add (an integer >= 1).

    Returns:
        ``{"type": "extend", "by": n, "max_revisions": new total, "after_revision": revisions so far}``.

    Raises :class:`ToolkitError` for a bad ``n`` or when the search would stop at once
    (a search without an evaluator that already has a candidate in band).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ToolkitError(f"extend(n) needs an integer n >= 1, got {n!r}")
    new, since = search.max_revisions + n, len(search.records)
    reason = stop_reason(
        search.records, max_revisions=new, has_evaluator=search.evaluator is not None,
        patience=search.patience, default_images=search.eval_images, since=since,
    )
    if reason is not None:
        raise ToolkitError(f"cannot extend the search: it would stop at once ({reason})")
    return {"type": EXTEND, "by": n, "max_revisions": new, "after_revision": since}


__all__ = ["EXTEND", "extension_record", "extension_state", "resume_budget"]
