"""Throughput child: serialises stream-json events one by one, as the real CLIs do, and signals.

Run as `python fake_print.py`; BENCH_MB sets the volume, BENCH_STAMPS gets "start end bytes printed_end".
"""

import json
import os
import sys
import time

prompt = sys.stdin.buffer.read()
session = next((ln[15:].decode() for ln in prompt.split(b"\n") if ln.startswith(b"- Session Dir: ")), "")
target = int(float(os.environ.get("BENCH_MB", "0")) * 1024 * 1024)
out = sys.stdout.buffer
text = "x" * 1000
printed = 0
start = time.time()
n = 0
while printed < target:
    n += 1
    event = {"type": "assistant", "message": {"id": n, "content": [{"type": "text", "text": text}]}}
    line = json.dumps(event)
    data = line.encode() + b"\n"
    out.write(data)
    printed += len(data)
out.flush()
printed_end = time.time()
if session:
    with open(os.path.join(session, "_signal.json"), "w") as f:
        f.write('{"status": "continue", "phase": "implementation", "summary": "bench"}')
out.write(b'{"type":"result","subtype":"success","is_error":false,"num_turns":1,"total_cost_usd":0.001}\n')
out.flush()
with open(os.environ["BENCH_STAMPS"], "a") as f:
    f.write(f"{start} {time.time()} {printed} {printed_end}\n")
