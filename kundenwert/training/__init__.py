"""Orchestration: training sets over rolling cutoffs, fitting, backtests, gates and promotion policy."""
