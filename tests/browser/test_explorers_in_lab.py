"""Every notebook in JupyterLab (smoke profile): Run All without an error, then every choice of every explorer.

For each notebook: open it in headless Chromium, run all cells, wait until every cell has run, and
assert that no cell output and no widget output holds an error. Then, for every explorer
(``frankenllama.figures.explorer``), choose every option of its dropdown and, for each, every option
its toggle buttons offer; each choice must render a figure (a PNG ``img``) different from the one
before it and from every other choice's, and no error may appear. A screenshot of each notebook's
explorer (or of the notebook, when it has none) at its default view goes to ``build/browser/``.
Failures name the notebook, the explorer and the choice.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from frankenllama.figures.explorer import EXPLORER_CLASS
from frankenllama.paths import BUILD_DIR
from lab_harness import browser, lab  # noqa: F401  (fixtures; not a conftest: tests/conftest.py is imported as "conftest")
from test_notebooks import NEEDS, NOTEBOOKS

pytestmark = [pytest.mark.browser, pytest.mark.integration]
SCREENSHOTS = BUILD_DIR / "browser"
RUN_TIMEOUT_S = float(os.environ.get("FRANKENLLAMA_BROWSER_RUN_TIMEOUT", 1200))  # a cold smoke cache computes here
CHOICE_TIMEOUT_S = 60.0
ERRORS_JS = """() => {
  const found = [];
  const texts = document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
  for (const el of texts) {
    if (/Traceback|Error:/.test(el.textContent)) found.push(el.textContent.slice(0, 2000));
  }
  for (const el of document.querySelectorAll('.jupyter-widgets, .jp-OutputArea-output')) {
    if (/Error displaying widget|model not found/.test(el.textContent)) found.push(el.textContent.slice(0, 500));
  }
  const nb = window.jupyterapp.shell.currentWidget.content.model;
  for (let i = 0; i < nb.cells.length; i++) {
    const cell = nb.cells.get(i);
    if (cell.type !== 'code') continue;
    for (const out of cell.outputs.toJSON()) {
      if (out.output_type === 'error') found.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
    }
  }
  return found;
}"""
RUN_ALL_JS = """async () => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  window.__runAll = 'running';
  app.commands.execute('notebook:run-all-cells').then(
    ok => { window.__runAll = ok === false ? 'failed' : 'done'; },
    err => { window.__runAll = 'failed: ' + err; });
}"""
IDLE_JS = """() => {
  const session = window.jupyterapp.shell.currentWidget.sessionContext.session;
  return Boolean(session && session.kernel && session.kernel.status === 'idle');
}"""
DONE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.model.cells;
  let pending = 0;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type === 'code' && cell.sharedModel.getSource().trim() && !cell.executionCount) pending++;
  }
  return window.__runAll !== 'running' && kernel && kernel.status === 'idle' && (pending === 0 || window.__runAll !== 'done');
}"""


def errors(page) -> list[str]:
    return page.evaluate(ERRORS_JS)


def figure_src(explorer) -> str:
    """A hash of the explorer's figure (the ``img`` in its output area), '' when none is shown."""
    imgs = explorer.locator(".widget-output img")
    return hashlib.sha1(imgs.first.get_attribute("src").encode()).hexdigest() if imgs.count() else ""


def shown(explorer) -> str:
    """The choice an explorer shows: 'dropdown option × active toggle'."""
    option = explorer.locator("select").first.evaluate("s => s.options[s.selectedIndex].textContent")
    active = explorer.locator("button.widget-toggle-button.mod-active")
    return f"{option} × {active.first.inner_text() if active.count() else '?'}"


def wait_for_new_figure(page, explorer, before: str, where: str) -> str:
    """Wait until the explorer shows a figure other than ``before``; fail naming ``where`` and the choice otherwise."""
    deadline = time.monotonic() + CHOICE_TIMEOUT_S
    while time.monotonic() < deadline:
        found = errors(page)
        if found:
            pytest.fail(f"{where} (shown: {shown(explorer)}): error output\n" + "\n".join(found))
        src = figure_src(explorer)
        if src and src != before and page.evaluate(IDLE_JS):  # idle: every state update of the choice has arrived
            return src
        page.wait_for_timeout(200)
    shot = SCREENSHOTS / ("failure-" + "".join(c if c.isalnum() else "_" for c in where) + ".png")
    explorer.screenshot(path=str(shot))
    pytest.fail(f"{where} (shown: {shown(explorer)}): no new figure within {CHOICE_TIMEOUT_S:.0f} s (screenshot: {shot})")


def run_all(page, lab, name: str) -> None:
    """Open ``name`` in JupyterLab, run every cell, wait until the kernel is idle with every cell run."""
    # ?reset: a fresh workspace, else JupyterLab reopens the previous notebook (and its kernel) beside this one
    page.goto(f"{lab.url}/lab/tree/{name}.ipynb?reset&token={lab.token}")
    page.wait_for_function("path => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget; "
                           "return w && w.context && w.context.path === path && w.content && w.content.model; }",
                           arg=f"{name}.ipynb", timeout=120_000)
    page.evaluate(RUN_ALL_JS)
    try:
        page.wait_for_function(DONE_JS, timeout=RUN_TIMEOUT_S * 1000, polling=1000)
    except Exception as error:  # a timeout: say where the run stood
        page.screenshot(path=str(SCREENSHOTS / f"failure-{name}-run-all.png"))
        pytest.fail(f"{name}: Run All did not finish in {RUN_TIMEOUT_S:.0f} s ({error.__class__.__name__}); "
                    f"errors so far: {errors(page)}\nserver log:\n{lab.log_tail()}")
    found = errors(page)
    if found:
        page.screenshot(path=str(SCREENSHOTS / f"failure-{name}-run-all.png"))
    assert not found, f"{name}: Run All left error output\n" + "\n".join(found)
    assert page.evaluate("() => window.__runAll") == "done", f"{name}: Run All stopped ({page.evaluate('() => window.__runAll')})"


def walk(page, explorer, where: str) -> list[tuple[str, str]]:
    """Choose every dropdown option and every toggle offered for it; return the (option, toggle) pairs walked."""
    select = explorer.locator("select").first
    options = select.locator("option").all_inner_texts()
    seen: dict[str, tuple[str, str]] = {}
    src = wait_for_new_figure(page, explorer, "", f"{where}, default view")  # widget views render after the kernel idles
    for option in options:
        current = select.evaluate("s => s.options[s.selectedIndex].textContent")
        if current != option:
            select.select_option(label=option)
            src = wait_for_new_figure(page, explorer, src, f"{where}, {option}")
        buttons = explorer.locator("button.widget-toggle-button")
        for label in buttons.all_inner_texts():
            button = buttons.filter(has_text=label).first
            choice = f"{where}, {option} × {label}"
            if "mod-active" not in (button.get_attribute("class") or ""):
                button.click()
                src = wait_for_new_figure(page, explorer, src, choice)
            print(f"  {choice}: figure {src[:8]} at {time.monotonic():.0f} s", flush=True)
            assert src not in seen, f"{choice}: the same figure as {seen.get(src)}"
            seen[src] = (option, label)
    return list(seen.values())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_every_explorer_choice_renders(browser, lab, path):
    name = path.stem
    if name in NEEDS:
        pytest.importorskip(NEEDS[name], reason=f"{name} needs {NEEDS[name]}: pip install -r requirements-deploy.txt")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        run_all(page, lab, name)
        print(f"{name}: Run All took {time.monotonic() - started:.0f} s", flush=True)
        explorers = page.locator(f".{EXPLORER_CLASS}")
        shot = SCREENSHOTS / f"{name}.png"
        if explorers.count():
            explorers.first.scroll_into_view_if_needed()
            explorers.first.screenshot(path=str(shot))
        else:
            page.screenshot(path=str(shot), full_page=True)
        walked = []
        for i in range(explorers.count()):
            explorer = explorers.nth(i)
            label = explorer.locator(".widget-dropdown label").first.inner_text()
            walked.append((label, walk(page, explorer, f"{name}, explorer {i} ({label})")))
        print(f"{name}: {time.monotonic() - started:.0f} s; walked " +
              "; ".join(f"{label}: {len(pairs)} choices {pairs}" for label, pairs in walked))
    finally:
        page.close()
        for session in lab.api("/api/sessions"):  # free the kernel's memory before the next notebook
            lab.api(f"/api/sessions/{session['id']}", method="DELETE")


FAILING_EXPLORER = """import matplotlib.pyplot as plt
from frankenllama.figures.explorer import explorer
explorer({"a": [1, 2], "b": [1, 2]}, lambda s, k: 1 / 0 if (s, k) == ("b", 2) else plt.figure().add_subplot(title=f"{s} {k}").figure,
         ("letter", "k"), ("a", 1))"""


def test_an_error_inside_a_widget_fails_naming_the_choice(browser, lab):
    """The suite's own check: an exception caught by ipywidgets in one choice fails the walk at that choice."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FAILING_EXPLORER)])
    nb.metadata["kernelspec"] = {"name": "frankenllama", "display_name": "frankenllama (.venv)", "language": "python"}
    nbformat.write(nb, lab.folder / "failing.ipynb")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        run_all(page, lab, "failing")
        with pytest.raises(pytest.fail.Exception, match=r"failing, b \(shown: b × 2\): error output[\s\S]*ZeroDivisionError"):
            walk(page, page.locator(f".{EXPLORER_CLASS}").first, "failing")
    finally:
        page.close()
        for session in lab.api("/api/sessions"):
            lab.api(f"/api/sessions/{session['id']}", method="DELETE")
