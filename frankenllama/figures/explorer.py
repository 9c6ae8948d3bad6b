"""One interactive explorer for every notebook: a choice, a second choice that follows it, a figure.

An explorer reads results the stages already cached and only draws them: a dropdown (the strategy,
the recipe, the variant), toggle buttons offering only the second choices that exist for the first
(the k's a strategy was run at, the evaluation points of a recipe, the accuracy metric), and an
output area showing the figure of the pair. Nothing is recomputed in the browser.

The default figure is drawn when the explorer is built, inside the ``Output`` widget, so an executed
notebook (papermill stores widget state) shows the default view without a kernel. Every explorer
carries the CSS class ``EXPLORER_CLASS`` so the browser tests (``tests/browser``) can find and walk it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt

EXPLORER_CLASS = "frankenllama-explorer"


def _nearest(options: Sequence[Any], value: Any) -> Any:
    """``value`` when offered, else the offered option closest to it (numbers), else the last option."""
    if value in options:
        return value
    try:
        return min(options, key=lambda o: (abs(o - value), -o))
    except TypeError:
        return options[-1]


def explorer(
    choices: Mapping[str, Sequence[Any]],
    draw: Callable[[str, Any], plt.Figure],
    labels: tuple[str, str],
    default: tuple[str, Any],
    caption: str = "",
):
    """An ipywidgets explorer over ``choices`` (first choice → the second choices that have results).

    ``draw(first, second)`` returns a matplotlib figure built from cached results; it is shown as a
    PNG and closed. ``default`` is the pair shown first (the second is moved to the nearest offered
    value). ``caption`` (HTML) says what the view shows and how its intervals are computed.
    Returns the explorer's ``VBox``; display it (a notebook's last expression does).
    """
    import ipywidgets as widgets
    from IPython.display import display

    if not choices or any(len(v) == 0 for v in choices.values()):
        raise ValueError(f"every {labels[0]} needs at least one {labels[1]} with results: {dict(choices)}")
    first = default[0] if default[0] in choices else next(iter(choices))
    pick = widgets.Dropdown(options=list(choices), value=first, description=labels[0])
    out = widgets.Output()

    def toggles(option: str, near: Any) -> widgets.ToggleButtons:
        # a new set of buttons per first choice: changing the options of live buttons makes the
        # browser echo an index change, a second redraw, and, for a moment, buttons of the old choice
        offered = list(choices[option])
        buttons = widgets.ToggleButtons(options=offered, value=_nearest(offered, near), description=labels[1],
                                        style={"button_width": "auto"})
        buttons.observe(render, names="value")
        return buttons

    def render(*_: Any) -> None:
        with out:
            out.clear_output(wait=True)
            fig = draw(pick.value, box.children[1].value)
            display(fig)
            plt.close(fig)

    def refollow(change: dict) -> None:
        box.children = (pick, toggles(change["new"], box.children[1].value), *box.children[2:])
        render()

    pick.observe(refollow, names="value")
    box = widgets.VBox([pick, toggles(first, default[1])] + ([widgets.HTML(caption)] if caption else []) + [out])
    box.add_class(EXPLORER_CLASS)
    render()
    return box
