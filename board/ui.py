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

import gradio as gr

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
    # what a field's change redraws: (the dotted names it follows, None for all; fn(data) -> outputs' values;
    # its outputs; extra inputs), run by one listener (`wire_form_changes`)
    on_form_change: list[tuple[frozenset[str] | None, Callable, list, list]] = field(default_factory=list)

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

    def follow_form(self, names: list[str] | None, fn: Callable, outputs: list, inputs: list = ()) -> None:
        """`fn(data)` (data: {component: value} of the fields, the session and `inputs`) redraws `outputs` when
        one of the fields `names` (all where None) changes; the ones following all the fields run last."""
        self.on_form_change.append((None if names is None else frozenset(names), fn, list(outputs), list(inputs)))

    def wire_form_changes(self, **event: Any) -> None:
        """One listener on every field's change for all that follows the form. Gradio's page, when an event it
        held back (`always_last`: a run was in flight) is let go, sends the trigger's whole event again, every
        listener on it: with three listeners on a field (the data check, the memory estimate, Start's gate),
        each one finishing while another ran sent the event again, and on a loaded machine the page checked
        its data every second for as long as it was open (CI, 2026-11-28). One listener ends that."""
        follow = sorted(self.on_form_change, key=lambda x: x[0] is None)  # the whole form's last: they gate Start
        outputs = list(dict.fromkeys(o for _, _, outs, _ in follow for o in outs))
        inputs = {self.session, *self.field_components(), *(i for *_, extra in follow for i in extra)}
        names = {comp.elem_id: name for name, comp in self.fields.items()}

        def changed(data: dict, evt: gr.EventData) -> dict:  # `gr` a module global: Gradio reads the hint
            name = names.get(getattr(getattr(evt, "target", None), "elem_id", None))
            moved = self._moved(data, name)
            values: dict = {}
            for only, fn, outs, _ in follow:
                if only is None or moved is None or only & moved:
                    values.update(zip(outs, fn(data), strict=True))
            return values  # what no follower of this field redraws stays as it is

        gr.on([f.change for f in self.field_components()], changed, inputs, outputs, trigger_mode="always_last",
              **event)

    def _moved(self, data: dict, name: str | None) -> set[str] | None:
        """The fields whose value changed since the page's last change this listener heard (None: all of them, the
        first time or where the event named no field), the one the event names among them. Gradio's page holds a
        field's change back while the listener runs (`always_last`) and, when several came meanwhile, sends only
        the last: a stage switch set five fields, Method was picked meanwhile, and its followers never heard of
        it (ORPO's greyed settings stayed open). The values say what the events did not."""
        session = data.get(self.session)
        now = self.form(data)
        with session.lock:
            seen, session.form_seen = session.form_seen, now
        if seen is None or name is None:
            return None
        return {n for n, v in now.items() if n not in seen or seen[n] != v} | {name}

    def form(self, data: dict[Any, Any]) -> dict[str, Any]:
        """A handler's `{component: value}` (Gradio's set-of-inputs form) -> {dotted name: value}."""
        return {name: data[comp] for name, comp in self.fields.items() if comp in data}
