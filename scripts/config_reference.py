"""Print the README's config reference (a Markdown table) from RunConfig's own field help."""

from dataclasses import fields
from typing import get_args

from engine.config import DataFormat, DatasetSpec, field_help


def main() -> None:
    print("| field | default | what it does |")
    print("|---|---|---|")
    for name, text, default in field_help():
        d = "`null`" if default is None else f"`{default}`"
        print(f"| `{name}` | {d} | {text.replace('|', '/')} |")
    print("| `data.datasets[].path` | (required) | File (json, jsonl, csv, parquet, txt), `demo:<name>` bundled set, or hub name. |")
    print(f"| `data.datasets[].format` | `auto` | {', '.join(get_args(DataFormat))}. |")
    columns = next(f for f in fields(DatasetSpec) if f.name == "columns").metadata["help"]
    columns = columns.replace("{instruction: question, output: answer}", "`{instruction: question, output: answer}`")
    print(f"| `data.datasets[].columns` | `{{}}` | {columns} |")
    print("| `data.datasets[].split` | `train` | Split of a hub dataset. |")
    print("| `data.datasets[].max_samples` | `null` | Use at most this many rows of this dataset. |")


if __name__ == "__main__":
    main()
