#!/usr/bin/python3
"""Runs laurel's libFuzzer targets (built by `make fuzz-build`) and reports, per target,
executions, coverage (cov: and ft: of libFuzzer's last status line), corpus size and
crashes; every run is appended to <dir>/stats.jsonl and the totals over all runs
recorded there are printed too.

  fuzz/run.py --dir build-fuzz --seconds 60 http ws ... [-- extra libFuzzer args]
  fuzz/run.py --dir build-fuzz --replay --seconds 8 ...   (CI: seeds once, then briefly)

New inputs go to <dir>/corpus/<target>/ (the seeds in fuzz/corpus/<target>/ are only
read); a crashing input is written to <dir>/artifacts/<target>/. Exit status 1 when any
target crashed or a seed failed."""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Per target libFuzzer options. The targets that embed CPython keep interned strings
# and caches between inputs, which LeakSanitizer would report as leaks of each input.
OPTIONS = {
    "msgpack": ["-detect_leaks=0"],
    "scope": ["-detect_leaks=0"],
    "http": ["-max_len=8192"],
    "ws": ["-max_len=8192"],
    "pmd": ["-max_len=4096"],
    "redis": ["-max_len=4096"],
}

# "#N  NEW  cov: C ft: F corp: K/Sb ...", or with -fork=N "#N: cov: C ft: F corp: K ...".
STATUS = re.compile(r"^#(\d+):?\s+(?:\w+\s+)?cov: (\d+) ft: (\d+)(?: corp: (\d+))?")
EXECS = re.compile(r"stat::number_of_executed_units: (\d+)")


def run_target(args, target, extra):
    binary = os.path.join(args.dir, "fuzz_" + target)
    seeds = os.path.join(HERE, "corpus", target)
    work = os.path.join(args.dir, "corpus", target)
    arts = os.path.join(args.dir, "artifacts", target)
    for d in (work, arts):
        os.makedirs(d, exist_ok=True)
    base = [binary, "-artifact_prefix=" + arts + "/", "-print_final_stats=1",
            "-timeout=10", "-rss_limit_mb=2560"] + OPTIONS.get(target, [])
    result = {"target": target, "time": int(time.time()), "seconds": args.seconds,
              "execs": 0, "cov": 0, "ft": 0, "corpus": 0, "crashes": 0, "seed_failures": 0}
    if args.replay:
        # Every seed once: a seed that crashes fails the replay.
        p = subprocess.run(base + ["-runs=0", seeds], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace")
        if p.returncode != 0:
            result["seed_failures"] = 1
            sys.stdout.write(p.stdout[-6000:])
    cmd = base + ["-max_total_time=%d" % args.seconds] + extra + [work, seeds]
    t0 = time.time()
    log_path = os.path.join(args.dir, "fuzz-%s.log" % target)
    with open(log_path, "w") as log:
        p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    result["wall"] = round(time.time() - t0, 1)
    text = open(log_path, errors="replace").read()
    for line in text.splitlines():
        m = STATUS.match(line)
        if m:
            result["cov"], result["ft"] = int(m.group(2)), int(m.group(3))
            if m.group(4):
                result["corpus"] = int(m.group(4))
            result["execs"] = max(result["execs"], int(m.group(1)))
    m = EXECS.search(text)
    if m:
        result["execs"] = int(m.group(1))
    if p.returncode != 0:
        result["crashes"] = max(1, len(re.findall(r"Test unit written to", text)))
        sys.stdout.write("".join(text.splitlines(True)[-60:]))
    return result


def table(args):
    """Totals per target over every run recorded in stats.jsonl (docs/fuzzing.md)."""
    total = {}
    for line in open(os.path.join(args.dir, "stats.jsonl")):
        r = json.loads(line)
        t = total.setdefault(r["target"], {"execs": 0, "crashes": 0, "runs": 0, "cov": 0,
                                            "ft": 0, "seconds": 0, "corpus": 0})
        t["execs"] += r["execs"]
        t["crashes"] += r["crashes"]
        t["runs"] += 1
        t["seconds"] += r.get("wall", r["seconds"])
        t["cov"] = max(t["cov"], r["cov"])
        t["ft"] = max(t["ft"], r["ft"])
        t["corpus"] = max(t["corpus"], r["corpus"])
    print("| target | executions | runs | time | execs/s | cov | ft | corpus | crashes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.targets or sorted(total):
        t = total[name]
        print("| `%s` | %s | %d | %d min | %d | %d | %d | %d | %d |" % (
            name, "{:,}".format(t["execs"]), t["runs"], round(t["seconds"] / 60),
            t["execs"] / max(t["seconds"], 1), t["cov"], t["ft"], t["corpus"],
            t["crashes"]))
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="build-fuzz")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--replay", action="store_true")
    ap.add_argument("--table", action="store_true",
                    help="print the totals of stats.jsonl as a Markdown table, run nothing")
    ap.add_argument("targets", nargs="*")
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = ap.parse_args(argv)
    if args.table:
        return table(args)
    results = []
    for t in args.targets:
        r = run_target(args, t, extra)
        results.append(r)
        print("fuzz %-9s %12d execs  cov %5d  ft %6d  corpus %5d  crashes %d%s" % (
            t, r["execs"], r["cov"], r["ft"], r["corpus"], r["crashes"],
            "  SEED FAILED" if r["seed_failures"] else ""), flush=True)
    stats = os.path.join(args.dir, "stats.jsonl")
    with open(stats, "a") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    total = {}
    for line in open(stats):
        r = json.loads(line)
        t = total.setdefault(r["target"], {"execs": 0, "crashes": 0, "runs": 0, "cov": 0,
                                            "ft": 0})
        t["execs"] += r["execs"]
        t["crashes"] += r["crashes"]
        t["runs"] += 1
        t["cov"] = max(t["cov"], r["cov"])
        t["ft"] = max(t["ft"], r["ft"])
    print("all runs in %s:" % stats)
    for name in args.targets:
        t = total[name]
        print("  %-9s %12d execs in %3d runs  best cov %5d  ft %6d  crashes %d" % (
            name, t["execs"], t["runs"], t["cov"], t["ft"], t["crashes"]))
    bad = any(r["crashes"] or r["seed_failures"] for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
