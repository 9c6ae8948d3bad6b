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
    second = _nearest(list(choices[first]), default[1])
    pick = widgets.Dropdown(options=list(choices), value=first, description=labels[0])
    follow = widgets.ToggleButtons(options=list(choices[first]), value=second, description=labels[1],
                                   style={"button_width": "auto"})
    out = widgets.Output()
    updating = False

    def render(*_: Any) -> None:
        if updating:
            return
        with out:
            out.clear_output(wait=True)
            fig = draw(pick.value, follow.value)
            display(fig)
            plt.close(fig)

    def refollow(change: dict) -> None:
        nonlocal updating
        offered = list(choices[change["new"]])
        updating = True  # one redraw per choice, not one per option change
        try:
            value = _nearest(offered, follow.value)
            follow.options = offered
            follow.value = value
        finally:
            updating = False
        render()

    pick.observe(refollow, names="value")
    follow.observe(render, names="value")
    parts = [pick, follow] + ([widgets.HTML(caption)] if caption else []) + [out]
    box = widgets.VBox(parts)
    box.add_class(EXPLORER_CLASS)
    render()
    return box
