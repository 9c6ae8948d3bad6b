"""The workbook's figures and tables: one style module, a table writer, one figure module per notebook.

* ``style`` — ``set_style``, ``save_figure`` (PDF + PNG; the only ``savefig``), ``PALETTE``, sizes;
* ``tables`` — ``write_table`` (CSV + LaTeX booktabs);
* ``similarity`` — notebook 01: angular distance, Block Influence, cosine similarity;
* ``pruning`` — notebook 02: pruning curves, score profiles, proxy correlation, stability, explorer;
* ``healing`` — notebook 03;
* ``evaluation`` — notebook 04: accuracy Pareto front and per-task retention.

Nothing is imported here; import the module a notebook needs (``from frankenllama.figures import pruning``).
"""
