"""``celebbasis eval`` and the tab's Evaluate section: likeness and prompt following, measured, with a report.

prompts (the shipped sets and the user's files) -> runner (render and score
each image, resumable) with scoring (the identity score, shared with the
tab's likeness) and clip_score (the prompt score) -> report (statistics,
scores.json, scores.csv, report.html). ``standalone`` and ``command`` are
the diffusers command line; ``variants`` parses the tuning options to
compare. Nothing here imports gradio or a host module.
"""
