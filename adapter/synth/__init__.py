"""Synthetic multicenter cohort with ground truth (``blina synth``).

Public API: :func:`generate` (write everything), :func:`build_cohort` (in memory), the oracle
(:mod:`adapter.synth.oracle`) and the OMOP re-reader (:mod:`adapter.synth.omop_events`).
"""

from adapter.synth.generate import SynthResult, build_cohort, generate, write_truth

__all__ = ["SynthResult", "build_cohort", "generate", "write_truth"]
