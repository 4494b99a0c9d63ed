"""The paper's section 4 as commands: ablation, alpha sweep, unification, profile.

Every experiment runs the pipeline in one process with the very node code a Flower run uses
(:mod:`dmnreid.experiments.driver`), writes one directory per run (its own checkpoint: a
finished run is never redone) and tables, CSV and plots under ``--out``.
"""
