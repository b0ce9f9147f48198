#!/usr/bin/env python3
"""Helpers for run.sh (stdlib only).

  benchlib.py proc PID            -> "CPU_SECONDS RSS_KB" summed over PID and its descendants
  benchlib.py smoke KIND FILE     -> one-line verdict on a smoke response body (KIND: json|sse)
  benchlib.py summarize RUN_DIR OUT_JSON
                                  -> writes OUT_JSON (+ .md beside it) and prints the markdown table
"""
import datetime
import json
import os
import platform
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------- /proc
def _children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        ppid = int(rest[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def proc_tree(pid):
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_usage(pid):
    cpu_ticks, rss_kb = 0, 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            rest = s[s.rindex(")") + 2:].split()
            # fields after comm: state(0) ppid(1) ... utime(11) stime(12)
            cpu_ticks += int(rest[11]) + int(rest[12])
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss_kb += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return cpu_ticks / CLK_TCK, rss_kb


# ----------------------------------------------------------------- smoke
def smoke(kind, path):
    try:
        raw = open(path, "rb").read().decode("utf-8", "replace")
    except OSError as e:
        return f"no-body({e.strerror})"
    if kind == "json":
        try:
            v = json.loads(raw)
        except ValueError:
            return "not-json:" + raw[:120].replace("\n", " ")
        if isinstance(v, dict) and "choices" in v:
            content = ""
            try:
                content = v["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                pass
            return f"model={v.get('model')} content_chars={len(content)}"
        return "error-body:" + json.dumps(v)[:200]
    # sse
    chunks = [l for l in raw.splitlines() if l.startswith("data:")]
    done = any(l.strip() == "data: [DONE]" for l in chunks)
    text, model = "", None
    for l in chunks:
        payload = l[5:].strip()
        if payload == "[DONE]":
            continue
        try:
            v = json.loads(payload)
        except ValueError:
            continue
        model = v.get("model", model)
        for ch in v.get("choices") or []:
            text += (ch.get("delta") or {}).get("content") or ""
    return f"data_events={len(chunks)} done={'yes' if done else 'no'} model={model} content_chars={len(text)}"


# ----------------------------------------------------------------- summarize
def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _meta(path):
    m = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if "=" in line:
                    k, v = line.split("=", 1)
                    m[k] = v
    except OSError:
        pass
    return m


def _ms(x):
    return None if x is None else round(x * 1000.0, 3)


def _oha_summary(o, stats, duration_hint):
    """Digest one oha JSON (+ the mock's /stats taken right after it)."""
    if not o:
        return None
    codes = {int(k): v for k, v in (o.get("statusCodeDistribution") or {}).items()}
    transport = {k: v for k, v in (o.get("errorDistribution") or {}).items()}
    aborted = transport.pop("aborted due to deadline", 0)
    responses = sum(codes.values())
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    failed_http = responses - ok
    transport_errors = sum(transport.values())
    requests = responses + transport_errors
    total_s = (o.get("summary") or {}).get("total") or duration_hint or 0
    lp = o.get("latencyPercentiles") or {}
    lps = o.get("latencyPercentilesSuccessful") or {}
    d = {
        "requests": requests,
        "responses": responses,
        "ok": ok,
        "errors": failed_http + transport_errors,
        "http_errors": failed_http,
        "transport_errors": transport_errors,
        "aborted_at_deadline": aborted,
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "transport_error_kinds": transport,
        "elapsed_s": round(total_s, 3),
        "req_per_s": round(requests / total_s, 1) if total_s else None,
        "ok_per_s": round(ok / total_s, 1) if total_s else None,
        "success_rate": round(ok / requests, 4) if requests else None,
        "p50_ms": _ms(lp.get("p50")),
        "p90_ms": _ms(lp.get("p90")),
        "p99_ms": _ms(lp.get("p99")),
        "p50_ok_ms": _ms(lps.get("p50")) if ok else None,
        "p99_ok_ms": _ms(lps.get("p99")) if ok else None,
        "max_ms": _ms((o.get("summary") or {}).get("slowest")),
    }
    if stats is not None:
        total = stats.get("total", 0)
        by_model = {
            m: {"calls": v.get("total", 0), "status": v.get("status", {})}
            for m, v in (stats.get("models") or {}).items()
        }
        d["upstream"] = {
            "calls": total,
            "calls_per_request": round(total / requests, 3) if requests else None,
            "by_model": by_model,
        }
    return d


SCEN_DESC = {
    "A": "healthy: primary answers 200",
    "B": "primary always 429 (Retry-After) -> must be served by secondary",
    "C": "primary fails 30% with 429 (deterministic sequence) -> fallback to secondary",
    "S": "healthy, every request streamed (stream-load: time to first content event, streams read to [DONE])",
    "D": "primary has a capacity (default 8 requests in flight, 20 ms each; 429 above it) -> "
         "the overflow must go to the secondary; the ideal primary share is capacity / connections",
}


def _stream_summary(o, stats):
    """Digest one stream-load JSON (+ the mock's /stats taken right after it)."""
    if not o:
        return None
    d = dict(o)
    d["success_rate"] = round(o["ok"] / o["streams"], 4) if o.get("streams") else None
    if stats is not None:
        total = stats.get("total", 0)
        d["upstream"] = {
            "calls": total,
            "calls_per_request": round(total / o["streams"], 3) if o.get("streams") else None,
        }
    return d


def _fmt(x, nd=1):
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def summarize(run_dir, out_json):
    settings = _meta(os.path.join(run_dir, "settings.env"))
    versions = _meta(os.path.join(run_dir, "versions.env"))
    order = []
    try:
        with open(os.path.join(run_dir, "order.txt")) as f:
            order = [l.split() for l in f if l.strip()]
    except OSError:
        pass
    duration_hint = None
    try:
        duration_hint = float(settings.get("DURATION", "10s").rstrip("s"))
    except ValueError:
        pass

    results = []
    for scen, sut in order:
        base = os.path.join(run_dir, f"{scen}-{sut}")
        m = _meta(os.path.join(base, "meta.env"))
        r = {
            "scenario": scen,
            "sut": sut,
            "status": m.get("status", "missing"),
            "reason": m.get("reason") or None,
            "startup_s": float(m["startup_s"]) if m.get("startup_s") else None,
            "smoke": {k[6:]: v for k, v in m.items() if k.startswith("smoke_")},
            "load": _oha_summary(
                _load(os.path.join(base, "load.json")),
                _load(os.path.join(base, "load.stats.json")),
                duration_hint,
            ),
            "probe_c1": _oha_summary(
                _load(os.path.join(base, "probe.json")),
                _load(os.path.join(base, "probe.stats.json")),
                None,
            ),
        }
        if scen == "S":
            r["load"] = None
            r["stream_load"] = _stream_summary(
                _load(os.path.join(base, "load-stream.json")),
                _load(os.path.join(base, "load.stats.json")),
            )
            r["stream_probe_c1"] = _stream_summary(
                _load(os.path.join(base, "probe-stream.json")),
                _load(os.path.join(base, "probe.stats.json")),
            )
            if r["stream_load"] and m.get("cpu_s") and r["stream_load"].get("streams"):
                r["sut_cpu_ms_per_stream"] = round(float(m["cpu_s"]) * 1000.0 / r["stream_load"]["streams"], 4)
        if r["load"] and m.get("cpu_s") and r["load"]["requests"]:
            cpu = float(m["cpu_s"])
            r["sut_cpu_s"] = round(cpu, 3)
            r["sut_cpu_ms_per_req"] = round(cpu * 1000.0 / r["load"]["requests"], 4)
        if m.get("rss_kb"):
            r["sut_rss_mb"] = round(int(m["rss_kb"]) / 1024.0, 1)
        results.append(r)

    # overhead vs the baseline of the same scenario (unloaded c=1 probe, p50 of all responses)
    for r in results:
        b = next((x for x in results if x["scenario"] == r["scenario"] and x["sut"] == "baseline"), None)
        if r["sut"] != "baseline" and b and b.get("probe_c1") and r.get("probe_c1"):
            bp, rp = b["probe_c1"].get("p50_ms"), r["probe_c1"].get("p50_ms")
            if bp is not None and rp is not None:
                r["added_p50_ms_c1"] = round(rp - bp, 3)

    # comparisons with the nullproxy calibration point (bare Rust pass-through):
    # ok req/s as a % of nullproxy's healthy (scenario A) req/s, and added c=1 p50
    # minus nullproxy's in the same scenario
    np_a = next((x for x in results if x["scenario"] == "A" and x["sut"] == "nullproxy" and x.get("load")), None)
    for r in results:
        if r["sut"] in ("baseline", "nullproxy") or not r.get("load"):
            continue
        if np_a and np_a["load"].get("req_per_s"):
            r["ok_rps_pct_of_nullproxy_A"] = round(100.0 * (r["load"]["ok_per_s"] or 0) / np_a["load"]["req_per_s"], 2)
        np_s = next((x for x in results if x["scenario"] == r["scenario"] and x["sut"] == "nullproxy"), None)
        if np_s and np_s.get("added_p50_ms_c1") is not None and r.get("added_p50_ms_c1") is not None:
            r["added_p50_ms_c1_minus_nullproxy"] = round(r["added_p50_ms_c1"] - np_s["added_p50_ms_c1"], 3)

    # streams (S): added time to first token at c=1 over the baseline's, and minus nullproxy's
    def _ttft(r):
        p = (r.get("stream_probe_c1") or {}).get("ttft_ms") or {}
        return p.get("p50")
    for r in results:
        if r["scenario"] != "S":
            continue
        b = next((x for x in results if x["scenario"] == "S" and x["sut"] == "baseline"), None)
        if r["sut"] != "baseline" and b and _ttft(b) is not None and _ttft(r) is not None:
            r["added_ttft_p50_ms_c1"] = round(_ttft(r) - _ttft(b), 3)
    np_s = next((x for x in results if x["scenario"] == "S" and x["sut"] == "nullproxy"), None)
    for r in results:
        if r["scenario"] == "S" and r["sut"] not in ("baseline", "nullproxy") and np_s:
            if np_s.get("added_ttft_p50_ms_c1") is not None and r.get("added_ttft_p50_ms_c1") is not None:
                r["added_ttft_p50_ms_c1_minus_nullproxy"] = round(
                    r["added_ttft_p50_ms_c1"] - np_s["added_ttft_p50_ms_c1"], 3)
            if (np_s.get("stream_load") or {}).get("ok_per_s") and r.get("stream_load"):
                r["ok_streams_pct_of_nullproxy"] = round(
                    100.0 * (r["stream_load"]["ok_per_s"] or 0) / np_s["stream_load"]["ok_per_s"], 2)

    doc = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "machine": platform.machine(),
        },
        "settings": settings,
        "versions": versions,
        "scenarios": {s: SCEN_DESC.get(s, s) for s in dict.fromkeys(x["scenario"] for x in results)},
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    lines = []
    conn = settings.get("CONNECTIONS", "?")
    lines.append(
        f"Load: {settings.get('DURATION','?')} at {conn} connections after {settings.get('WARMUP','?')} warm-up; "
        f"probe: {settings.get('PROBE_DURATION','?')} at 1 connection; mock latency {settings.get('LATENCY_MS','0')} ms; "
        f"CPU pinning: {'SUT on cpu1, mock+oha on cpu0' if settings.get('PIN') == '1' else 'off'}."
    )
    plain_rows = [r for r in results if r["scenario"] != "S"]
    if plain_rows:
        lines.append("")
    lines.append(
        f"| scen | SUT | req/s (c={conn}) | success % | errors | p50 ms | p99 ms | upstream calls/req (load / c=1) "
        "| c=1 p50 ms | c=1 p99 ms | added p50 vs baseline (c=1) ms | SUT CPU ms/req | SUT RSS MB | 2xx req/s % of nullproxy (A) "
        "| served by primary % |"
    )
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    if not plain_rows:
        del lines[-2:]
    primary = settings.get("PRIMARY_MODEL", "openai/gpt-4o-mini")
    for r in results:
        if r["scenario"] == "S":
            continue
        L, P = r.get("load"), r.get("probe_c1")
        if r["status"] != "ok" or not L:
            why = (r.get("reason") or r["status"]).replace("|", "/")[:160]
            lines.append(f"| {r['scenario']} | {r['sut']} | {why} |  |  |  |  |  |  |  |  |  |  |  |  |")
            continue
        pm = ((L.get("upstream") or {}).get("by_model") or {}).get(primary) or {}
        served_primary = None
        if L.get("requests") and L.get("upstream"):
            served_primary = 100.0 * (pm.get("status") or {}).get("200", 0) / L["requests"]
        sr = None if L["success_rate"] is None else L["success_rate"] * 100.0
        up = (L.get("upstream") or {}).get("calls_per_request")
        up1 = ((P or {}).get("upstream") or {}).get("calls_per_request")
        lines.append(
            "| {s} | {n} | {rps} | {sr} | {err} | {p50} | {p99} | {up} | {pp50} | {pp99} | {add} | {cpu} | {rss} | {pct} | {prim} |".format(
                s=r["scenario"],
                n=r["sut"],
                rps=_fmt(L["req_per_s"], 0),
                sr=_fmt(sr, 1),
                err=L["errors"],
                p50=_fmt(L["p50_ms"], 2),
                p99=_fmt(L["p99_ms"], 2),
                up=f"{_fmt(up, 2)} / {_fmt(up1, 2)}",
                pp50=_fmt(P["p50_ms"] if P else None, 3),
                pp99=_fmt(P["p99_ms"] if P else None, 3),
                add=_fmt(r.get("added_p50_ms_c1"), 3),
                cpu=_fmt(r.get("sut_cpu_ms_per_req"), 3),
                rss=_fmt(r.get("sut_rss_mb"), 0),
                pct=_fmt(r.get("ok_rps_pct_of_nullproxy_A"), 2),
                prim=_fmt(served_primary, 1),
            )
        )
    stream_rows = [r for r in results if r["scenario"] == "S"]
    if stream_rows:
        lines.append("")
        lines.append(
            f"| scen | SUT | streams/s (c={conn}) | success % | errors | TTFT p50 ms (c={conn}) | TTFT p99 ms (c={conn}) "
            "| stream p50 ms | c=1 TTFT p50 ms | added TTFT p50 vs baseline (c=1) ms | added TTFT minus nullproxy's (c=1) ms "
            "| SUT CPU ms/stream | ok streams/s % of nullproxy |"
        )
        lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for r in stream_rows:
            L, P = r.get("stream_load"), r.get("stream_probe_c1")
            if r["status"] != "ok" or not L:
                why = (r.get("reason") or r["status"]).replace("|", "/")[:160]
                lines.append(f"| S | {r['sut']} | {why} |  |  |  |  |  |  |  |  |  |  |")
                continue
            t, tot = L.get("ttft_ms") or {}, L.get("total_ms") or {}
            lines.append(
                "| S | {n} | {sps} | {sr} | {err} | {t50} | {t99} | {tot} | {p1} | {add} | {addn} | {cpu} | {pct} |".format(
                    n=r["sut"],
                    sps=_fmt(L.get("streams_per_s"), 0),
                    sr=_fmt(None if L["success_rate"] is None else L["success_rate"] * 100.0, 1),
                    err=L.get("errors"),
                    t50=_fmt(t.get("p50"), 2),
                    t99=_fmt(t.get("p99"), 2),
                    tot=_fmt(tot.get("p50"), 2),
                    p1=_fmt(((P or {}).get("ttft_ms") or {}).get("p50"), 3),
                    add=_fmt(r.get("added_ttft_p50_ms_c1"), 3),
                    addn=_fmt(r.get("added_ttft_p50_ms_c1_minus_nullproxy"), 3),
                    cpu=_fmt(r.get("sut_cpu_ms_per_stream"), 3),
                    pct=_fmt(r.get("ok_streams_pct_of_nullproxy"), 2),
                )
            )
    lines.append("")
    for s in doc["scenarios"]:
        lines.append(f"- {s}: {doc['scenarios'][s]}")
    lines.append(
        "- p50/p99 are over all responses at the load's concurrency; success % = 2xx / requests; "
        "errors = non-2xx + transport errors; upstream calls/req = mock-upstream requests / client requests "
        "(the c=1 probe runs right after the load, so it sees any circuit-breaker state the load left behind)."
    )
    md = "\n".join(lines) + "\n"
    with open(os.path.splitext(out_json)[0] + ".md", "w") as f:
        f.write(md)
    sys.stdout.write(md)


def main(argv):
    if len(argv) >= 2 and argv[0] == "proc":
        cpu, rss = proc_usage(int(argv[1]))
        print(f"{cpu:.3f} {rss}")
    elif len(argv) == 3 and argv[0] == "smoke":
        print(smoke(argv[1], argv[2]))
    elif len(argv) == 3 and argv[0] == "summarize":
        summarize(argv[1], argv[2])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
