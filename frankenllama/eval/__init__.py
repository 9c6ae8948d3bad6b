"""What a model kept and what it gained: the measurements of the final comparison.

* ``tasks`` — the zero-shot benchmark registry (``TASKS``) and user tasks from JSONL files;
* ``zero_shot`` — scoring each choice by log-likelihood, ``acc`` / ``acc_norm`` (``evaluate_tasks``);
* ``perplexity`` — token-weighted perplexity on fixed-length token blocks;
* ``fidelity`` — KL divergence and top-1 agreement with the original, greedy generations;
* ``efficiency`` — size, memory, prefill and decode speed, timed side by side.

Nothing is imported here, so ``frankenllama.eval.perplexity`` names the module (the function is
``frankenllama.perplexity``, re-exported by the package).
"""
