"""Synthetic multicenter cohort with ground truth (``blina synth``).

Public API: :func:`generate` (write everything), :func:`build_cohort` (in memory), the oracle
(:mod:`blina_study.adapter.synth.oracle`) and the OMOP re-reader (:mod:`blina_study.adapter.synth.omop_events`).
"""

from blina_study.adapter.synth.generate import SynthResult, build_cohort, generate, write_truth

__all__ = ["SynthResult", "build_cohort", "generate", "write_truth"]
