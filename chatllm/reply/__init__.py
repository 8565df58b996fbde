"""A reply's way from the engine to a renderer.

events.py    the typed events a reply is made of (text, drafts, reasoning,
             notices, tool calls and results, the finish with its usage)
stages.py    the stages a reply's text goes through, each fed as it streams
pipeline.py  the one place that composes them: engine stream -> reasoning
             split -> repetition guard -> grounding -> a persona's checks ->
             drafts -> finish
meter.py     usage, timings and finish reasons over a job's engine calls
"""
