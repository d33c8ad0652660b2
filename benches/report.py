"""Renders the load benchmark's JSON lines as the Markdown tables in docs/benchmarks.md.

Usage: python3 benches/report.py results.jsonl PROXY_CPUS HARNESS_CPUS PROXY_THREADS [ROUNDS DURATION IDLE]
Each point is the median over the rounds of the run (requests/s, and each latency figure).
Target ratios are paired: the median over rounds of the ratio within each round, whose points run
seconds apart. On a shared machine whose speed swings within minutes, a ratio of medians can pair
one target's fast minute with another's slow one (docs/benchmarks.md, sixth session).
"""

import json
import statistics
import sys
from collections import defaultdict

path, proxy_cpus, harness_cpus, threads = sys.argv[1:5]
rounds = sys.argv[5] if len(sys.argv) > 5 else "1"
duration = sys.argv[6] if len(sys.argv) > 6 else "?"
idle = sys.argv[7] if len(sys.argv) > 7 else "not recorded"
rows = [json.loads(line) for line in open(path) if line.strip()]
groups = defaultdict(list)
for r in rows:
    groups[(r["label"], r["concurrency"])].append(r)


def median_row(rs):
    med = lambda f: statistics.median(f(r) for r in rs)
    return {
        "rps": med(lambda r: r["rps"]),
        "errors": sum(r["errors"] for r in rs),
        "latency_us": {q: med(lambda r: r["latency_us"][q]) for q in ("p50", "p99")},
        "ttfb_us": {q: med(lambda r: r["ttfb_us"][q]) for q in ("p50", "p99")},
        "spread": (min(r["rps"] for r in rs), max(r["rps"] for r in rs)),
        "cpu_us": statistics.median(r["cpu_us_per_request"] for r in rs)
        if all(r.get("cpu_us_per_request") for r in rs)
        else None,
    }


def paired(target, base, c, kind="chat"):
    """Median over rounds of target's req/s over base's in the same round (rows are in round order)."""
    a, b = groups.get((f"{kind}/{target}", c), []), groups.get((f"{kind}/{base}", c), [])
    ratios = [x["rps"] / y["rps"] for x, y in zip(a, b) if y["rps"]]
    return statistics.median(ratios) if ratios else None


chat = defaultdict(dict)
streams = defaultdict(dict)
for (label, c), rs in groups.items():
    kind, target = label.split("/")
    if kind == "chat":
        chat[c][target] = median_row(rs)
    else:
        streams[c][target] = median_row(rs)
stream = streams.get(1, {})

TARGETS = ["direct", "pingora", "nginx", "sluice", "sluice-no-spend-logs", "sluice-anthropic", "sluice-vkey",
           "sluice-shuffle", "sluice-router", "sluice-failover"]

print(f"Pinning: proxy under test on CPU {proxy_cpus} with {threads} worker thread(s); "
      f"mock provider and load generator on CPU {harness_cpus}. Each point: median of {rounds} "
      f"rounds of {duration} s (targets interleaved within a round). Idle vCPUs: {idle}.\n")
print("| concurrency | target | req/s (min-max) | p50 µs | p99 µs | added p50 µs | added p99 µs | req/s vs Pingora | req/s vs nginx | proxy CPU µs/req | CPU efficiency vs Pingora | errors |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in sorted(chat):
    direct = chat[c].get("direct")
    for target in TARGETS:
        r = chat[c].get(target)
        if not r:
            continue
        lat = r["latency_us"]
        added50 = lat["p50"] - direct["latency_us"]["p50"] if direct and target != "direct" else None
        added99 = lat["p99"] - direct["latency_us"]["p99"] if direct and target != "direct" else None
        vs_pingora = r["rps"] / chat[c]["pingora"]["rps"] if "pingora" in chat[c] else None
        vs_nginx = r["rps"] / chat[c]["nginx"]["rps"] if "nginx" in chat[c] else None
        fmt = lambda v, spec: "" if v is None else format(v, spec)
        lo, hi = r["spread"]
        base_cpu = chat[c].get("pingora", {}).get("cpu_us")
        efficiency = base_cpu / r["cpu_us"] if base_cpu and r["cpu_us"] else None
        print(f"| {c} | {target} | {r['rps']:,.0f} ({lo:,.0f}-{hi:,.0f}) | {lat['p50']:.0f} | {lat['p99']:.0f} | "
              f"{fmt(added50, '.0f')} | {fmt(added99, '.0f')} | {fmt(vs_pingora, '.2f')} | {fmt(vs_nginx, '.2f')} | "
              f"{fmt(r['cpu_us'], '.1f')} | {fmt(efficiency, '.2f')} | {r['errors']} |")

if stream:
    print("\nStreaming (concurrency 1): time to first body byte, and added over calling the mock directly.\n")
    print("| target | TTFB p50 µs | TTFB p99 µs | added TTFB p50 µs |")
    print("|---|---:|---:|---:|")
    d = stream.get("direct")
    for target in TARGETS:
        r = stream.get(target)
        if not r:
            continue
        added = r["ttfb_us"]["p50"] - d["ttfb_us"]["p50"] if d and target != "direct" else None
        print(f"| {target} | {r['ttfb_us']['p50']:.0f} | {r['ttfb_us']['p99']:.0f} | {'' if added is None else format(added, '.0f')} |")

for c in sorted(k for k in streams if k > 1):
    row = streams[c]
    print(f"\nStreams at concurrency {c} (9 events each): throughput and proxy CPU per stream; ratios paired per round.\n")
    print("| target | streams/s (min-max) | p50 µs | p99 µs | vs Pingora | vs nginx | proxy CPU µs/stream | CPU vs nginx | CPU vs Pingora |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for target in TARGETS:
        r = row.get(target)
        if not r:
            continue
        fmt = lambda v, spec: "" if v is None else format(v, spec)
        vs_p = paired(target, "pingora", c, "stream") if "pingora" in row else None
        vs_n = paired(target, "nginx", c, "stream") if "nginx" in row else None
        cpu = r["cpu_us"]
        n_cpu, p_cpu = row.get("nginx", {}).get("cpu_us"), row.get("pingora", {}).get("cpu_us")
        lo, hi = r["spread"]
        print(f"| {target} | {r['rps']:,.0f} ({lo:,.0f}-{hi:,.0f}) | {r['latency_us']['p50']:.0f} | {r['latency_us']['p99']:.0f} | "
              f"{fmt(vs_p, '.2f')} | {fmt(vs_n, '.2f')} | {fmt(cpu, '.1f')} | "
              f"{fmt(cpu / n_cpu if cpu and n_cpu else None, '.2f')} | {fmt(cpu / p_cpu if cpu and p_cpu else None, '.2f')} |")

print("\nTargets (issue 2):")
top = max(chat) if chat else None
for target, what in [("sluice", "Sluice (spend logs on, the default)"),
                     ("sluice-no-spend-logs", "Sluice without spend logs (issue 2's feature set)")]:
    if 1 in chat and target in chat[1] and "direct" in chat[1]:
        added = chat[1][target]["latency_us"]["p50"] - chat[1]["direct"]["latency_us"]["p50"]
        print(f"- {what}: added p50 latency at concurrency 1: {added:.0f} µs (target < 150 µs): {'met' if added < 150 else 'NOT met'}")
    if top and target in chat[top] and "pingora" in chat[top]:
        ratio = paired(target, "pingora", top)
        if ratio is None:
            continue
        of_medians = chat[top][target]["rps"] / chat[top]["pingora"]["rps"]
        print(f"- {what}: throughput at concurrency {top}: {ratio:.0%} of the minimal Pingora proxy, median of the "
              f"per-round ratios (target >= 85%): {'met' if ratio >= 0.85 else 'NOT met'}; ratio of the medians {of_medians:.0%}")
        s, p = chat[top][target]["cpu_us"], chat[top]["pingora"]["cpu_us"]
        if s and p:
            print(f"- {what}: CPU per request at concurrency {top}: {s:.1f} µs, minimal Pingora proxy {p:.1f} µs: "
                  f"{p / s:.0%} of the Pingora proxy's work per CPU second")

def against_sluice(issue, target, what, goal):
    """Per concurrency: `target`'s throughput as a share of plain Sluice's, with CPU per request."""
    if not any(target in chat[c] for c in chat):
        return
    print(f"\nTargets (issue {issue}):")
    for c in sorted(chat):
        if "sluice" in chat[c] and target in chat[c]:
            ratio = paired(target, "sluice", c)
            if ratio is None:
                continue
            t, s_ = chat[c][target]["cpu_us"], chat[c]["sluice"]["cpu_us"]
            cpu = f"; CPU per request {t:.1f} vs {s_:.1f} µs" if t and s_ else ""
            verdict = "met" if ratio >= goal else "NOT met"
            print(f"- concurrency {c}: {what} {ratio:.0%}, median of the per-round ratios (target >= {goal:.0%}): {verdict}{cpu}")


against_sluice(3, "sluice-anthropic", "translated (Anthropic) throughput vs passthrough:", 0.85)
against_sluice(4, "sluice-vkey", "virtual key with a budget (cached) vs the master key's throughput:", 0.90)


# Issue 16: the router configured (latency-based, retries, fallbacks) against plain Sluice
# (simple-shuffle, same floor), and the failover run against the healthy router run.
if any("sluice-router" in chat[c] for c in chat):
    print("\nTargets (issue 16):")
    for c in sorted(chat):
        row = chat[c]
        for base, what in [("sluice", "router configured (latency-based, num_retries 2, fallbacks) vs simple-shuffle"),
                           ("sluice-shuffle", "the same router config, latency-based vs simple-shuffle")]:
            if base not in row or "sluice-router" not in row:
                continue
            ratio = paired("sluice-router", base, c)
            t, s_ = row["sluice-router"]["cpu_us"], row[base]["cpu_us"]
            if ratio is not None:
                cpu = f"; CPU per request {t:.1f} vs {s_:.1f} µs ({t / s_:.2f}x)" if t and s_ else ""
                verdict = "met" if ratio >= 0.97 else "NOT met"
                print(f"- concurrency {c}: {what}: {ratio:.0%} of its throughput, "
                      f"median of the per-round ratios (target >= 97%): {verdict}{cpu}")
        if "sluice-router" in row and "sluice-failover" in row:
            ratio = paired("sluice-failover", "sluice-router", c)
            errors = row["sluice-failover"]["errors"]
            if ratio is not None:
                verdict = "met" if ratio >= 0.90 and errors == 0 else "NOT met"
                print(f"- concurrency {c}: failover (deployment b answers 429 to half its calls) vs healthy: "
                      f"{ratio:.0%} of its throughput, {errors} errors seen by clients (target >= 90%, 0 errors): {verdict}")
