"""One module per tab: `build(ui)` lays out its components, `wire(ui)` connects its handlers."""
