"""What the tabs share while the page is built: the component factory, the form's fields, the session states.

`UI.add` makes a Gradio component whose every visible word comes from a locale key (so a
language switch can relabel it) and whose elem_id is `<tab>-<name>`; `field=` registers it as
one of the controls the RunConfig is gathered from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .i18n import FIELD_LABELS, Texts
from .jobs import Jobs

SWITCHES = [("ui.choice.auto", "auto"), ("ui.choice.on", "on"), ("ui.choice.off", "off")]  # auto / on / off fields


@dataclass
class UI:
    workdir: Path
    jobs: Jobs
    lang: str = "en"
    texts: Texts = field(default_factory=Texts)
    fields: dict[str, Any] = field(default_factory=dict)  # dotted config name -> component
    c: dict[str, Any] = field(default_factory=dict)  # elem_id -> component
    session: Any = None  # gr.State(Session): the page's own state, shared by every tab's handlers
    states: dict[str, Any] = field(default_factory=dict)  # layout blocks a later handler shows or hides
    on_lang: list[tuple[Callable, list, list]] = field(default_factory=list)  # re-render after a switch
    on_load: list[tuple[Callable, list, list]] = field(default_factory=list)  # fill in when a page opens

    def __post_init__(self) -> None:
        self.texts.lang = self.lang

    def add(
        self,
        cls: type,
        elem_id: str,
        *,
        field: str | None = None,
        label: str | None = None,
        info: str | None = None,
        placeholder: str | None = None,
        text: str | None = None,
        choice_keys: list[tuple[str | None, Any]] | None = None,
        **kwargs: Any,
    ) -> Any:
        """A component labelled by keys: `label`, `info`, `placeholder`, `text` (a button's or a note's
        words) and `choice_keys` as [(key, value)] (key None: the value is shown as it is)."""
        spec = {"label": label, "info": info, "placeholder": placeholder, "value": text, "choices": choice_keys}
        kwargs.update(self.texts.render(spec, self.lang))
        comp = cls(elem_id=elem_id, **kwargs)
        self.texts.add(comp, spec)
        if field:
            self.fields[field] = comp
            if label:
                FIELD_LABELS[field] = label
        self.c[elem_id] = comp
        return comp

    def block(self, cls: type, label: str, elem_id: str, **kwargs: Any) -> Any:
        """A labelled layout block (Tab, Accordion): a context manager, relabelled like components."""
        comp = cls(label=self.texts.render({"label": label}, self.lang)["label"], elem_id=elem_id, **kwargs)
        self.texts.add(comp, {"label": label})
        self.c[elem_id] = comp
        return comp

    def field_names(self) -> list[str]:
        return list(self.fields)

    def field_components(self) -> list[Any]:
        return list(self.fields.values())

    def form(self, data: dict[Any, Any]) -> dict[str, Any]:
        """A handler's `{component: value}` (Gradio's set-of-inputs form) -> {dotted name: value}."""
        return {name: data[comp] for name, comp in self.fields.items() if comp in data}
