"""Read a data file (or a hub dataset) into rows, each with the number a person would look for.

Knows file types, encodings and JSON/CSV syntax; knows nothing of formats (formats.py does).
A problem met while reading never raises: it becomes a finding (see findings.py for the
row-number convention), and reading goes on past it where the syntax allows.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import gzip
import html
import io
import itertools
import json
import os
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..paths import DATA
from .findings import Finding, error, warning
from .trees import is_message_table, thread

DEMOS = {"demo:sft": "demo_sft.json", "demo:dpo": "demo_dpo.json", "demo:pt": "demo_pt.txt"}
EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv",
              ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".text": "text", ".md": "text",
              ".arrow": "arrow", ".feather": "arrow"}
# control characters other than whitespace, raw or as JSON escapes (a terminal's colour codes, \u0000)
_RAW_CONTROLS = re.compile("[\x01-\x08\x0e-\x1f\x7f]")  # (a form feed: pdftotext's page break)
_ESCAPED_CONTROLS = re.compile(r"\\u00(?:0[0-8eEfF]|1[0-9a-fA-F]|7[fF])")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_WS = re.compile(r"[ \t\r\n]*")


@dataclass
class Source:
    """What was read: `rows` (parsed records), their person-facing `numbers`, their start `lines`."""

    path: str
    kind: str  # json | jsonl | csv | parquet | text | hub
    rows: list[Any] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    lines: list[int] | None = None
    findings: list[Finding] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)  # lines of a UTF-8 file with bytes that are not UTF-8
    controls: bool = False  # the text holds control characters (raw, or as JSON's \u escapes): rows to look at

    def add(self, row: Any, number: int, line: int | None = None) -> None:
        self.rows.append(row)
        self.numbers.append(number)
        if self.lines is not None:
            self.lines.append(line if line is not None else number)


def resolve_data_path(spec_path: str) -> str:
    """`demo:sft` -> the bundled file; `~` expanded; anything else unchanged (a file or a hub name)."""
    if spec_path in DEMOS:
        return str(DATA / DEMOS[spec_path])
    return os.path.expanduser(spec_path)


def is_hub_name(spec_path: str) -> bool:
    path = resolve_data_path(spec_path)
    if os.path.exists(path) or Path(path).suffix.lower() in EXTENSIONS.keys() | SPREADSHEETS | _FILE_SUFFIXES:
        return False  # a file's name (not there: "file not found", not a hub dataset that this machine can't reach)
    return bool(_HUB_NAME.match(path)) and not path.startswith(".")


def read_source(spec_path: str, split: str = "train") -> Source:
    """Read a file, a folder `datasets` saved, or a hub dataset. Never raises for bad data; see `Source.findings`."""
    path = resolve_data_path(spec_path)
    src = _read_hub(path, split) if is_hub_name(spec_path) else _read_saved(path, split) or _read_file(path)
    if is_message_table(src.rows):  # OpenAssistant's messages, a row each: threaded into conversations
        thread(src)
    if not src.rows and not any(f.severity == "error" for f in src.findings):
        src.findings.append(error(None, None, "data.empty_file", path=src.path))
    return src


def _read_file(path: str) -> Source:
    """A local file, read by its extension (a `.gz` unpacked first)."""
    if os.path.isdir(path):
        return _fatal(path, "dir", "data.not_a_file", path=path)
    if not os.path.exists(path):
        return _fatal(path, "missing", "data.file_not_found", path=path)
    name = path[:-3] if path.lower().endswith(".gz") else path
    kind = EXTENSIONS.get(Path(name).suffix.lower())
    if kind is None and Path(name).suffix.lower() in SPREADSHEETS:
        return _fatal(path, "unknown", "data.spreadsheet_file", path=path, ext=Path(name).suffix)
    if kind is None:
        return _fatal(path, "unknown", "data.unsupported_file", path=path, ext=Path(name).suffix or "(none)",
                      supported=", ".join(sorted(EXTENSIONS)) + ", " + ", ".join(
                          f"{e}.gz" for e in (".csv", ".json", ".jsonl", ".txt")))
    try:
        data = Path(path).read_bytes()
        if path.lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        return _fatal(path, kind, "data.read_failed", path=path, error=_read_error(e))
    if not data.strip():  # an empty file of any kind is said as one (an empty .parquet was "magic bytes not found")
        return Source(path, kind)
    looks = _binary_kind(data)
    if looks == "gzip" and kind != "parquet":  # compressed, but not named .gz: read what it holds
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            return _fatal(path, kind, "data.read_failed", path=path, error=_read_error(e))
        looks = _binary_kind(data)
    if (size := _lfs_pointer(data)) is not None:  # a clone without git-lfs: the data's stand-in, not the data
        return _fatal(path, kind, "data.lfs_pointer", path=path, size=_size_text(size))
    if kind != "text" and (title := _html_page(data)) is not None:  # a .txt of HTML may be meant: pretraining text
        return _fatal(path, kind, "data.html_page", path=path, title=title)
    if kind == "arrow":
        return _read_arrow(path, data)
    if looks == "Parquet" or kind == "parquet":
        src = _read_parquet(path, data)
        if kind != "parquet":  # a Parquet file named .json or .csv: read as what it is, and said
            src.findings.insert(0, warning(None, None, "data.binary_named_as_text", kind=looks, ext=Path(name).suffix))
        return src
    if looks:
        return _fatal(path, kind, "data.binary_file", path=path, kind=looks)
    src = Source(path, kind)
    text = _decode(data, src)
    if text is None:
        return src
    if "\r" in text and "\n" not in text:  # old Mac line ends (CR alone): every reader below splits on \n
        text = text.replace("\r", "\n")
    nul = _line_at(text, text.index("\x00")) if "\x00" in text else None
    # a file's rows are looked at for control characters only where it holds some: raw in a table or text (JSON
    # refuses them raw in its strings), or as JSON's escapes
    src.controls = bool(("\\u00" in text and _ESCAPED_CONTROLS.search(text))
                        or (kind in ("csv", "text") and _RAW_CONTROLS.search(text)))
    if nul:  # kept reading: the rows around it may say what happened
        src.findings.append(error(None, None, "data.nul_byte", line=nul))
    if kind in ("csv", "text") and (held := _json_named_as_text(text)):  # JSONL saved as .txt or .csv
        src.findings.append(warning(None, None, "data.json_named_as_text", ext=Path(name).suffix, kind=held[0],
                                    name=held[1]))
        src.kind = "jsonl" if held[1] == ".jsonl" else "json"
        _read_json_any(text, src)
    elif kind == "csv":
        _read_csv(text, src, "\t" if name.lower().endswith(".tsv") else None)
    elif kind == "text" and _tab_table(text):  # Excel's "Unicode Text (*.txt)": a sheet, tab-separated
        src.kind = "csv"
        src.findings.append(warning(None, None, "data.txt_is_table"))
        _read_csv(text, src, "\t")
    elif kind == "text":
        _read_text(text, src)
    else:
        _read_json_any(text, src)
        if src.rows and _may_repeat_keys(text, src.rows):
            _report_repeated_keys(text, src)
    if src.damaged:
        _damaged_rows(src)
    if nul:  # the NUL's line fails to parse too: because of the NUL, not "a line break inside a text in quotes"
        said = [f for f in src.findings if f.key == "data.unparseable" and nul in (f.line, f.params.get("line"))]
        for f in said:
            f.params["error"] = "json.nul_byte"
        if said:  # told at its row: the file's own word on the same byte goes
            src.findings = [f for f in src.findings if not (f.key == "data.nul_byte" and f.line == nul)]
    return src


def _json_named_as_text(text: str) -> tuple[str, str] | None:
    """(what it holds, its extension) where a .txt or .csv holds JSON rows: lines that are each a whole object
    (JSONL), or one array of objects. Read as text, such a file trained on its braces and quotes (pretraining) or
    was refused as plain text (SFT); read as a table, its first row's JSON was taken for a header."""
    start = _WS.match(text, 0).end()
    if start == len(text) or text[start] not in "[{":
        return None
    if text[start] == "{":  # each of the first 20 lines an object (a text that opens with one JSON line stays text)
        lines = [ln for ln in text[start:].split("\n", 40)[:40] if ln.strip()][:20]
        jsonl = len(lines) > 1 and all(isinstance(_parsed_alone(ln), dict) for ln in lines)
        return ("JSON Lines", ".jsonl") if jsonl else None
    try:
        rows = json.loads(text[start:])
    except ValueError:
        return None
    return ("JSON", ".json") if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows) else None


def _read_error(e: BaseException) -> str:
    """Why a file could not be read: a message key where one says it in the reader's language (a damaged or
    cut-short download), else the system's own words (permission denied, ...)."""
    if isinstance(e, EOFError):
        return "file.gzip_cut_short"
    if isinstance(e, (zlib.error, gzip.BadGzipFile)):
        return "file.gzip_damaged"
    return str(e)


def _tab_table(text: str) -> bool:
    """A .txt that is a table: a header of tab-separated column names, at least one of them ours or a name people
    use for ours (`instruction`, `질문`), and the lines after it with as many tabs (most of the first 50)."""
    from .formats import ALIASES, FIELDS

    lines = [ln for ln in text.lstrip("\ufeff").split("\n", 51)[:51] if ln.strip()]
    if len(lines) < 2 or "\t" not in lines[0]:
        return False
    names = {c.strip().strip('"').lower() for c in lines[0].split("\t")}
    known = FIELDS | {a.lower() for aliases in ALIASES.values() for a in aliases}
    if not names & known:
        return False
    # records, not lines: Excel quotes a cell that holds a line break ("긴 글\n둘째 줄"), its row over two lines
    records = [r for r in itertools.islice(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter="\t"), 51)
               if any(c.strip() for c in r)]
    width = len(records[0])
    return len(records) > 1 and sum(len(r) == width for r in records[1:]) >= 0.8 * (len(records) - 1)


def _fatal(where: str, source_kind: str, key: str, **params: Any) -> Source:
    return Source(where, source_kind, findings=[error(None, None, key, **params)])


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


SPREADSHEETS = {".xlsx", ".xlsm", ".xls", ".ods", ".numbers"}  # saved as CSV, they read as any CSV
_FILE_SUFFIXES = {".gz", ".zip", ".bz2", ".xz", ".zst", ".tar", ".7z", ".avro", ".orc", ".xml",
                  ".html", ".htm", ".pdf", ".docx", ".doc", ".yaml", ".yml", ".pkl", ".npy", ".db", ".sqlite"}

# ---- encodings -------------------------------------------------------------------------------

# the first bytes of files people save under a text name by mistake: a sheet, a picture, a compressed file
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "ZIP (.xlsx, .docx, .zip)"),
          (b"\xd0\xcf\x11\xe0", "Excel (.xls)"), (b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"),
          (b"SQLite format 3\x00", "SQLite"))


_LFS = re.compile(rb"version https://git-lfs\.github\.com/spec/v1\s*\n(?:.*\n)*?size (\d+)")
_HTML = re.compile(rb"\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _lfs_pointer(data: bytes) -> int | None:
    """The size of the file a Git LFS pointer stands for, where `data` is one (a clone made without git-lfs)."""
    m = _LFS.match(data[:1024].lstrip(b"\xef\xbb\xbf")) if len(data) < 1024 else None
    return int(m[1]) if m else None


def _html_page(data: bytes) -> str | None:
    """The title of the web page `data` is (a download that got an error or sign-in page), else None."""
    head = data[:65536].lstrip(b"\xef\xbb\xbf")
    if not _HTML.match(head):
        return None
    title = _TITLE.search(head)  # or, where it has none, its first words
    text = title[1] if title else re.sub(rb"<(script|style)\b.*?</\1>|<[^>]*>", b" ", head, flags=re.I | re.S)
    text = html.unescape(re.sub(r"\s+", " ", text.decode("utf-8", "replace")).strip())
    return (text[:117] + "...") if len(text) > 120 else text or "..."


def _size_text(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _binary_kind(data: bytes) -> str | None:
    """What a binary file is, by its first bytes (the kinds in _MAGIC; Parquet and Arrow by both ends, since
    text could start with their ASCII marks); None for anything else."""
    for mark, kind in ((b"PAR1", "Parquet"), (b"ARROW1", "Arrow")):
        if data.startswith(mark) and data.endswith(mark):
            return kind
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


def _decode(data: bytes, src: Source) -> str | None:
    """UTF-8 (with or without BOM) or UTF-16 with BOM; else a legacy CJK encoding with a warning."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    elif b"\x00" in (head := data[:4096]):  # UTF-16 without a BOM: every other byte of Latin text is 0
        half, odd, even = len(head) / 2, head[1::2].count(0), head[0::2].count(0)
        enc = "utf-16-le" if odd > 0.3 * half > even else ("utf-16-be" if even > 0.3 * half > odd else None)
        if enc:
            try:
                text = data.decode(enc)
                src.findings.append(warning(None, None, "data.encoding_guessed", encoding=enc.upper()))
                return text
            except UnicodeDecodeError:
                pass
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:  # utf-8-sig counts its positions after a BOM
        bad_line = data.count(b"\n", 0, e.start + 3 * data.startswith(b"\xef\xbb\xbf")) + 1
        text = data.decode("utf-8-sig", errors="replace")
        if text.count("\ufffd") * 20 < len(text) - len(text.encode("ascii", "ignore")):  # mostly UTF-8: a damaged spot
            src.damaged = _damaged_lines(data)  # said at their rows, once the rows are read (`_damaged_rows`)
            return text
    if guessed := _utf16_without_bom(data):
        src.findings.append(warning(None, None, "data.encoding_guessed", encoding=guessed[0].upper()))
        return guessed[1]
    damaged = None  # (encoding, line): a file in a legacy encoding but for a byte or two (a bad copy, a cut)
    for enc in _LEGACY:  # what Excel writes on Korean / Chinese / Japanese systems
        try:
            text = data.decode(enc)
        except UnicodeDecodeError as e:
            loose = data.decode(enc, errors="replace")
            if damaged is None and loose.count("\ufffd") <= 3 and _plausible(loose, enc):
                damaged = enc, data.count(b"\n", 0, e.start) + 1
            continue
        if not _plausible(text, enc):  # gb18030 decodes almost any bytes: Latin-1 text would become nonsense
            continue
        src.findings.append(warning(None, None, "data.encoding_guessed", encoding=enc))
        return text
    if damaged:  # said at the damaged line, not at line 1 where the first non-UTF-8 character is
        src.findings.append(error(None, None, "data.damaged_encoding", line=damaged[1], encoding=damaged[0]))
        return None
    src.findings.append(error(None, None, "data.not_utf8", line=bad_line, encoding="UTF-8"))
    return None


def _damaged_lines(data: bytes) -> list[int]:
    """The lines (from 1) of mostly UTF-8 bytes that are not UTF-8."""
    out = []
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            out.append(number)
    return out


def _damaged_rows(src: Source) -> None:
    """Each row a damaged line falls in is left out and refused at its row, so `data.skip_bad_rows` can train on
    the others (a single bad byte in a 100,000-row file refused all of it); a damaged line no row read holds (a
    header, a line that did not parse, said already) is the file's error, as before."""
    starts = src.lines or src.numbers
    one_line = src.kind == "jsonl"  # a row a line; others (CSV cells, JSON arrays, text blocks) span lines
    hit: dict[int, int] = {}  # row index -> its first damaged line
    for line in src.damaged:
        i = bisect.bisect_right(starts, line) - 1
        end = starts[i + 1] - 1 if i + 1 < len(starts) else float("inf")
        if i >= 0 and (starts[i] == line if one_line else line <= end):
            hit.setdefault(i, line)
        elif not any(f.severity == "error" and line in (f.line, f.row) for f in src.findings):
            src.findings.append(error(None, None, "data.not_utf8", line=line, encoding="UTF-8"))
            return  # the file's: refused whole, as a file that is not UTF-8 from there on
    for i, line in hit.items():
        src.findings.append(error(src.numbers[i], None, "data.not_utf8_row", line))
    keep = [i for i in range(len(src.rows)) if i not in hit]
    src.rows = [src.rows[i] for i in keep]
    src.numbers = [src.numbers[i] for i in keep]
    if src.lines is not None:
        src.lines = [src.lines[i] for i in keep]


def _utf16_without_bom(data: bytes) -> tuple[str, str] | None:
    """(encoding, text) for UTF-16 (LE or BE) with no BOM and too few zero bytes for the guess above (text that is
    mostly Hangul or hanzi: no byte of theirs is 0): the one that decodes and puts its line ends where the bytes
    have them. Text in a byte encoding decoded as UTF-16 almost never does: its newline bytes pair with a non-zero
    one."""
    newlines = data.count(b"\n")
    if len(data) % 2 or not newlines:
        return None
    for enc in ("utf-16-le", "utf-16-be"):
        try:
            text = data.decode(enc)  # strict: half a surrogate pair fails
        except UnicodeDecodeError:
            continue
        if text.count("\n") * 2 >= newlines:
            return enc, text
    return None


# each legacy CJK encoding's base character set, and the lead bytes of its everyday characters there: symbols,
# kana or jamo, and the common Hangul syllables / level-1 hanzi / level-1 kanji (rare ones lie further up);
# last, Windows' Western encoding
_LEGACY = {"cp949": ("euc_kr", ((0xA1, 0xAC), (0xB0, 0xC8))),
           "gb18030": ("gb2312", ((0xA1, 0xA9), (0xB0, 0xD7))),
           "shift_jis": ("shift_jis", ((0x81, 0x84), (0x88, 0x98))),
           "cp1252": None}


_CP1252_PUNCT = set("€‚„…†‡•–—‘’“”™«»°±²³µ·¹º¼½¾¿×÷ ¡¢£¥§©®¬¶")


def _plausible(text: str, enc: str) -> bool:
    """Most of the non-ASCII characters are everyday ones in the language of `enc`. Text in another encoding
    that happens to decode comes out as rare characters: French in cp1252 read as gb18030 gives level-2 hanzi
    ("très" -> "tr鑣"), Chinese read as cp949 gives hanja, Japanese read as gb18030 gives rare hanzi."""
    odd = list(itertools.islice((c for c in text if c > "\x7f"), 20_000))
    if enc == "cp1252":  # Western Excel: mostly ASCII, with accented letters and typographic punctuation
        return len(odd) * 5 < len(text) and sum(c.isalpha() or c in _CP1252_PUNCT for c in odd) >= 0.95 * len(odd)
    base, leads = _LEGACY[enc]
    common = 0
    for c in odd:
        try:
            b = c.encode(base)
        except UnicodeEncodeError:
            continue
        common += len(b) == 2 and any(lo <= b[0] <= hi for lo, hi in leads)
    return common >= 0.8 * len(odd)


# ---- JSON and JSONL --------------------------------------------------------------------------


def _loads(text: str, pairs: bool = False) -> Any:
    """`pairs`: keep what a repeated key hides (`_Repeated`), for `_report_repeated_keys`."""
    if not pairs:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        obj = json.loads(text, object_pairs_hook=_pairs if pairs else None)  # also reads NaN / Infinity and
        # integers past 64 bits, which orjson refuses
    except RecursionError:
        raise ValueError("json.too_deep") from None
    if _SURROGATE.search(text):
        _check_unicode(obj)
    return obj


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_unicode(obj: Any) -> None:
    """A lone \\uD800-\\uDFFF escape parses, then breaks every tokenizer: refuse it here."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("json.lone_surrogate") from None
    except (RecursionError, ValueError):
        pass


# what Python's JSON parser says, as message keys (`json.*`, said in the reader's language; anything else as it is)
_REASONS = (("Expecting value", "json.expecting_value"), ("Expecting ',' delimiter", "json.expecting_comma"),
            ("Expecting ':' delimiter", "json.expecting_colon"), ("Expecting property name", "json.expecting_key"),
            ("Unterminated string", "json.unterminated_string"), ("Invalid control character", "json.control_character"),
            ("Invalid \\", "json.invalid_escape"), ("Extra data", "json.extra_data"),
            ("Illegal trailing comma", "json.trailing_comma"), ("Exceeds the limit", "json.number_too_long"))


def _reason(msg: str) -> str:
    return next((key for start, key in _REASONS if msg.startswith(start)), msg)


def _json_error(text: str, e: json.JSONDecodeError, line_offset: int = 0, row: int | None = None) -> Finding:
    """A syntax error, located; a comma right before `}` or `]` is named as a trailing comma."""
    pos = min(e.pos, len(text))
    before = text[:pos].rstrip()
    if pos < len(text) and text[pos] in "}]" and before.endswith(","):
        return error(row, None, "data.trailing_comma", line=_line_at(text, len(before) - 1) + line_offset)
    line = _line_at(text, pos) + line_offset
    reason = "json.file_ends_early" if not text[pos:].strip() else _reason(e.msg)  # not "a comma is missing"
    return error(row, None, "data.unparseable", line=line, column=pos - text.rfind("\n", 0, pos), error=reason)


def _read_json_any(text: str, src: Source, pairs: bool = False) -> None:
    """A `.json` may hold an array, a dict of columns, one object, or really be JSONL; and vice versa.
    `pairs`: read keeping repeated keys (`_loads`)."""
    start = _skip_space(text, 0, None)  # past comments too: an exporter's `// generated by ...` line before the [
    if start == len(text):
        return
    if text[start] == "[" and not (src.kind == "jsonl" and _jsonl_like(text, start, one_conversation=True)):
        src.kind, src.lines = "json", []
        _skip_space(text, 0, src)  # and the comments said
        _read_json_array(text, start, src, pairs)
        if is_turns(src.rows) and all(isinstance(r, dict) and {"role", "from"} & set(r) for r in src.rows):
            # the array is one conversation's messages, not rows: read as that one conversation, and said
            src.rows, src.numbers, src.lines = [src.rows], [1], src.lines[:1]
            src.findings.insert(0, warning(None, None, "data.single_conversation"))
        return
    if text[start] == "{" and src.kind == "json":
        try:
            obj = _loads(text, pairs)
        except ValueError as e:  # JSONDecodeError is a ValueError
            if not (_jsonl_like(text, start) or _looks_like_jsonl(text) or _concatenated(text, pairs)):
                src.findings.append(_json_error(text, e) if isinstance(e, json.JSONDecodeError) else
                                    error(None, None, "data.unparseable", line=1, column=1, error=_reason(str(e))))
                return
        else:
            _read_json_object(obj, src)
            return
    src.kind = "jsonl"
    _read_jsonl(text, src, pairs)


def _jsonl_like(text: str, start: int, one_conversation: bool = False) -> bool:
    """Line 1 (from `start`) is a whole object or array and more lines follow: JSONL. With
    `one_conversation`, a lone line 1 that is a list of messages counts too (one conversation per line).
    Line 1 is parsed only when that can decide: on a minified file it is the whole file."""
    nl = text.find("\n", start)
    more = nl >= 0 and bool(text[nl:].strip())
    if not (more or one_conversation):
        return False
    value = _parsed_alone(text[start:] if nl < 0 else text[start:nl])
    return value is not None and (more or is_turns(value))


def _parsed_alone(line: str) -> dict | list | None:
    """The line's object or array, parsed on its own; None if it is not one."""
    try:
        value = _loads(line.strip())
    except ValueError:  # JSONDecodeError is a ValueError
        return None
    return value if isinstance(value, (dict, list)) else None


def _looks_like_jsonl(text: str) -> bool:
    """Several non-empty lines, one of the first few a whole object: JSONL whose first line is broken."""
    lines = [ln for ln in text.split("\n", 50)[:50] if ln.strip()]
    return len(lines) > 1 and any(ln.lstrip().startswith("{") and _parsed_alone(ln) is not None for ln in lines[:6])


def _read_jsonl(text: str, src: Source, pairs: bool = False) -> None:
    if src.lines is None:
        src.lines = []
    before = len(src.findings), len(src.rows)
    _read_lines(text, src, pairs)
    broken = any(f.severity == "error" for f in src.findings[before[0]:])
    if broken and (found := _concatenated(text, pairs)):
        # lines that don't parse alone but the whole text is objects one after another: pretty-printed rows
        values, commas = found
        del src.findings[before[0]:], src.rows[before[1]:], src.numbers[before[1]:], src.lines[before[1]:]
        for number, (value, line) in enumerate(values, 1):
            src.add(value, number, line)
        src.findings.append(warning(None, None, "data.multiline_rows", rows=len(values)))
        if commas:  # an array's rows pasted without its brackets: read as meant, said once
            src.findings.append(warning(None, None, "data.comma_after_rows", line=commas[0], count=len(commas)))


def _concatenated(text: str, pairs: bool) -> tuple[list[tuple[Any, int]], list[int]] | None:
    """Objects (or arrays) written one after another, each over any number of lines, with the line each starts
    on, and the lines of the values followed by a comma (a JSON array's rows without its brackets); None unless
    the whole text is that."""
    decoder = json.JSONDecoder(object_pairs_hook=_pairs if pairs else None)
    check_unicode = _SURROGATE.search(text) is not None
    out, commas, pos, n, line, counted = [], [], 0, len(text), 1, 0
    while (pos := _WS.match(text, pos).end()) < n:
        if text[pos] not in "{[":
            return None
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            value, pos = decoder.raw_decode(text, pos)
            if check_unicode:
                _check_unicode(value)
        except (ValueError, RecursionError):
            return None
        out.append((value, line))
        if (pos := _WS.match(text, pos).end()) < n and text[pos] == ",":
            commas.append(line + text.count("\n", counted, pos))
            pos += 1
    return (out, commas) if out else None


def _read_lines(text: str, src: Source, pairs: bool) -> None:
    """A row a line, numbered among the file's rows (a broken one counts; blank and comment lines do not), each
    with its line: row 7 on line 9 where blank lines came before it."""
    commas: list[int] = []  # lines whose row ends with a comma (a JSON array's rows pasted as lines): read, said once
    row, in_comment, opened = 0, False, 0  # in_comment: inside a /* */ comment that spans lines, opened there
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip().lstrip("\ufeff")  # files joined with `cat` keep each one's BOM
        if in_comment:
            in_comment, stripped = _comment_rest(stripped)
            if in_comment or not stripped:
                continue
        if not stripped:
            continue
        if stripped.startswith(("//", "#", "/*")):  # a comment, which no JSON value starts with: said, not a row
            src.findings.append(warning(None, None, "data.json_comment", line=number))
            if not stripped.startswith("/*"):
                continue
            opened = number
            in_comment, stripped = _comment_rest(stripped[2:])
            if in_comment or not stripped:  # a row after the comment's end on its line is read
                continue
        row += 1
        try:
            src.add(_loads(stripped, pairs), row, number)
        except (json.JSONDecodeError, ValueError) as e:
            late = _line_end_problem(stripped, e) if isinstance(e, json.JSONDecodeError) else None
            if late == "json.comma_after_row":
                try:
                    src.add(_loads(stripped.rstrip().removesuffix(","), pairs), row, number)
                    commas.append(number)
                    continue
                except ValueError:
                    pass
            if late:
                f = error(row, None, "data.unparseable", line=number, column=e.pos + 1, error=late)
            elif isinstance(e, json.JSONDecodeError):
                f = _json_error(stripped, e, number - 1, row=row)
            else:
                f = error(row, None, "data.unparseable", line=number, column=1, error=_reason(str(e)))
            src.findings.append(f)
    if commas:
        src.findings.append(warning(None, None, "data.comma_after_rows", line=commas[0], count=len(commas)))
    if in_comment:  # the rows after it would be left out unsaid
        src.findings.append(error(None, None, "data.comment_unclosed", line=opened))


def _comment_rest(text: str) -> tuple[bool, str]:
    """Text inside a /* */ comment -> (whether the comment goes on past it, what follows its end)."""
    before, end, after = text.partition("*/")
    return (False, after.strip()) if end else (True, "")


def _line_end_problem(line: str, e: json.JSONDecodeError) -> str | None:
    """A JSONL line's problem at its very end, said as such: a comma after the row (a JSON array's rows pasted as
    lines), or the line ending before its row closes (a file cut short while it was written)."""
    if e.msg.startswith("Extra data") and line[e.pos:].strip() == ",":
        return "json.comma_after_row"
    cut_in_text = e.msg.startswith("Unterminated string") and not line.rstrip().endswith(("}", "]"))
    if line.lstrip().startswith(("{", "[")) and (e.pos >= len(line.rstrip()) or cut_in_text):
        return "json.line_ends_early"
    return None


def _read_json_array(text: str, pos: int, src: Source, pairs: bool = False) -> None:
    """Walk the array element by element (C scanner) to know the line each row starts on."""
    decoder = json.JSONDecoder(object_pairs_hook=_pairs if pairs else None)
    check_unicode = _SURROGATE.search(text) is not None
    pos, line, counted, index = pos + 1, 1, 0, 0
    n = len(text)
    while True:
        pos = _skip_space(text, pos, src)
        if pos >= n:
            src.findings.append(error(None, None, "data.unparseable", line=_line_at(text, n), column=1,
                                      error="json.ends_before_bracket"))
            return
        if text[pos] == "]":
            break
        line += text.count("\n", counted, pos)
        counted = pos
        index += 1
        try:
            obj, end = decoder.raw_decode(text, pos)
            if check_unicode:
                _check_unicode(obj)
        except (json.JSONDecodeError, ValueError, RecursionError) as e:
            if isinstance(e, json.JSONDecodeError):
                src.findings.append(_json_error(text, e, row=index))
            else:
                reason = _reason(str(e)) if isinstance(e, ValueError) else "json.too_deep"
                src.findings.append(error(index, None, "data.unparseable", line=line, column=1, error=reason))
            pos = _resync(text, pos, getattr(e, "pos", pos + 1))
            if pos < 0:
                return
            continue
        src.add(obj, index, line)
        pos = _skip_space(text, end, src)
        if pos < n and text[pos] == ",":
            after = _WS.match(text, pos + 1).end()
            if after < n and text[after] == "]":
                src.findings.append(error(None, None, "data.trailing_comma", line=_line_at(text, pos)))
                pos = after
            else:
                pos += 1
            continue
        if pos < n and text[pos] == "]":
            break
        if pos >= n:  # the last row is whole, the array never closed (not "a comma or ]" on a line past the end)
            src.findings.append(error(None, None, "data.unparseable", line=_line_at(text.rstrip(), n), column=1,
                                      error="json.ends_before_bracket"))
            return
        bad = pos
        src.findings.append(error(None, None, "data.unparseable", line=_line_at(text, bad),
                                  column=bad - text.rfind("\n", 0, bad), error="json.comma_or_bracket"))
        pos = _resync(text, pos, pos)
        if pos < 0:
            return
    rest = _WS.match(text, pos + 1).end()
    if rest < n:
        src.findings.append(error(None, None, "data.unparseable", line=_line_at(text, rest),
                                  column=rest - text.rfind("\n", 0, rest), error="json.after_bracket"))


def _skip_space(text: str, pos: int, src: Source | None) -> int:
    """Past whitespace and JSONC's comments (`//`, `/* */`), which JSON has none of: each is said (in `src`), and
    skipped rather than counted as a row."""
    while (pos := _WS.match(text, pos).end()) < len(text) and text.startswith(("//", "/*"), pos):
        if src is not None:
            src.findings.append(warning(None, None, "data.json_comment", line=_line_at(text, pos)))
        line_comment = text[pos + 1] == "/"
        end = text.find("\n" if line_comment else "*/", pos + 2)
        pos = len(text) if end < 0 else end + (1 if line_comment else 2)
    return pos


# ---- a key given twice in one object ---------------------------------------------------------------
# JSON readers keep the last value of a repeated key and drop the others without a word, as a CSV header that
# names a column twice would (refused there): a row that says "instruction" twice loses one of them.


class _Repeated(dict):
    """An object read with a key given more than once: `repeated` names them."""

    repeated: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    repeated = _Repeated(obj)
    repeated.repeated = list(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))
    return repeated


def _may_repeat_keys(text: str, rows: list[Any]) -> bool:
    """Whether the file names more keys than its rows kept. Counted as `":` less `\\":` (a quote inside a string):
    a file that writes `"key" :` or names keys outside its rows is read again to be sure (0.1 s for 100,000 rows)."""
    return text.count('":') - text.count('\\":') != _count_keys(rows)


def _count_keys(value: Any) -> int:
    n = 0
    if isinstance(value, dict):
        n, value = len(value), value.values()
    for v in value:
        if type(v) is dict or type(v) is list:
            n += _count_keys(v)
    return n


def _report_repeated_keys(text: str, src: Source) -> None:
    """Read the file again keeping repeated keys, and refuse each row that has one, at its line and field."""
    again = Source(src.path, src.kind)
    _read_json_any(text, again, pairs=True)
    for f in again.findings:  # the file's one object (a dict of columns) repeats a column: told while reading it
        if f.key == "data.repeated_key":
            src.findings.append(error(None, f.field, f.key, line=_second_mention(text, 0, 1, f.field), name=f.field))
    starts: list[int] = []
    for i, row in enumerate(again.rows):
        for field_name, key in _repeated_in(row):
            line = None  # JSONL: the row number is the line
            if again.lines:  # a JSON array: the line of the key's second mention, from the row's first line
                starts = starts or [0, *(m.end() for m in re.finditer("\n", text))]
                line = _second_mention(text, starts[again.lines[i] - 1], again.lines[i], key)
            src.findings.append(error(again.numbers[i], field_name, "data.repeated_key", line=line, name=key))


def _repeated_in(row: Any, top: str | None = None):
    """(top-level field, key) for each key given twice in `row` or in any object inside it."""
    if isinstance(row, _Repeated):
        yield from ((top or k, k) for k in row.repeated)
    if isinstance(row, dict):
        for k, v in row.items():
            yield from _repeated_in(v, top or k)
    elif isinstance(row, list):
        for v in row:
            yield from _repeated_in(v, top)


def _second_mention(text: str, start: int, line: int, key: str) -> int:
    """The line of `key`'s second mention from `start` (on `line`): where a repeated key is, near enough."""
    mentions = re.compile(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:").finditer(text, start)
    found = list(itertools.islice(mentions, 2))
    return line + text.count("\n", start, found[-1].start()) if found else line


def _resync(text: str, row_start: int, bad: int) -> int:
    """After a broken row, find the next row starting at the same indentation; -1 if there is none."""
    line_start = text.rfind("\n", 0, row_start) + 1
    indent = text[line_start:row_start]
    if indent.strip():  # rows share a line with other text: no safe place to resume
        return -1
    m = re.compile(r"\n" + re.escape(indent) + r"\{").search(text, max(bad, row_start + 1))
    return m.start() + 1 + len(indent) if m else -1


def _read_json_object(obj: Any, src: Source) -> None:
    """A dict of equal-length columns (the DPO tutorials' layout), `{"data": [...]}`, or one row."""
    if not isinstance(obj, dict):
        src.findings.append(error(None, None, "data.json_not_list", keys=type(obj).__name__))
        return
    for key in getattr(obj, "repeated", ()):  # read keeping repeated keys: a column given twice
        src.findings.append(error(None, key, "data.repeated_key", name=key))
    from .formats import detect_format  # a lone row is only accepted if it looks like one

    values = list(obj.values())
    lists = [v for v in values if isinstance(v, list)]
    splits = [k for k in obj if str(k).lower() in SPLIT_NAMES and isinstance(obj[k], list)]
    if len(splits) > 1 and len(splits) == len(obj) and "train" in obj and not obj["train"]:
        src.findings.append(error(None, None, "data.train_split_empty",  # (not "columns of different lengths")
                                  others=", ".join(f"{k}: {len(obj[k])}" for k in splits if k != "train")))
        return
    if len(splits) > 1 and len(splits) == len(obj) and "train" in obj and all(
            obj[k] and all(isinstance(r, dict) for r in obj[k]) for k in splits):
        # {"train": [...], "test": [...]}: a dataset's splits in one file, read as its train split
        src.findings.append(warning(None, None, "data.splits_in_file", name="train",
                                    others=", ".join(str(k) for k in splits if k != "train")))
        for i, row in enumerate(obj["train"], 1):
            src.add(row, i)
        return
    if values and all(isinstance(v, dict) and v for v in values) and len({tuple(v) for v in values}) == 1 and all(
            str(i).lstrip("-").isdigit() for i in values[0]):
        # pandas' DataFrame.to_json() default: {column: {index: value}}
        index = list(values[0])
        src.findings.append(warning(None, None, "data.pandas_columns"))
        for n, i in enumerate(index, 1):
            src.add({k: v[i] for k, v in obj.items()}, n)
        return
    if _pandas_split(obj):  # DataFrame.to_json(orient="split"): the column names once, each row a list
        src.findings.append(warning(None, None, "data.pandas_layout", orient="split"))
        for i, vals in enumerate(obj["data"], 1):
            src.add(dict(zip(obj["columns"], vals, strict=True)), i)
        return
    if isinstance(obj.get("schema"), dict) and "fields" in obj["schema"] and isinstance(obj.get("data"), list):
        # DataFrame.to_json(orient="table"): the rows under data, each with pandas' index (schema's primaryKey)
        index = obj["schema"].get("primaryKey") or []
        src.findings.append(warning(None, None, "data.pandas_layout", orient="table"))
        for i, row in enumerate(obj["data"], 1):
            src.add({k: v for k, v in row.items() if k not in index} if isinstance(row, dict) else row, i)
        return
    if len(lists) == 1 and lists[0] and all(isinstance(r, dict) for r in lists[0]) and not is_turns(lists[0]) \
            and not any(isinstance(v, dict) for v in values) and (len(obj) == 1 or detect_format([obj]) is None):
        # {"train": [...]}, {"data": [...]}, or the rows beside a few facts about them ({"version": 2, "data": [...]})
        key = next(k for k, v in obj.items() if v is lists[0])
        if len(obj) > 1:
            src.findings.append(warning(None, None, "data.rows_under_key", name=key,
                                        others=", ".join(str(k) for k in obj if k != key)))
        for i, row in enumerate(lists[0], 1):
            src.add(row, i)
        return
    if values and len(lists) == len(values) and not any(is_turns(v) for v in lists):
        lengths = {k: len(v) for k, v in obj.items()}
        if len(set(lengths.values())) != 1:
            src.findings.append(error(None, None, "data.columns_unequal",
                                      lengths=", ".join(f"{k}: {n}" for k, n in lengths.items())))
            return
        keys = list(obj)
        for i, vals in enumerate(zip(*values, strict=False), 1):
            src.add(dict(zip(keys, vals, strict=False)), i)
        return
    if detect_format([obj]) is not None:  # a lone row is only accepted if it looks like one
        src.findings.append(warning(None, None, "data.single_object"))
        src.add(obj, 1)
        return
    src.findings.append(error(None, None, "data.json_not_list", keys=", ".join(map(str, list(obj)[:8]))))


def _pandas_split(obj: dict) -> bool:
    """pandas' `orient="split"` layout: {columns: [names], index: [...], data: [[row values], ...]}."""
    columns, data = obj.get("columns"), obj.get("data")
    return (set(obj) <= {"columns", "index", "data", "index_names", "column_names"} and isinstance(columns, list)
            and all(isinstance(c, str) for c in columns) and isinstance(data, list)
            and all(isinstance(r, list) and len(r) == len(columns) for r in data))


SPLIT_NAMES = {"train", "test", "validation", "valid", "val", "dev", "eval", "evaluation"}


def is_turns(items: Any) -> bool:
    """A list of chat messages (one conversation), as opposed to a column of values."""
    return isinstance(items, list) and bool(items) and isinstance(items[0], dict) and bool({"role", "from", "content", "value"} & set(items[0]))


# ---- CSV, text, Parquet, hub --------------------------------------------------------------------


def _read_csv(text: str, src: Source, delimiter: str | None) -> None:
    """Strict about quotes: a quoted cell that never closes would otherwise swallow every row after it, and text
    after a closing quote (`"Hello" he said`) would lose its quotes, both without a word. Columns with no name
    and nothing in them (Excel saves a sheet's trailing empty columns) are dropped, as are records with nothing
    in any cell (its empty rows)."""
    text = text.replace("\r\n", "\n")  # Excel's CRLF, also inside quoted cells
    first = text.split("\n", 1)[0]
    skip = 0
    if first.lower().startswith("sep=") and len(first.strip()) == 5:  # Excel's delimiter hint line
        delimiter, skip = first.strip()[4], 1
        text = text.split("\n", 1)[1] if "\n" in text else ""
        first = text.split("\n", 1)[0]
    if delimiter is None:
        delimiter = max([",", ";", "\t", "|"], key=lambda d: (first.count(d), d == ","))
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records = _csv_records(reader, skip, src)
    header = next(records, None)
    while header is not None and not any(h.strip() for h in header[2]):
        header = next(records, None)
    if header is None:
        return
    header_line, header = header[1], [h.strip() for h in header[2]]
    unnamed = [i for i, h in enumerate(header) if not h]
    named = [h for h in header if h]
    if len(set(named)) != len(named):
        dup = next(h for h in named if named.count(h) > 1)
        src.findings.append(error(None, dup, "data.csv_duplicate_header", line=header_line))
    src.lines = []
    filled: set[int] = set()  # unnamed columns that hold something
    firsts: list[str] = []  # the first column's cells, which may be a row index
    trailing = 0  # rows with empty cells past the header's columns (a comma at the end of each line)
    for row, start, record in records:
        if not any(cell.strip() for cell in record):
            continue
        if len(record) > len(header) and not any(c.strip() for c in record[len(header):]):
            record, trailing = record[:len(header)], trailing + 1  # nothing in them to lose: read as meant, said
        if len(record) != len(header):
            src.findings.append(error(row, None, "data.csv_field_count", line=start,
                                      expected=len(header), got=len(record)))
            continue
        if [c.strip().lstrip("\ufeff") for c in record] == header:  # files joined with `cat`: the next one's header
            src.findings.append(warning(None, None, "data.csv_header_again", line=start))
            continue
        filled.update(i for i in unnamed if record[i].strip())
        firsts.append(record[0].strip())
        src.add({h: v for h, v in zip(header, record, strict=False) if h}, row, start)
    if trailing:
        src.findings.append(warning(None, None, "data.csv_trailing_cells", line=header_line, count=trailing,
                                    expected=len(header)))
    if 0 in filled and _numbers_rows(firsts):  # pandas' index, which `to_csv` writes unless told index=False
        filled.discard(0)
        src.findings.append(warning(None, None, "data.csv_index_column", line=header_line))
    for i in sorted(filled):
        src.findings.append(error(None, None, "data.csv_unnamed_column", line=header_line, column=i + 1))


def _numbers_rows(cells: list[str]) -> bool:
    """Cells that number the rows: whole numbers from 0 up, rising (0, 1, 2, ...; a filtered table's 0, 3, 7)."""
    if not cells or not all(c.isascii() and c.isdigit() for c in cells):
        return False
    numbers = [int(c) for c in cells]
    return all(a < b for a, b in itertools.pairwise(numbers))


def _csv_records(reader, skip: int, src: Source):
    """(row, line the record starts on, its cells) for each record, the row as a spreadsheet numbers it (the
    header row 1; a cell holding line breaks spans lines and is one row); a record whose quotes are wrong becomes
    a finding at its row and line, and reading goes on from the line after."""
    last, row = skip, skip
    while True:
        start, row = last + 1, row + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            last = reader.line_num + skip
            if "end of data" in str(e):  # a quoted cell still open at the end of the file
                src.findings.append(error(row, None, "data.csv_unclosed_quote", line=start))
                return
            if "'\"'" in str(e):  # ',' expected after '"'
                src.findings.append(error(row, None, "data.csv_bad_quote", line=start))
            else:
                src.findings.append(error(row, None, "data.unparseable", line=start, column=1, error=str(e)))
            continue
        last = reader.line_num + skip
        yield row, start, record


TXT_LINES_PER_BLOCK = 50  # blocks this long on average: said, in case the blank lines were not meant as breaks


def _read_text(text: str, src: Source) -> None:
    """One sample per blank-line-separated block when the file has blank lines, else one per line. A line keeps
    its indentation (code, verse, a nested list): only trailing spaces and blank lines around a sample go."""
    lines = [ln.rstrip() for ln in text.split("\n")]
    blocks = any(not ln.strip() for ln in lines[:-1]) and sum(1 for ln in lines if ln.strip()) > 1
    src.lines = []
    if not blocks:
        for number, ln in enumerate(lines, 1):
            if ln.strip():
                src.add({"text": ln}, number, number)
        return
    block, start, before = [], 0, len(src.rows)
    for number, ln in enumerate(lines + [""], 1):
        if ln.strip():
            if not block:
                start = number
            block.append(ln)
        elif block:
            src.add({"text": "\n".join(block)}, start, start)
            block = []
    samples, filled = len(src.rows) - before, sum(1 for ln in lines if ln.strip())
    if filled >= TXT_LINES_PER_BLOCK * samples:  # a line-per-sample corpus with a stray blank line, most likely
        src.findings.append(warning(None, None, "data.txt_few_blocks", count=samples, total=filled))


def _read_parquet(path: str, data: bytes) -> Source:
    src = Source(path, "parquet")
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
    except Exception as e:  # pyarrow raises several types for a damaged file
        cut = any(w in str(e) for w in ("magic bytes", "file size is 0", "footer"))  # pyarrow's words, in English
        src.findings.append(error(None, None, "data.parquet_error", error="file.parquet_damaged" if cut else str(e)[:300]))
        return src
    src.rows = _without_pandas_index(table).to_pylist()
    src.numbers = list(range(1, len(src.rows) + 1))
    return src


def _without_pandas_index(table):
    """`table` without the unnamed index pandas writes beside a DataFrame's columns (`__index_level_0__`, from
    `df.to_parquet()` after a filter or a sort): it was said as a column the training leaves unused, one the
    user never made. A named index (`df.set_index("id")`) is a column of theirs and stays."""
    try:
        index = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}")).get("index_columns", [])
    except (ValueError, AttributeError):
        return table
    drop = [c for c in index if isinstance(c, str) and c.startswith("__index_level_") and c in table.column_names]
    return table.drop_columns(drop) if drop else table


def _read_arrow(path: str, data: bytes) -> Source:
    """An Arrow file: one of the files `datasets` caches or saves (an IPC stream), or Feather / Arrow IPC."""
    src = Source(path, "arrow")
    try:
        table = _arrow_table(data)
    except Exception as e:  # pyarrow raises several types for a damaged file
        src.findings.append(error(None, None, "data.read_failed", path=path, error=str(e)[:300]))
        return src
    src.rows = _without_pandas_index(table).to_pylist()
    src.numbers = list(range(1, len(src.rows) + 1))
    return src


def _arrow_table(data: bytes):
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.BufferReader(data)).read_all()


def _read_saved(path: str, split: str) -> Source | None:
    """A folder `datasets`' save_to_disk() wrote: one dataset (state.json, .arrow files) or its splits
    (dataset_dict.json, a folder each), read as load_from_disk() reads it; None for any other path."""
    folder = Path(path)
    if not (folder / "state.json").is_file() and not (folder / "dataset_dict.json").is_file():
        return None
    src = Source(path, "arrow")
    try:
        if (folder / "dataset_dict.json").is_file():
            splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
            if split not in splits:
                src.findings.append(error(None, None, "data.saved_split_missing", path=path, split=split,
                                          splits=", ".join(splits)))
                return src
            if len(splits) > 1:
                src.findings.append(warning(None, None, "data.splits_in_file", name=split,
                                            others=", ".join(s for s in splits if s != split)))
            folder = folder / split
        files = [f["filename"] for f in json.loads((folder / "state.json").read_text(encoding="utf-8"))["_data_files"]]
        import pyarrow as pa

        table = pa.concat_tables([_arrow_table((folder / f).read_bytes()) for f in files])
    except Exception as e:  # a folder half copied, a file damaged: said, not raised
        src.findings.append(error(None, None, "data.read_failed", path=path, error=f"{type(e).__name__}: {str(e)[:300]}"))
        return src
    src.rows = table.to_pylist()
    src.numbers = list(range(1, len(src.rows) + 1))
    return src


def _hub_offline() -> bool:
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


@contextlib.contextmanager
def _cache_only():
    """Offline mode for this call, where the Hub's host does not answer: `datasets` reads its cache and fails at
    once for what isn't there, instead of retrying each request five times with back-off (~30 s)."""
    import datasets
    from huggingface_hub import constants

    was = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = was


def _read_hub(name: str, split: str) -> Source:
    from ..estimate import hub_reachable

    src = Source(name, "hub")
    unreachable = not _hub_offline() and not hub_reachable()
    try:
        import datasets

        with _cache_only() if unreachable else contextlib.nullcontext():
            ds = datasets.load_dataset(name, split=split)
    except (ConnectionError, OSError) as e:
        offline = unreachable or _hub_offline() or "offline" in str(e).lower() or "couldn't reach" in str(e).lower()
        if offline and "not found" not in str(e).lower():
            src.findings.append(error(None, None, "data.hub_offline", name=name))
        else:
            src.findings.append(error(None, None, "data.hub_failed", name=name, error=str(e)[:300]))
        return src
    except Exception as e:  # not found, bad split, gated, script-based...
        src.findings.append(error(None, None, "data.hub_failed", name=name, error=f"{type(e).__name__}: {str(e)[:300]}"))
        return src
    src.rows = ds.to_list()
    src.numbers = list(range(1, len(src.rows) + 1))
    return src
