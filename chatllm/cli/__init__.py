"""The command line: typer commands that parse, call a job, and render."""
