"""Print the README's config reference (a Markdown table) from RunConfig's own field help."""

from engine.config import field_help


def main() -> None:
    print("| field | default | what it does |")
    print("|---|---|---|")
    for name, text, default in field_help():
        d = "`null`" if default is None else f"`{default}`"
        print(f"| `{name}` | {d} | {text.replace('|', '/')} |")
    print("| `data.datasets[].path` | (required) | File (json, jsonl, csv, parquet, txt), `demo:<name>` bundled set, or hub name. |")
    print("| `data.datasets[].format` | `auto` | auto, alpaca, sharegpt, messages, prompt_completion, preference, text. |")
    print("| `data.datasets[].columns` | `{}` | Map our names to the file's, e.g. `{instruction: question, output: answer}`. |")
    print("| `data.datasets[].split` | `train` | Split of a hub dataset. |")
    print("| `data.datasets[].max_samples` | `null` | Use at most this many rows of this dataset. |")


if __name__ == "__main__":
    main()
