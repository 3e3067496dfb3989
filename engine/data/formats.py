"""Recognise a dataset's format and normalise each row to trl's conversational vocabulary.

Formats (their fields, as named after `DatasetSpec.columns` mapping):
  alpaca             instruction, output; optional input, system, history [[q, a], ...], tools (with tools, an
                     output that is a list of calls [{name, arguments}], as Salesforce's xLAM writes its
                     `answers`, is the assistant's tool calls)
  sharegpt           conversations [{from, value}] (or bare texts taking turns, the user first); optional system
  messages           messages [{role, content}] (OpenAI)
  prompt_completion  prompt, completion (strings or message lists); optional system
  unpaired           prompt, completion, label (KTO's: the answer desirable or not; true/false, 1/0); optional system
  preference         prompt, chosen, rejected (strings or message lists); also prompt + ranked `answers`
                     (Nectar's [{answer, rank}]: the best-ranked chosen, the worst rejected), SHP's history +
                     human_ref_A / human_ref_B + labels (1: A preferred); alpaca-style
                     instruction/input + chosen/rejected or a two-item output [chosen, rejected],
                     ShareGPT-style conversations + chosen/rejected, or chosen/rejected alone
                     (full conversations sharing the prompt: message lists, or Anthropic HH-RLHF
                     transcripts "\n\nHuman: ...\n\nAssistant: ...")
  text               text (or a .txt file)

Every row becomes one record in trl's terms:
  alpaca, sharegpt, messages -> conversational language modeling  {"messages": [...]}
  prompt_completion          -> conversational prompt-completion  {"prompt": [...], "completion": [...]}
  preference                 -> conversational preference         {"prompt": [...], "chosen": [...], "rejected": [...]}
  unpaired                   -> conversational unpaired preference {"prompt": [...], "completion": [...], "label": bool}
  text                       -> standard language modeling        {"text": "..."}
Roles become system / user / assistant. Alpaca's `input` follows the instruction after a blank
line; `history` becomes earlier turns. Tool turns keep their meaning in the text, Hermes/Qwen
style: ShareGPT `function_call` (and OpenAI `tool_calls`) become assistant turns wrapped in
<tool_call>...</tool_call>; `observation` / `tool` / `function` results become user turns wrapped
in <tool_response>...</tool_response>; an OpenAI call is written as Hermes does, {"name", "arguments"}. A row's
`tools` (function definitions) are told in its system message, in Hermes / Qwen's words. `developer` is a
system turn.
Knows nothing of files (sources.py) or tokens (check.py, preview.py).
"""

from __future__ import annotations

import ast
import difflib
import io
import itertools
import json
import re
import tokenize
from collections import Counter
from typing import Any

FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # name -> (required, optional) fields
    "alpaca": (("instruction", "output"), ("input", "system", "history", "tools")),
    "sharegpt": (("conversations",), ("system", "tools")),
    "messages": (("messages",), ("tools",)),
    "prompt_completion": (("prompt", "completion"), ("system",)),
    "preference": (("prompt", "chosen", "rejected"), ("system", "instruction", "input", "output", "conversations", "messages",
                                                          "answers", "history", "human_ref_A", "human_ref_B", "labels")),
    "unpaired": (("prompt", "completion", "label"), ("system", "messages", "conversations", "tools")),
    "text": (("text",), ()),
}
FIELDS = frozenset(f for required, optional in FORMATS.values() for f in required + optional)  # our column names
TRL_KIND = {"alpaca": "conversational language modeling", "sharegpt": "conversational language modeling",
            "messages": "conversational language modeling", "prompt_completion": "conversational prompt-completion",
            "preference": "conversational preference", "unpaired": "conversational unpaired preference",
            "text": "standard language modeling"}
ROLES = {"system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant",
         "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant", "bing": "assistant",
         "bard": "assistant",
         "function_call": "assistant", "observation": "user", "tool": "user", "function": "user", "ipython": "user"}
_TOOL_CALL, _TOOL_RESULT = {"function_call"}, {"observation", "tool", "function", "ipython"}
ALIASES = {  # column names people use for our fields, for "did you mean" suggestions
    "instruction": ["question", "query", "instructions", "task", "problem", "input_text", "user", "human", "질문", "지시", "지시문",
                    "명령", "명령어", "요청", "问题", "指令", "質問", "指示"],
    "output": ["answer", "response", "output_text", "target", "solution", "reply", "answers", "assistant", "gpt", "답변", "응답", "출력",
               "대답", "정답", "回答", "答案", "回答文", "输出", "回复", "出力", "応答"],
    "input": ["context", "inputs", "입력", "맥락", "문맥", "输入", "入力"],
    "conversations": ["conversation", "dialog", "dialogue", "chat", "turns", "conversation_history", "data", "대화",
                      "对话", "会話"],
    "system": ["system_prompt", "system_message", "sys_prompt", "시스템", "系统", "システム"],
    "messages": ["message", "chat_messages"],
    "text": ["content", "document", "body", "sentence", "passage", "texts", "article", "raw_content", "raw_text",
             "paragraph", "본문", "문장", "내용", "텍스트", "文本", "内容", "文章", "本文", "テキスト"],
    "prompt": ["question", "query", "instruction", "prompts"],
    "completion": ["answer", "response", "output", "completions"],
    "chosen": ["accepted", "preferred", "good", "positive", "winner", "chosen_response", "response_chosen"],
    "rejected": ["dispreferred", "bad", "negative", "loser", "rejected_response", "response_rejected"],
    "label": ["kto_tag", "desirable", "is_desirable", "thumbs_up"],
}


# ---- detection -------------------------------------------------------------------------------


def map_columns(row: Any, columns: dict[str, str] | None) -> Any:
    """Rename the file's columns to ours ({ours: theirs})."""
    if not columns or not isinstance(row, dict):
        return row
    out = {k: v for k, v in row.items() if k not in columns.values()}
    for ours, theirs in columns.items():
        if theirs in row:
            out[ours] = row[theirs]
    return out


def _turn_style(value: Any) -> str | None:
    value = _json_cell(value)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "sharegpt" if "from" in value[0] or "value" in value[0] else "messages"
    return None


def _rank(answer: Any) -> float | None:
    """A ranked answer's rank (a number, or a number written as text, as a table holds it); None if it has none."""
    rank = answer.get("rank") if isinstance(answer, dict) and "answer" in answer else None
    if isinstance(rank, str):
        try:
            rank = float(rank)
        except ValueError:
            return None
    return float(rank) if isinstance(rank, (int, float)) and not isinstance(rank, bool) and rank == rank else None


def _ranked(value: Any) -> bool:
    """Answers ranked against each other (Nectar's `answers`: [{answer, rank}, ...], 1 the best)."""
    return isinstance(value, list) and len(value) > 1 and all(_rank(a) is not None for a in value)


def _output_calls(row: dict) -> list | None:
    """An alpaca row's output that is its tool calls (xLAM's `answers`: [{name, arguments}, ...], a list or JSON
    text of one), read so only where the row defines tools: an answer listing {name, ...} records is an answer."""
    if _json_cell(row.get("tools"), "[{") in (None, [], "") or blank(row.get("tools")):
        return None
    calls = _json_cell(row.get("output"))
    if isinstance(calls, list) and calls and all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and "arguments" in c for c in calls):
        return calls
    return None


def row_format(row: dict) -> str | None:
    """The format one row (columns mapped) is in, by its fields; None if none fits."""
    keys = row.keys()
    if "chosen" in keys or "rejected" in keys or ("prompt" in keys and _ranked(row.get("answers"))):
        return "preference"
    if {"human_ref_A", "human_ref_B", "labels"} <= keys:  # Stanford's SHP
        return "preference"
    if "instruction" in keys and isinstance(row.get("output"), list) and not _output_calls(row):
        return "preference"
    for name in ("conversations", "messages"):
        if name in keys:  # with a label: LLaMA-Factory's KTO rows (its `kto_tag`, read as our label)
            return "unpaired" if "label" in keys else _turn_style(row[name]) or (
                "sharegpt" if name == "conversations" else "messages")
    if "instruction" in keys or ("input" in keys and "output" in keys):
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "unpaired" if "label" in keys else "prompt_completion"
    if "text" in keys:
        return "text"
    return None


def detect_format(rows: list[Any], columns: dict[str, str] | None = None, sample: int = 200,
                  named: set[str] | None = None) -> str | None:
    """The format most of the first `sample` rows are in; None if no known format fits. `named`: the fields the
    reader mapped columns to (rows already mapped), which a format must have to be the one meant."""
    mapped = [map_columns(row, columns) for row in rows[:sample] if isinstance(row, dict)]
    votes = Counter(f for row in mapped if (f := row_format(row)))
    found = votes.most_common(1)[0][0] if votes else None
    if named and found and not named <= used_fields(found):
        # the reader named fields of another format (`text=output` on alpaca rows: train the answers as text)
        meant = [f for f in FORMATS if named <= used_fields(f)
                 and sum(all(k in row for k in FORMATS[f][0]) for row in mapped) * 2 > len(mapped)]
        if len(meant) == 1:
            return meant[0]
    return found


def suggest_mapping(fmt: str, keys: list[str], fields: tuple[str, ...] | None = None) -> dict[str, str]:
    """{ours: theirs} for `fmt`'s fields, from exact names, known aliases, then close spellings."""
    required, optional = FORMATS[fmt]
    mapping, free = {}, [k for k in keys if isinstance(k, str)]
    for ours in fields or required + tuple(o for o in optional if o in ("input", "system")):
        lowered = {k.lower(): k for k in free}
        hit = lowered.get(ours) or next((lowered[a] for a in ALIASES.get(ours, []) if a in lowered), None)
        if hit is None:
            close = difflib.get_close_matches(ours, list(lowered), n=1, cutoff=0.75)
            hit = lowered[close[0]] if close else None
        if hit is not None:
            mapping[ours] = hit
            free.remove(hit)
    return mapping


def nearest_format(keys: list[str], among: tuple[str, ...] | None = None) -> tuple[str, dict[str, str]]:
    """For unknown columns: the format (of `among`, default all) whose required fields they match best, and a
    mapping {ours: theirs}."""
    best: tuple[int, int, str, dict[str, str]] = (-1, 0, among[0] if among else "alpaca", {})
    for order, (name, (required, _)) in enumerate(FORMATS.items()):
        if among and name not in among:
            continue
        mapping = suggest_mapping(name, keys)
        score = sum(1 for r in required if r in mapping)
        if (score, -order) > (best[0], best[1]):
            best = (score, -order, name, mapping)
    return best[2], best[3]


# ---- normalisation -----------------------------------------------------------------------------


class Problems(list):
    """(field, key, params) tuples for one row; field uses our names (check.py maps them back). `notes`: what
    was read as the row's writer clearly meant and is said as a warning, the row kept."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[tuple[str | None, str, dict[str, Any]]] = []

    def add(self, field: str | None, key: str, **params: Any) -> None:
        self.append((field, key, params))

    def note(self, field: str | None, key: str, **params: Any) -> None:
        self.notes.append((field, key, params))


def _json_cell(value: Any, opens: str = "[") -> Any:
    """A cell that holds JSON text (CSV and Parquet files often hold lists as JSON), parsed if it opens with one
    of `opens` and parses; or a list of objects as pandas writes one into a CSV (Python's quotes: `[{'role':
    'user', ...}]`); anything else as it is."""
    if isinstance(value, str) and (text := value.lstrip()) and text[0] in opens:
        try:
            return json.loads(value)
        except ValueError:
            if text.startswith(("[{'", "{'", "['")):
                try:
                    parsed = ast.literal_eval(_with_commas(text))  # literals only: nothing is run
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    return value
                return parsed if isinstance(parsed, (list, dict)) else value
            return value
    return value


def _with_commas(text: str) -> str:
    """A list as numpy writes an array of objects or texts (`datasets`' `to_csv()` goes through one): its items
    one after another with no comma, `[{'a': 1}\n {'a': 2}]` or `['hi' 'hello']`, which Python would read as one
    text joined. Commas put back between the list's items, found by Python's own tokenizer (never in a text)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text
    starts = [0, *itertools.accumulate(len(line) for line in text.splitlines(keepends=True))]
    stack, prev, at = [], None, []
    for tok in tokens:
        if tok.type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            continue
        item_ends = prev is not None and (prev.string in ("}", "]") or prev.type == tokenize.STRING)
        item_starts = tok.string in ("{", "[") or tok.type == tokenize.STRING
        if stack == ["["] and item_ends and item_starts:  # two items of the outer list with nothing between
            at.append(starts[prev.end[0] - 1] + prev.end[1])
        if tok.string in ("[", "{"):
            stack.append(tok.string)
        elif tok.string in ("]", "}") and stack:
            stack.pop()
        prev = tok
    for pos in reversed(at):
        text = f"{text[:pos]},{text[pos:]}"
    return text


def _cell_json_error(value: Any) -> dict[str, Any] | None:
    """Why a cell that opens as JSON (`[` or `{`) does not parse, and where (`error`: a `json.*` key where Python
    says a known one; `column`: the character); None for any other value."""
    if isinstance(value, str) and (text := value.strip()) and text[0] in "[{":
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            from .sources import _reason  # the reader's words for Python's

            return {"error": _reason(e.msg), "column": e.pos + 1}
        except ValueError as e:
            return {"error": str(e)[:200], "column": 1}
    return None


def _messages_cell(value: Any) -> Any:
    """A prompt or answer cell parsed as JSON only if it holds messages (objects with a role): an answer may
    well be JSON text itself (`{"name": "Kim"}`, `[1, 2, 3]`) that the model is meant to learn to write."""
    parsed = _json_cell(value, "[{")
    items = parsed if isinstance(parsed, list) else [parsed]
    if parsed is value or not items or not all(isinstance(m, dict) and ("role" in m or "from" in m) for m in items):
        return value
    return parsed


def _type_name(value: Any) -> str:
    """A value's kind as a message key (`type.text`), which messages render in the reader's language."""
    return {bool: "type.bool", int: "type.number", float: "type.number", str: "type.text", list: "type.list",
            dict: "type.object", type(None): "type.null"}.get(type(value), type(value).__name__)


# characters that draw nothing: format controls (zero-width space / joiners, BOM, word joiner, bidi marks), the
# soft hyphen, and the Hangul fillers (U+3164 looks like a space and is not one to str.strip())
_INVISIBLE = re.compile("[\\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                        "\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\x00-\x1f\x7f]*")


def blank(value: Any) -> bool:
    """Missing, or text that shows nothing: empty, spaces, or only invisible characters (a zero-width space)."""
    if value is None or (isinstance(value, float) and value != value):  # NaN: a table's empty cell
        return True
    if not isinstance(value, str):
        return False
    text = value.strip()
    return not text or (not ("!" <= text[0] <= "~") and _INVISIBLE.fullmatch(text) is not None)


def text_field(row: dict, name: str, probs: Problems, required: bool = True) -> str | None:
    if name not in row:
        if required:
            probs.add(name, "data.missing_field")
        return None
    value = row[name]
    if blank(value):
        if required:
            probs.add(name, "data.empty_field")
        return None
    if not isinstance(value, str):
        if (text := _number_text(value, name, probs)) is not None:
            return text
        probs.add(name, "data.wrong_type", expected="type.text", got=_type_name(value))
        return None
    if value.strip() in SPREADSHEET_ERRORS:  # a formula that failed, saved as its error: the model would learn it
        probs.note(name, "data.spreadsheet_error", value=value.strip())  # (a row about Excel may mean it: a warning)
    return value if _encodable(value, name, probs) else None


def _number_text(value: Any, field: str, probs: Problems, index: int | None = None) -> str | None:
    """A number where text belongs (a math set's answer `42`, a Parquet int column) as the text it reads as,
    said; as a CSV cell `42` is read. None for anything else (a boolean is no answer)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value in (float("inf"), float("-inf")):
        return None
    text = str(value)
    if index is None:
        probs.note(field, "data.number_as_text", value=text[:40])
    else:
        probs.note(field, "data.number_as_text_in_message", value=text[:40], index=index)
    return text


SPREADSHEET_ERRORS = {"#N/A", "#VALUE!", "#REF!", "#DIV/0!", "#NAME?", "#NUM!", "#NULL!", "#SPILL!", "#CALC!",
                      "#GETTING_DATA", "#ERROR!"}


def _encodable(text: str, field: str, probs: Problems) -> bool:
    """Half a surrogate pair (from a JSON escape) would break the tokenizer and Arrow later."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        probs.add(field, "data.bad_unicode")
        return False


_TOOL_CALL_JOIN = "\n</tool_call>\n<tool_call>\n"  # one block per call
TOOLS_INTRO = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>"
               "\n\nFor each function call, return a json object with function name and arguments within "
               "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": "
               "<args-json-object>}}\n</tool_call>")  # Hermes / Qwen's words, as their chat templates write them


def _raw_calls(item: dict) -> Any:
    """A message's OpenAI `tool_calls`, or its one legacy `function_call` ({name, arguments}) as a list of one."""
    calls = item.get("tool_calls")
    if calls is None and isinstance(call := _json_cell(item.get("function_call"), "{"), dict):
        return [{"function": call}]
    return calls


def _tool_calls(item: dict) -> list | None:
    """A message's OpenAI `tool_calls`: a list, or JSON text of one (a table's cell); checked by `_checked_calls`."""
    calls = _json_cell(_raw_calls(item))
    return calls if isinstance(calls, list) and calls else None


def _checked_calls(item: dict, field: str, index: int, probs: Problems) -> list | None | bool:
    """A message's OpenAI `tool_calls` (a list, or JSON text of one: a table's cell), None where it has none, False
    where they are wrong (said): not a list, or a call that names no function (it trained as the bare JSON of the
    call). Arguments that are not JSON are kept as written, and said: the model learns to write them so."""
    calls = _json_cell(_raw_calls(item))
    if calls is None or calls == [] or blank(calls):
        return None
    if not isinstance(calls, list):
        probs.add(field, "data.tool_calls_wrong_type", index=index, expected="type.list", got=_type_name(calls))
        return False
    for call in calls:
        fn = call.get("function", call) if isinstance(call, dict) else None  # OpenAI's, or Hermes' own {name, ...}
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or blank(fn["name"]):
            probs.add(field, "data.tool_call_no_name", index=index)
            return False
        if isinstance(args := fn.get("arguments"), str) and not blank(args):
            try:
                json.loads(args)
            except ValueError:
                probs.note(field, "data.tool_arguments_not_json", index=index, name=fn["name"])
    return calls


def _hermes_call(call: Any) -> str:
    """An OpenAI tool call ({id, type, function: {name, arguments: JSON text}}) as Hermes writes one:
    {"name": ..., "arguments": {...}}; anything else as JSON, as it is."""
    fn = call.get("function") if isinstance(call, dict) else None
    if isinstance(fn, dict) and "name" in fn:
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass  # arguments that are not JSON stay the text they are
        call = {"name": fn["name"], "arguments": args if args is not None else {}}
    return json.dumps(call, ensure_ascii=False, default=str)


def _with_tools(msgs: list[dict], row: dict, probs: Problems) -> list[dict]:
    """The row's tool definitions (`tools`: a list, or JSON text of one) told in its system message, where
    every chat template shows them and the model learns which calls it may make."""
    value = _json_cell(row.get("tools"), "[{")
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):  # an empty object is no tool (a table's empty cell, `{}` written for none)
        value = [t for t in value if t != {}]
    if value is None or blank(value) or value == [] or (isinstance(value, str) and value.strip().lower() in (
            "null", "none")):  # null written as text, as some exports write a missing value
        return msgs
    if reason := _cell_json_error(value):  # JSON cut short or hand-edited: where it breaks, not "it is text"
        probs.add("tools", "data.tools_not_json", **reason)
        return msgs
    if not isinstance(value, list):
        probs.add("tools", "data.wrong_type", expected="type.list", got=_type_name(value))
        return msgs
    for i, tool in enumerate(value, 1):  # each a function's definition, as Hermes' and OpenAI's data give it
        if not _tool_name(tool):
            probs.add("tools", "data.not_a_tool", index=i, got=_shown(tool))
            return msgs
    text = TOOLS_INTRO.format(tools="\n".join(json.dumps(t, ensure_ascii=False, default=str) for t in value))
    if msgs and msgs[0]["role"] == "system":
        return [{**msgs[0], "content": f"{msgs[0]['content']}\n\n{text}"}, *msgs[1:]]
    return [{"role": "system", "content": text}, *msgs]


def _tool_name(tool: Any) -> str | None:
    """A tool definition's name: `{name, description, parameters}`, or OpenAI's `{type, function: {name, ...}}`."""
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        tool = tool["function"]
    name = tool.get("name") if isinstance(tool, dict) else None
    return name if isinstance(name, str) and not blank(name) else None


def _content(item: dict, field: str, index: int, probs: Problems) -> str | None:
    value = item.get("content", item.get("value"))
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):  # OpenAI content parts: their text
        texts = [p.get("text") for p in value if isinstance(p.get("text"), str)]
        if kinds := sorted({str(p.get("type") or "?") for p in value if not isinstance(p.get("text"), str)}):
            probs.note(field, "data.parts_left_out", index=index, kind=", ".join(kinds))  # an image: its answer
        value = "\n".join(texts) if texts else None                                    # is learnt without it
    if (calls := _checked_calls(item, field, index, probs)) is False:
        return None
    if calls:  # with or without text before the calls
        calls = _TOOL_CALL_JOIN.join(_hermes_call(c) for c in calls)
        value = f"{value.strip()}\n<tool_call>\n{calls}" if isinstance(value, str) and not blank(value) else calls
    if blank(value):
        probs.add(field, "data.empty_message", index=index)
        return None
    if not isinstance(value, str):
        if (text := _number_text(value, field, probs, index)) is not None:
            return text
        probs.add(field, "data.wrong_type_in_message", index=index, expected="type.text", got=_type_name(value))
        return None
    return value if _encodable(value, field, probs) else None


def turns(value: Any, field: str, probs: Problems, weights: bool = False) -> list[dict[str, Any]] | None:
    """A list of {role|from, content|value} -> [{role, content}] with our three roles, or None.

    With `weights` (a conversation to train on), an assistant message's OpenAI-style `weight` is read:
    1 trains on it, 0 keeps it as context only (the message then carries "weight": 0)."""
    value = _json_cell(value)  # CSV and Parquet files often hold conversations as JSON text
    value = _transcript(value) or value  # or as a transcript ("USER: ... ASSISTANT: ...")
    if not isinstance(value, list):
        if reason := _cell_json_error(value):  # JSON cut short or hand-edited: where it breaks, not "it is text"
            probs.add(field, "data.cell_not_json", **reason)
        else:
            probs.add(field, "data.wrong_type", expected="type.messages", got=_type_name(value))
        return None
    if not value:
        probs.add(field, "data.empty_field")
        return None
    if all(isinstance(item, str) for item in value):  # LIMA, UltraChat: bare texts taking turns, the user first
        value = [{"role": "assistant" if i % 2 else "user", "content": item} for i, item in enumerate(value)]
    elif all(isinstance(item, dict) and {"input", "output"} <= item.keys() and not {"role", "from"} & item.keys()
             for item in value):  # Capybara: exchanges, each a question and its answer
        value = [{"role": role, "content": item[key]} for item in value
                 for role, key in (("user", "input"), ("assistant", "output"))]
    out, ok, results = [], True, False  # results: the last turn is tool results (the next one joins it)
    for i, item in enumerate(value, 1):
        if not isinstance(item, dict):
            probs.add(field, "data.wrong_type_in_message", index=i, expected="type.message", got=_type_name(item))
            ok = False
            continue
        raw = item.get("role", item.get("from"))
        role = ROLES.get(raw.lower()) if isinstance(raw, str) else None
        if raw is None:
            probs.add(field, "data.no_role", index=i, roles=", ".join(sorted(ROLES)))
            ok = False
            continue
        if role is None:
            probs.add(field, "data.unknown_role", index=i, role=str(raw), roles=", ".join(sorted(ROLES)))
            ok = False
            continue
        if role == "system" and blank(item.get("content", item.get("value"))):
            continue  # an empty system turn (SlimOrca's, a table's null) is no system prompt, as an empty column is
        content = _content(item, field, i, probs)
        if content is None:
            ok = False
            continue
        weight = item.get("weight") if weights and role == "assistant" else None  # OpenAI reads it on answers only
        weight = None if isinstance(weight, float) and weight != weight else weight  # NaN: a table's empty cell
        if weight is not None and (isinstance(weight, bool) or weight not in (0, 1)):  # true == 1 in Python
            probs.add(field, "data.bad_weight", index=i, value=json.dumps(weight, default=str))
            ok = False
            continue
        if raw.lower() in _TOOL_CALL and not content.lstrip().startswith("<tool_call>"):
            content = f"<tool_call>\n{_parallel_calls(content)}\n</tool_call>"
        elif role == "assistant" and _tool_calls(item) and blank(item.get("content")):
            content = f"<tool_call>\n{content}\n</tool_call>"
        elif role == "assistant" and _tool_calls(item):  # text, then the calls (opened in _content)
            content = f"{content}\n</tool_call>"
        elif raw.lower() in _TOOL_RESULT:
            if ok and out and out[-1]["role"] == "user" and not results:  # results of a call nobody made: said so,
                probs.add(field, "data.tool_result_without_call", index=i)  # not as "a second user message"
                ok = False
                continue
            if not content.lstrip().startswith("<tool_response>"):  # Hermes' own data writes the tags itself
                content = f"<tool_response>\n{content}\n</tool_response>"
            if results and out:  # the results of parallel calls, one after another: one turn, as Qwen's and
                out[-1] = {**out[-1], "content": f"{out[-1]['content']}\n{content}"}  # Hermes' templates write
                continue                                                         # them (not two user turns)
        results = raw.lower() in _TOOL_RESULT
        out.append({"role": role, "content": content, **({"weight": 0} if weight == 0 else {})})
    return out if ok else None


def _parallel_calls(content: str) -> str:
    """A ShareGPT `function_call` turn that holds a JSON list of calls (LLaMA-Factory's parallel calls): one
    call a block, as the model is to write them; anything else as written."""
    calls = _json_cell(content)
    if isinstance(calls, list) and len(calls) > 1 and all(isinstance(c, dict) for c in calls):
        return _TOOL_CALL_JOIN.join(json.dumps(c, ensure_ascii=False) for c in calls)
    return content


def check_turns(msgs: list[dict[str, str]], field: str, probs: Problems, end: str = "assistant") -> bool:
    """System first (optional), then user and assistant taking turns, starting with the user."""
    ok, prev = True, None
    for i, m in enumerate(msgs, 1):
        role = m["role"]
        if role == "system":
            if i != 1:
                probs.add(field, "data.system_not_first", index=i)
                ok = False
            continue
        if prev is None and role == "assistant":
            probs.add(field, "data.starts_with_assistant")
            return False
        if role == prev:
            probs.add(field, "data.not_alternating", index=i, role=role, who=f"role.{role}")  # said in the language
            return False
        prev = role
    if prev is None:
        probs.add(field, "data.no_turns")
        return False
    if ok and prev != end:
        probs.add(field, "data.ends_without_answer" if end == "assistant" else "data.prompt_ends_with_assistant")
        ok = False
    return ok


def _trim_loose_ends(msgs: list[dict], field: str, probs: Problems) -> list[dict]:
    """A scraped chat (ShareGPT) often opens with the assistant's greeting or ends on a question left
    unanswered: both are left out and said, where a conversation of user and assistant turns remains."""
    system = msgs[:1] if msgs and msgs[0]["role"] == "system" else []
    body = msgs[len(system):]
    lead = next((i for i, m in enumerate(body) if m["role"] != "assistant"), len(body))
    tail = next((i for i, m in enumerate(reversed(body)) if m["role"] != "user"), len(body))
    kept = body[lead:len(body) - tail]
    if not (lead or tail) or not any(m["role"] == "assistant" for m in kept):
        return msgs  # nothing to trim, or nothing left: check_turns says what is wrong with the whole
    if lead:
        probs.note(field, "data.leading_answer_dropped", count=lead)
    if tail:
        probs.note(field, "data.unanswered_dropped", count=tail)
    return system + kept


def _with_system(msgs: list[dict], row: dict, probs: Problems) -> list[dict]:
    system = text_field(row, "system", probs, required=False)
    if system and not (msgs and msgs[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *msgs]
    if system and msgs[0]["content"].strip() != system.strip():  # one prompt trains; the other is said
        probs.note("system", "data.system_twice")
    return msgs


def _alpaca_prompt(row: dict, probs: Problems) -> list[dict] | None:
    before = len(probs)
    extra = text_field(row, "input", probs, required=False)
    # as LLaMA-Factory: the prompt is instruction + input, so either one alone is a prompt
    instruction = text_field(row, "instruction", probs, required=extra is None)
    if len(probs) > before:
        return None
    msgs: list[dict] = []
    history = _json_cell(row.get("history"))
    if history:
        if (earlier := _history(history, probs)) is None:
            return None
        msgs += earlier
    if instruction is None and extra is None:
        return None
    msgs.append({"role": "user", "content": "\n\n".join(t for t in (instruction, extra) if t is not None)})
    return _with_system(msgs, row, probs)


def _history(history: Any, probs: Problems) -> list[dict] | None:
    """Alpaca's `history`, earlier [question, answer] pairs, as turns; None where one is wrong, said by its item
    number (the first wrong one: a broken export breaks every pair alike). An empty turn is an error, as in a
    conversation: it would teach the model to answer with nothing."""
    if not isinstance(history, list):
        probs.add("history", "data.wrong_type", expected="type.history", got=_type_name(history))
        return None
    msgs: list[dict] = []
    for index, pair in enumerate(history, 1):
        if not isinstance(pair, (list, tuple)):  # a flat ["q", "a"] is the usual slip
            probs.add("history", "data.history_not_pair", index=index, got=_type_name(pair))
            return None
        if len(pair) != 2:
            probs.add("history", "data.history_pair_size", index=index, count=len(pair))
            return None
        for role, text in zip(("user", "assistant"), pair, strict=True):
            if text is not None and not isinstance(text, str):
                probs.add("history", "data.history_wrong_type", index=index, got=_type_name(text))
                return None
            if blank(text):
                probs.add("history", "data.history_empty_question" if role == "user" else "data.history_empty_answer",
                          index=index)
                return None
            if not _encodable(text, "history", probs):
                return None
            msgs.append({"role": role, "content": text})
    return msgs


def _answer(value: Any, field: str, probs: Problems, prompt: list[dict] | None = None) -> list[dict] | None:
    """A chosen / rejected / completion answer: text, one message, or a list of messages.

    A list that repeats the prompt before the answer (some exports do) is cut after the prompt.
    """
    value = _messages_cell(value)
    if isinstance(value, dict):
        value = [value]
    if prompt and (script := _transcript(value, prompt=True)):  # the prompt's transcript again, and the answer
        value = script
    if isinstance(value, list):
        msgs = turns(value, field, probs)
        if msgs and prompt:
            asked = [(m["role"], m["content"].strip()) for m in prompt if m["role"] != "system"]
            start = 1 if msgs[0]["role"] == "system" else 0
            if [(m["role"], m["content"].strip()) for m in msgs[start:start + len(asked)]] == asked:
                msgs = msgs[start + len(asked):]
                if not msgs:
                    probs.add(field, "data.empty_field")
                    return None
        if msgs is not None and any(m["role"] != "assistant" for m in msgs):
            theirs = [m["content"].strip() for m in msgs if m["role"] == "user"]
            ours = [m["content"].strip() for m in prompt or [] if m["role"] == "user"]
            asked = list(zip(theirs, ours, strict=False))  # as far as both go
            differs = next(((t, o) for t, o in asked if t != o), None)
            if differs:  # a whole conversation, but another one than the prompt's: its first question that differs
                probs.add(field, "data.answer_prompt_differs", got=_short(differs[0]), expected=_short(differs[1]))
            else:
                probs.add(field, "data.answer_not_assistant")
            return None
        return msgs
    if blank(value):
        probs.add(field, "data.empty_field")
        return None
    if not isinstance(value, str):
        if (text := _number_text(value, field, probs)) is None:
            probs.add(field, "data.wrong_type", expected="type.text", got=_type_name(value))
            return None
        value = text
    return [{"role": "assistant", "content": value}]


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _prompt(row: dict, probs: Problems) -> list[dict] | None:
    """The prompt of a prompt-completion or preference row, as messages ending with the user."""
    if "prompt" in row:
        value = _messages_cell(row["prompt"])
        if isinstance(value, dict):
            value = [value]
        if isinstance(value, list) or (value := _transcript(value, prompt=True)):  # a transcript: "Human: ... Assistant: ..."
            msgs = turns(value, "prompt", probs)
        else:
            text = text_field(row, "prompt", probs)
            msgs = [{"role": "user", "content": text}] if text is not None else None
    elif "instruction" in row or "input" in row:  # alpaca's: input alone is a prompt too (distilabel's orca pairs)
        msgs = _alpaca_prompt(row, probs)
        return msgs if msgs is None or check_turns(msgs, "instruction", probs, end="user") else None
    elif "conversations" in row or "messages" in row:
        name = "conversations" if "conversations" in row else "messages"
        msgs = turns(row[name], name, probs)
        return msgs if msgs is None or check_turns(msgs, name, probs, end="user") else None
    else:
        probs.add("prompt", "data.missing_field")
        return None
    if msgs is None:
        return None
    msgs = _with_system(msgs, row, probs)
    return msgs if check_turns(msgs, "prompt", probs, end="user") else None


# chat transcripts written as one text, known by the speaker tag they start with: Anthropic HH-RLHF's
# "\n\nHuman: ...\n\nAssistant: ...", Guanaco's "### Human: ... ### Assistant: ...", Glaive's "USER: ... ASSISTANT: ...
# <|endoftext|> FUNCTION RESPONSE: ..." and the "<usr> ... <bot> ..." of some Korean sets
_TRANSCRIPTS = [re.compile(r"(?:^|\n\n)(Human|Assistant): ?"),
                re.compile(r"\s*### (Human|Assistant): ?"),
                re.compile(r"(?:^|\n+)(USER|ASSISTANT|SYSTEM|FUNCTION RESPONSE): ?"),
                re.compile(r"(?:^|\n)[ \t]*<(usr|bot|sys)>:?[ \t]?")]
_SPEAKERS = {"Human": "human", "Assistant": "assistant", "USER": "user", "ASSISTANT": "assistant", "SYSTEM": "system",
             "FUNCTION RESPONSE": "observation", "usr": "user", "bot": "assistant", "sys": "system"}


def _transcript(value: Any, prompt: bool = False) -> list[dict] | None:
    """A chat transcript's text (`_TRANSCRIPTS`) as messages; None for any other value. A `prompt`'s closing
    empty answer ("Assistant:", where the model's answer goes) is left out."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    for tags in _TRANSCRIPTS:
        if not tags.match(text):
            continue
        parts = tags.split(text)  # ['', 'Human', text, 'Assistant', text, ...]
        msgs = [{"role": _SPEAKERS[who], "content": said.strip().removesuffix("<|endoftext|>").strip()}
                for who, said in zip(parts[1::2], parts[2::2], strict=True)]
        if prompt and len(msgs) > 1 and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
            msgs.pop()
        return msgs
    return None


def _split_shared_prefix(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def _preference(row: dict, probs: Problems, need_rejected: bool = True) -> dict | None:
    """A preference pair; `need_rejected=False` (SFT and pretraining, which train on the chosen answer alone):
    a pair with no rejected answer is said as a warning and kept, as its prompt and chosen answer."""
    if "chosen" not in row and {"human_ref_A", "human_ref_B", "labels"} <= row.keys():  # SHP: labels 1 means A
        if (a_better := _boolean(row["labels"], _SHP_LABELS)) is None:            # was preferred, 0 B
            probs.add("labels", "data.bad_shp_label", got=_shown(row["labels"]))
            return None
        row = {**row, "prompt": row.get("prompt", row.get("history")),
               "chosen": row["human_ref_A" if a_better else "human_ref_B"],
               "rejected": row["human_ref_B" if a_better else "human_ref_A"]}
        if row["prompt"] is None:
            row.pop("prompt")
    if "chosen" not in row and "rejected" not in row and isinstance(row.get("answers"), list):
        # ranked answers: the best against the worst
        if not _ranked(row["answers"]):
            probs.add("answers", "data.answers_not_ranked", count=len(row["answers"]))
            return None
        ranked = sorted(row["answers"], key=_rank)
        if _rank(ranked[0]) == _rank(ranked[-1]):  # all equal: no answer is the better one
            probs.add("answers", "data.answers_tied", rank=f"{_rank(ranked[0]):g}")
            return None
        row = {**row, "chosen": ranked[0]["answer"], "rejected": ranked[-1]["answer"]}
    if "chosen" not in row and "rejected" not in row and isinstance(row.get("output"), list):
        pair = row["output"]  # alpaca-style preference: output = [chosen, rejected]
        if len(pair) != 2:
            probs.add("output", "data.preference_pair", count=len(pair))
            return None
        row = {**row, "chosen": pair[0], "rejected": pair[1]}
    if "chosen" not in row:
        probs.add("chosen", "data.missing_field")
    alone = not need_rejected and "chosen" in row and blank(row.get("rejected"))  # the chosen answer alone trains
    if alone:
        probs.note("rejected", "data.rejected_unused_missing")
    elif "rejected" not in row and need_rejected:
        probs.add("rejected", "data.missing_rejected")
    if "chosen" not in row or ("rejected" not in row and not alone):
        return None
    has_prompt = any(k in row for k in ("prompt", "instruction", "input", "conversations", "messages"))
    if alone and not has_prompt:  # one conversation: trained as it is
        msgs = turns(_transcript(row["chosen"]) or row["chosen"], "chosen", probs)
        return {"messages": msgs} if msgs is not None and check_turns(msgs, "chosen", probs) else None
    rejected = None
    if has_prompt:
        prompt = _prompt(row, probs)
        chosen = _answer(row["chosen"], "chosen", probs, prompt)
        if not alone:
            rejected = _answer(row["rejected"], "rejected", probs, prompt)
    elif not _turn_style(row["chosen"]) and not (_transcript(row["chosen"]) and _transcript(row["rejected"])):
        probs.add("prompt", "data.missing_field")
        return None
    else:  # no prompt: chosen / rejected are whole conversations that share it (lists, or HH transcripts)
        chosen = turns(_transcript(row["chosen"]) or row["chosen"], "chosen", probs)
        rejected = turns(_transcript(row["rejected"]) or row["rejected"], "rejected", probs)
        if chosen is None or rejected is None:
            return None
        prompt, chosen, rejected = _split_shared_prefix(chosen, rejected)
        if not prompt or any(m["role"] != "assistant" for m in chosen + rejected):
            # the two must be one conversation up to their last answers, which is the prompt they answer
            probs.add("chosen", "data.pair_prompts_differ", index=len(prompt) + 1)
            return None
        if not check_turns(prompt, "chosen", probs, end="user"):
            return None
    if prompt is None or chosen is None or (rejected is None and not alone):
        return None
    if any(m["role"] != "assistant" for m in chosen + (rejected or [])):
        probs.add("chosen", "data.answer_not_assistant")
        return None
    return {"prompt": prompt, "chosen": chosen} if alone else {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _boolean(value: Any, words: dict[str, bool]) -> bool | None:
    """A true / false cell: a boolean, 1 / 0 (a table's float column too), or one of `words` in any case; None
    for anything else."""
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return bool(value)
    return words.get(value.strip().lower()) if isinstance(value, str) else None


# SHP's `labels`: whether human_ref_A was preferred (1, "A") or human_ref_B (0, "B"); anything else is refused, as
# no reading may turn it into a preference (an empty cell once meant "B", unsaid)
_SHP_LABELS = {"1": True, "1.0": True, "true": True, "a": True, "0": False, "0.0": False, "false": False, "b": False}


def _shown(value: Any) -> str:
    """A wrong value as a finding quotes it: as written, and null or an empty cell in words (not Python's None)."""
    if value is None or (isinstance(value, float) and value != value):
        return "type.null"
    if isinstance(value, str) and not value.strip():
        return "type.empty"
    text = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (bool, list, dict)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_LABELS = {"true": True, "1": True, "1.0": True, "yes": True, "good": True, "desirable": True,
           "false": False, "0": False, "0.0": False, "no": False, "bad": False, "undesirable": False}


def _label(row: dict, probs: Problems) -> bool | None:
    """An unpaired answer's label: true / false (also 1 / 0 and their words, as tables and exports write them)."""
    if "label" not in row:
        probs.add("label", "data.missing_field")
        return None
    value = row["label"]
    if (label := _boolean(value, _LABELS)) is None:
        probs.add("label", "data.bad_label", got=_shown(value))
    return label


def normalize_row(row: Any, fmt: str, need_rejected: bool = True) -> tuple[dict | None, Problems]:
    """One row in `fmt` (columns already mapped) -> (trl record or None, problems). `need_rejected=False`: for a
    stage that trains on a preference pair's chosen answer alone (SFT, pretraining)."""
    probs = Problems()
    if not isinstance(row, dict):
        probs.add(None, "data.not_an_object", got=_type_name(row))
        return None, probs
    record: dict | None = None
    if fmt == "alpaca":
        calls = _output_calls(row)
        if isinstance(row.get("output"), list) and not calls:
            probs.add("output", "data.wrong_type", expected="type.text", got="type.list")
            return None, probs
        prompt = _alpaca_prompt(row, probs)
        if calls:  # the answer is the calls, written as a tool-calling turn is
            answer = turns([{"role": "assistant", "content": None, "tool_calls": calls}], "output", probs)
        else:
            output = text_field(row, "output", probs)
            answer = [{"role": "assistant", "content": output}] if output is not None else None
        if prompt is not None and answer is not None:
            msgs = _with_tools([*prompt, *answer], row, probs)
            record = {"messages": msgs} if check_turns(msgs, "instruction", probs) else None
    elif fmt in ("sharegpt", "messages"):
        name = "conversations" if "conversations" in row or ("messages" not in row and fmt == "sharegpt") else "messages"
        if name not in row:
            probs.add(name, "data.missing_field")
            return None, probs
        msgs = turns(row[name], name, probs, weights=True)
        if msgs is not None:
            msgs = _with_tools(_trim_loose_ends(_with_system(msgs, row, probs), name, probs), row, probs)
            record = {"messages": msgs} if check_turns(msgs, name, probs) else None
    elif fmt == "unpaired" and "completion" not in row and ("messages" in row or "conversations" in row):
        name = "conversations" if "conversations" in row else "messages"  # LLaMA-Factory's KTO: a conversation
        msgs = turns(row[name], name, probs)                                 # whose last answer is labelled
        if msgs is not None:
            msgs = _with_tools(_with_system(msgs, row, probs), row, probs)
            msgs = msgs if check_turns(msgs, name, probs) else None
        label = _label(row, probs)
        if msgs is not None and label is not None:
            record = {"prompt": msgs[:-1], "completion": msgs[-1:], "label": label}
    elif fmt in ("prompt_completion", "unpaired"):  # unpaired: KTO's, the answer marked desirable (true) or not
        prompt = _prompt(row, probs)
        completion = _answer(row["completion"], "completion", probs, prompt) if "completion" in row else None
        if "completion" not in row:
            probs.add("completion", "data.missing_field")
        label = _label(row, probs) if fmt == "unpaired" else None
        if prompt is not None and completion is not None and (fmt == "prompt_completion" or label is not None):
            record = {"prompt": prompt, "completion": completion}
            if fmt == "unpaired":
                record["label"] = label
    elif fmt == "preference":
        record = _preference(row, probs, need_rejected)
    elif fmt == "text":
        text = text_field(row, "text", probs)
        record = {"text": text} if text is not None else None
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return (record if not probs else None), probs


def used_fields(fmt: str) -> set[str]:
    required, optional = FORMATS[fmt]
    return set(required) | set(optional) | ({"messages", "conversations"} if fmt in ("sharegpt", "messages") else set())


def final_answer(record: dict) -> str | None:
    """The answer the row teaches (last assistant turn, completion, or chosen)."""
    for key in ("chosen", "completion", "messages"):
        if key in record:
            msgs = [m for m in record[key] if m["role"] == "assistant"]
            return msgs[-1]["content"] if msgs else None
    return None


def has_system(record: dict) -> bool:
    """The row has a system prompt of its own (tool definitions alone, told in a system message, are none)."""
    msgs = record.get("messages") or record.get("prompt") or []
    return bool(msgs) and msgs[0]["role"] == "system" and not tools_only(msgs[0])


def tools_only(msg: dict) -> bool:
    """A system message that holds nothing but the row's tool definitions (`_with_tools`)."""
    return msg["role"] == "system" and msg["content"].startswith(TOOLS_INTRO.split("{tools}")[0])
