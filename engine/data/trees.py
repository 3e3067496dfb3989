"""OpenAssistant's message trees threaded into conversations (standard library only).

oasst1 / oasst2 as the Hub holds them are a message a row (`message_id`, `parent_id`, `role` prompter or
assistant, `text`, a reply's `rank` among its siblings, 0 the best). Read row by row they were a corpus of single
messages; threaded, each tree is one conversation: its best-ranked branch, as oasst_top1 and Guanaco were made.
"""

from __future__ import annotations

from typing import Any

from .findings import warning

TREE_KEYS = frozenset({"message_id", "parent_id", "role", "text"})
ROLES = {"prompter": "user", "assistant": "assistant"}


def is_message_table(rows: list[Any]) -> bool:
    """Rows that are OpenAssistant's messages (the first fifty looked at)."""
    head = rows[:50]
    return bool(head) and all(isinstance(r, dict) and TREE_KEYS <= r.keys() and r.get("role") in ROLES for r in head)


def thread(src: Any) -> None:
    """`src` (a sources.Source of messages) becomes one conversation a tree, numbered as its first message's row;
    said once, with how many replies other branches held. A deleted message and what answers it are left out."""
    rows = src.rows
    children: dict[Any, list[int]] = {}
    roots = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or r.get("deleted") is True:
            continue
        if r.get("parent_id") in (None, ""):
            roots.append(i)
        else:
            children.setdefault(r["parent_id"], []).append(i)
    convs, numbers, lines, used = [], [], [], 0
    for root in roots:
        path, seen = [root], {rows[root]["message_id"]}
        while kids := [i for i in children.get(rows[path[-1]]["message_id"], ()) if rows[i]["message_id"] not in seen]:
            best = min(kids, key=lambda i: (not isinstance(rows[i].get("rank"), int), rows[i].get("rank") or 0, i))
            path.append(best)
            seen.add(rows[best]["message_id"])
        convs.append({"messages": [{"role": ROLES.get(rows[i]["role"], rows[i]["role"]), "content": rows[i]["text"]}
                                   for i in path]})
        numbers.append(src.numbers[root])
        lines.append(src.lines[root] if src.lines else src.numbers[root])
        used += len(path)
    src.findings.append(warning(None, None, "data.message_trees", count=len(rows), trees=len(roots),
                                left=len(rows) - used))
    src.rows, src.numbers = convs, numbers
    if src.lines is not None:
        src.lines = lines
