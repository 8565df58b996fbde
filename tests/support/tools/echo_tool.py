"""A local tool for tests: prints what it received (argv and stdin) as JSON,
and behaves badly on request: `hang`, `flood` (10 MB), `fail` (exit 3)."""

import json
import sys
import time

arguments = json.loads(sys.stdin.read() or "{}")
mode = arguments.get("mode", "")
if mode == "hang":
    time.sleep(3600)
if mode == "flood":
    sys.stdout.write("x" * (10 * 1024 * 1024))
    sys.exit(0)
if mode == "fail":
    print("the order database is down", file=sys.stderr)
    sys.exit(3)
print(json.dumps({"argv": sys.argv[1:], "stdin": arguments}))
