"""Merge message keys into every locales/<lang>.json at once, under a file lock.

Usage: python scripts/locale_add.py keys.json [--replace]   where keys.json is {"key": {"en": "...", ...}}
Keeps each file sorted, so concurrent additions never conflict. A key that already has other text is refused
unless --replace says a change is meant (a new message once took an old one's name and replaced its text).
"""

import fcntl
import json
import sys
from pathlib import Path

LOCALES = Path(__file__).resolve().parent.parent / "locales"
LANGS = sorted(p.stem for p in LOCALES.glob("*.json"))  # the files are the list, as engine.messages.languages()


def main(path: str, replace: bool = False) -> None:
    new = json.loads(Path(path).read_text(encoding="utf-8"))
    missing = [f"{key}: no {lang} text" for key, texts in new.items() for lang in LANGS if lang not in texts]
    if not replace:
        en = json.loads((LOCALES / "en.json").read_text(encoding="utf-8"))
        missing += [f"{key}: already says {en[key]!r} (--replace to change it)" for key, texts in new.items()
                    if key in en and en[key] != texts.get("en")]
    if missing:  # refuse before writing anything: a half-applied update leaves the languages out of step
        sys.exit("\n".join(missing))
    with open(LOCALES / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for lang in LANGS:
            f = LOCALES / f"{lang}.json"
            data = json.loads(f.read_text(encoding="utf-8")) if f.exists() else {}
            for key, texts in new.items():
                data[key] = texts[lang]
            f.write_text(json.dumps(dict(sorted(data.items())), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], "--replace" in sys.argv[2:])
