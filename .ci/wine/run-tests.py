#!/usr/bin/env python3
"""Run the workspace's Windows test executables under Wine and print a summary per crate.

Input: the JSON messages of `cargo test --no-run --message-format=json-render-diagnostics
--target x86_64-pc-windows-gnu` on stdin (or in the file given as the first argument).
Every test executable is run under `wine64` with a time bound; its libtest summary lines
and `SKIP:` lines are counted per crate. Exit status: 0 when every executable ran and no
test failed, 1 otherwise. The output of a failing executable is printed whole.
"""

import json
import os
import re
import subprocess
import signal
import sys
import tempfile
import time

WINE = os.environ.get("WINE", "/usr/lib/wine/wine64")
WINESERVER = os.environ.get("WINESERVER", "/usr/lib/wine/wineserver")
# One executable may run for at most this long (every test of ours is bounded well below).
EXE_TIMEOUT_S = int(os.environ.get("WINE_TEST_TIMEOUT_S", "600"))
# What Wine prints when a program loses its connection to the wineserver before it runs.
WINE_INFRA_ERROR = "wine client error"
RESULT_ANYWHERE = re.compile(r"^test result: ", re.M)
RESULT = re.compile(
    r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored; (\d+) measured; (\d+) filtered out"
)


def executables(messages):
    """(crate, target name, kind, path) of every test executable cargo built."""
    found = []
    for line in messages:
        line = line.strip()
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact":
            continue
        if not msg.get("profile", {}).get("test") or not msg.get("executable"):
            continue
        target = msg["target"]
        crate = msg["package_id"]
        # "path+file:///…/auth-core#0.1.0" or "auth-core 0.1.0 (path+file://…)"
        m = re.search(r"/([A-Za-z0-9_-]+)#", crate) or re.match(r"([A-Za-z0-9_-]+) ", crate)
        crate = m.group(1) if m else crate
        found.append((crate, target["name"], target["kind"][0], msg["executable"]))
    return sorted(set(found))


def run(path, env):
    """Runs one executable; its output goes to a file (Wine's helper processes may keep a
    pipe open after the test ends). On timeout the whole process group and the prefix's
    wineserver are killed, so one hung test cannot hang the run."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out_file:
        proc = subprocess.Popen(
            [WINE, path, "--test-threads=2"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=EXE_TIMEOUT_S)
            note = ""
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            subprocess.run([WINESERVER, "--kill"], env=env, check=False)
            proc.wait()
            code = None
            note = f"\n(killed after {EXE_TIMEOUT_S} s)\n"
        out_file.seek(0)
        out = out_file.read().decode("utf-8", "replace") + note
    return code, out, time.monotonic() - start


def main():
    source = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    exes = executables(source)
    if not exes:
        print("no test executables found in cargo's output", file=sys.stderr)
        return 1
    env = dict(os.environ)
    env.setdefault("WINEDEBUG", "-all")
    totals = {}
    broken = []
    for crate, name, kind, path in exes:
        code, out, took = run(path, env)
        if code != 0 and WINE_INFRA_ERROR in out and not RESULT_ANYWHERE.search(out):
            # Wine itself failed to start the program (its server went away under it): not a
            # test result. Run it once more and say so.
            print(f"retry  {crate}/{kind}/{name}: Wine failed to start it ({WINE_INFRA_ERROR})")
            code, out, took = run(path, env)
        passed = failed = ignored = 0
        seen_result = False
        for line in out.splitlines():
            m = RESULT.match(line.strip())
            if m:
                seen_result = True
                passed += int(m.group(2))
                failed += int(m.group(3))
                ignored += int(m.group(4))
        skips = [line for line in out.splitlines() if "SKIP:" in line]
        t = totals.setdefault(crate, [0, 0, 0, 0, 0])
        t[0] += passed
        t[1] += failed
        t[2] += ignored
        t[3] += len(skips)
        t[4] += took
        status = "ok" if code == 0 and seen_result and failed == 0 else "FAILED"
        print(
            f"{status:6} {crate}/{kind}/{name}: {passed} passed, {failed} failed, "
            f"{ignored} ignored, {len(skips)} skipped ({took:.1f} s)",
            flush=True,
        )
        for line in skips:
            print(f"         {line.strip()}")
        if status != "ok":
            broken.append((crate, name))
            print(f"--- output of {path} (exit {code}) ---")
            print(out)
            print("--- end ---", flush=True)
    print()
    print("Windows tests under Wine (x86_64-pc-windows-gnu)")
    print(f"{'crate':18} {'passed':>7} {'failed':>7} {'ignored':>8} {'skipped':>8} {'time':>8}")
    for crate in sorted(totals):
        p, f, i, s, t = totals[crate]
        print(f"{crate:18} {p:7} {f:7} {i:8} {s:8} {t:7.0f}s")
    p, f, i, s, t = (sum(v[k] for v in totals.values()) for k in range(5))
    print(f"{'total':18} {p:7} {f:7} {i:8} {s:8} {t:7.0f}s")
    if broken:
        print(f"FAILED: {', '.join(c + '/' + n for c, n in broken)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
