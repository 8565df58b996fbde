"""Product logic: what each command does, independent of how it is shown.

Jobs take an Engine and plain data, and yield text. They never print.
"""
