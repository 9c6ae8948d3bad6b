"""lm-eval's own HellaSwag preprocessing, so the cross-check compares against lm-eval, not a copy of ours."""

from lm_eval.tasks.hellaswag.utils import process_docs  # noqa: F401
