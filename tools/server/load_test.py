#!/usr/bin/env python3
"""Load test of `kvpress serve` (standard library only).

    build/kvpress serve --model models/SmolLM2-135M-Instruct.Q4_1.gguf --port 0 --max-queue 256
    python tools/server/load_test.py --url http://127.0.0.1:PORT [--clients 64] [--requests 2000]
        [--time-limit-s 900] [--api-key K] [--json] [--seed 0]
    python tools/server/load_test.py --url ... --throughput

Correctness under load: creates 3 shared contexts (POST /v1/contexts: one uncompressed, one
snapkv 0.5, one knorm 0.75) and a fixed set of 24 request variants (chat without a press, chat
with a kv_press, chat about each context, completions; max_tokens 8..16, temperature 0).
Phase 1 sends each variant once, alone: its single-request answer. Phase 2 sends --requests
requests drawn (seeded) from the variants from --clients threads at once; every answer must
equal its variant's single-request answer exactly (text and finish_reason). A 503 or 429 is
retried after its Retry-After (and counted). Reports failures, p50/p90/p99 latency, requests/s,
completion tokens/s and wall time; exits 1 on any lost or mismatching answer, or when the time
limit cuts the run short.

--throughput: decode-dominated throughput (short prompts, max_tokens 32, temperature 0; completions
by default, --throughput-endpoint chat for chat) with one
client at a time (--serial-requests, 32) and with --throughput-clients (16) at once
(--concurrent-requests, 128); prints the ratio of completion tokens/s (the target on a 2-core
machine is >= 4x; --min-ratio makes it a requirement). Answers must also agree between the two.
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

# --------------------------------------------------------------------------------------------
# HTTP


class Server:
    def __init__(self, url, api_key, timeout):
        u = urllib.parse.urlparse(url)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit("--url must look like http://HOST:PORT (got %r)" % url)
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _headers(self):
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            h["Authorization"] = "Bearer " + self.api_key
        return h

    def request(self, method, path, body=None):
        """(status, headers dict (lower-case names), body bytes); one connection per request."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, self.prefix + path, body=None if body is None else json.dumps(body),
                         headers=self._headers())
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def stream(self, path, body):
        """A streamed request: (status, headers, events list, saw [DONE], raw body on error)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", self.prefix + path, body=json.dumps(body), headers=self._headers())
            r = conn.getresponse()
            headers = {k.lower(): v for k, v in r.getheaders()}
            if r.status != 200:
                return r.status, headers, [], False, r.read()
            events, done = [], False
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n")
                if not line.startswith(b"data:"):
                    continue  # blank separators and ':' keepalive comments
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                events.append(json.loads(payload))
            return r.status, headers, events, done, b""
        finally:
            conn.close()


class Answer:
    __slots__ = ("text", "finish", "completion_tokens", "latency", "retries_503", "retries_429",
                 "error")

    def __init__(self):
        self.text = None
        self.finish = None
        self.completion_tokens = 0
        self.latency = None
        self.retries_503 = 0
        self.retries_429 = 0
        self.error = None


def retry_after(headers):
    try:
        return max(0.05, min(30.0, float(headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


def send(server, variant, deadline, stream=False):
    """Sends one request of a variant, retrying 503/429 after Retry-After until the deadline."""
    a = Answer()
    path, body = variant["path"], dict(variant["body"])
    chat = path.endswith("/chat/completions")
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    t0 = time.monotonic()
    while True:
        try:
            if stream:
                status, headers, events, done, raw = server.stream(path, body)
            else:
                status, headers, raw = server.request("POST", path, body)
        except Exception as e:  # noqa: BLE001 - a lost answer, whatever the cause
            a.error = "%s: %s" % (type(e).__name__, e)
            return a
        if status in (503, 429):
            if status == 503:
                a.retries_503 += 1
            else:
                a.retries_429 += 1
            wait = retry_after(headers)
            if time.monotonic() + wait > deadline:
                a.error = "HTTP %d until the time limit" % status
                return a
            time.sleep(wait)
            continue
        break
    a.latency = time.monotonic() - t0
    if status != 200:
        a.error = "HTTP %d: %s" % (status, raw[:300].decode(errors="replace"))
        return a
    try:
        if stream:
            if not done:
                a.error = "stream ended without data: [DONE]"
                return a
            parts, usage = [], None
            for e in events:
                if e.get("usage"):
                    usage = e["usage"]
                for c in e.get("choices") or []:
                    piece = (c.get("delta") or {}).get("content") if chat else c.get("text")
                    if piece:
                        parts.append(piece)
                    if c.get("finish_reason"):
                        a.finish = c["finish_reason"]
            a.text = "".join(parts)
        else:
            j = json.loads(raw)
            c = j["choices"][0]
            a.text = c["message"]["content"] if chat else c["text"]
            a.finish = c.get("finish_reason")
            usage = j.get("usage")
        if not usage:
            a.error = "no usage in the response"
            return a
        a.completion_tokens = int(usage["completion_tokens"])
        if usage["total_tokens"] != usage["prompt_tokens"] + usage["completion_tokens"]:
            a.error = "usage total != prompt + completion: %r" % usage
        elif a.completion_tokens > variant["body"]["max_tokens"]:
            a.error = "completion_tokens %d > max_tokens %d" % (a.completion_tokens,
                                                                variant["body"]["max_tokens"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        a.error = "bad response (%s: %s): %s" % (type(e).__name__, e, raw[:300])
    return a


# --------------------------------------------------------------------------------------------
# The workload

CONTEXTS = [
    ("plain", None,
     "The village of Hollowmere lies beside a cold green lake. Its baker, Ada Finch, opens her shop at "
     "five every morning and sells rye bread with caraway. The lake freezes every January, and the "
     "children skate on it until March. A ferry named Marigold crosses the lake twice a day."),
    ("snapkv-0.5", {"press": "snapkv", "ratio": 0.5},
     "Project Lantern is a solar-powered water pump designed by engineers in Nairobi. It lifts 900 "
     "litres an hour from wells up to 20 metres deep. The first prototype was tested in 2019 in the "
     "town of Machakos. Each pump costs about 400 dollars and lasts roughly ten years."),
    ("knorm-0.75", {"press": "knorm", "ratio": 0.75},
     "The Andean condor has a wingspan of up to 3.3 metres, one of the largest of any land bird. It "
     "feeds mostly on carrion and can glide for hours without flapping its wings. Condors may live "
     "for more than 50 years. The species is a national symbol of Bolivia, Chile and Peru."),
]

CONTEXT_QUESTIONS = {
    "plain": ["What is the name of the ferry?", "When does the baker open her shop?"],
    "snapkv-0.5": ["How much does each pump cost?", "Where was the first prototype tested?"],
    "knorm-0.75": ["How long can condors live?", "What does the condor eat?"],
}

PASSAGES = [
    "Marie Curie was born in Warsaw in 1867. She moved to Paris to study physics and mathematics at "
    "the Sorbonne. With her husband Pierre she discovered polonium and radium. She won two Nobel "
    "prizes, one in physics and one in chemistry. Question: In which city was Marie Curie born?",
    "The Great Barrier Reef lies off the coast of Queensland in Australia. It is made of almost three "
    "thousand individual reefs and stretches for over 2,300 kilometres. Warming seas have caused "
    "several mass bleaching events since 1998. Question: Which country is the reef in?",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. It takes place in "
    "the chloroplasts of plant cells, which contain the green pigment chlorophyll. Most of the "
    "oxygen in the air comes from it. Question: What pigment makes plants green?",
    "The Rust programming language was first released in 2015. It promises memory safety without a "
    "garbage collector through its ownership system and borrow checker. Cargo is its build tool and "
    "package manager. Question: What is the name of Rust's package manager?",
]


def build_variants(model, ctx_ids):
    """The 24 request variants: (name, path, body)."""
    v = []

    def chat(name, messages, max_tokens, **extra):
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        body.update(extra)
        v.append({"name": name, "path": "/v1/chat/completions", "body": body})

    def completion(name, prompt, max_tokens, **extra):
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        body.update(extra)
        v.append({"name": name, "path": "/v1/completions", "body": body})

    # Chat without a press (4).
    chat("chat/capital", [{"role": "user", "content": "What is the capital of Italy?"}], 8)
    chat("chat/haiku", [{"role": "user", "content": "Write a haiku about autumn leaves."}], 16)
    chat("chat/system", [{"role": "system", "content": "You are a terse assistant."},
                         {"role": "user", "content": "Why is the sky blue?"}], 12)
    chat("chat/multiturn", [{"role": "user", "content": "Hi! What is 2 plus 2?"},
                            {"role": "assistant", "content": "2 plus 2 is 4."},
                            {"role": "user", "content": "And 3 plus 3?"}], 10)
    # Chat with a kv_press (8): every press, every ratio.
    presses = [("snapkv", 0.25), ("snapkv", 0.5), ("knorm", 0.5), ("knorm", 0.75),
               ("streaming_llm", 0.5), ("streaming_llm", 0.75), ("tova", 0.25), ("tova", 0.75)]
    for i, (press, ratio) in enumerate(presses):
        passage = PASSAGES[i % len(PASSAGES)]
        chat("chat+%s-%g/p%d" % (press, ratio, i % len(PASSAGES)), [{"role": "user", "content": passage}],
             8 + (i * 3) % 9, kv_press={"press": press, "ratio": ratio})
    # Chat about each stored context (6).
    for label, _, _ in CONTEXTS:
        for j, q in enumerate(CONTEXT_QUESTIONS[label]):
            chat("chat@%s/q%d" % (label, j), [{"role": "user", "content": q}], 12 + 4 * j,
                 context_id=ctx_ids[label])
    # Completions (6): plain, with a press, after a stored context.
    completion("completion/fox", "The quick brown fox", 8)
    completion("completion/list", "Three things to pack for a beach holiday: 1.", 16)
    completion("completion/code", "def fibonacci(n):\n   ", 14)
    completion("completion/story", "Once upon a time, in a small village by the sea,", 12)
    completion("completion+snapkv-0.5", PASSAGES[0].split("Question:")[0] + "Marie Curie was born in", 10,
               kv_press={"press": "snapkv", "ratio": 0.5})
    completion("completion@plain", " The ferry is called", 9, context_id=ctx_ids["plain"])
    return v


THROUGHPUT_TOPICS = ["the moon", "volcanoes", "honey bees", "the ocean", "trains", "chess", "coffee",
                     "rainbows", "penguins", "the desert", "jazz", "bicycles", "glaciers", "owls",
                     "lighthouses", "tea"]


def throughput_variants(model, endpoint):
    """Short prompts, 32 tokens each: completions (a raw prompt of 5-7 tokens, the default) or chat
    (the template and SmolLM2's default system prompt make it about 30 prompt tokens)."""
    if endpoint == "chat":
        return [{"name": "tp/%s" % t, "path": "/v1/chat/completions",
                 "body": {"model": model, "messages": [{"role": "user", "content": "Tell me about %s." % t}],
                          "max_tokens": 32, "temperature": 0}} for t in THROUGHPUT_TOPICS]
    return [{"name": "tp/%s" % t, "path": "/v1/completions",
             "body": {"model": model, "prompt": "A story about %s:" % t, "max_tokens": 32, "temperature": 0}}
            for t in THROUGHPUT_TOPICS]


def server_counters(server):
    """The server's decode counters from /metrics (kvpress serve's names), or {} if absent."""
    try:
        status, _, raw = server.request("GET", "/metrics")
    except Exception:  # noqa: BLE001 - optional
        return {}
    out = {}
    if status == 200:
        for line in raw.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("kvpress_decode_steps_total", "kvpress_completion_tokens_total",
                                                "kvpress_prompt_tokens_total"):
                out[parts[0]] = float(parts[1])
    return out


def counter_delta(before, after):
    d = {k[len("kvpress_"):]: after[k] - before[k] for k in after if k in before}
    steps = d.get("decode_steps_total")
    if steps:
        d["completion_tokens_per_decode_step"] = d.get("completion_tokens_total", 0) / steps
    return d


# --------------------------------------------------------------------------------------------
# Runs


def percentile(sorted_xs, p):
    if not sorted_xs:
        return None
    k = max(0, min(len(sorted_xs) - 1, int(round(p / 100.0 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[k]


def run_concurrent(server, variants, plan, clients, deadline, stream_plan=None, progress=None):
    """Sends plan (variant indices) from `clients` threads; returns (answers by position, wall s)."""
    answers = [None] * len(plan)
    lock = threading.Lock()
    next_i = [0]
    done = [0]

    def worker():
        while True:
            with lock:
                i = next_i[0]
                if i >= len(plan) or time.monotonic() >= deadline:
                    return
                next_i[0] += 1
            answers[i] = send(server, variants[plan[i]], deadline,
                              stream=bool(stream_plan and stream_plan[i]))
            with lock:
                done[0] += 1
                if progress and done[0] % progress == 0:
                    print("  %d/%d answered" % (done[0], len(plan)), file=sys.stderr, flush=True)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        # The workers stop taking requests at the deadline; one in flight may take up to the timeout.
        t.join(max(0.0, deadline - time.monotonic()) + server.timeout + 5)
    return answers, time.monotonic() - t0


def summarize(answers, wall):
    got = [a for a in answers if a is not None]
    lat = sorted(a.latency for a in got if a.latency is not None and a.error is None)
    tokens = sum(a.completion_tokens for a in got if a.error is None)
    ok = [a for a in got if a.error is None]
    return {
        "answered": len(ok),
        "errors": sum(1 for a in got if a.error is not None),
        "not_sent": sum(1 for a in answers if a is None),
        "retries_503": sum(a.retries_503 for a in got),
        "retries_429": sum(a.retries_429 for a in got),
        "latency_s": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                      "max": lat[-1] if lat else None, "mean": sum(lat) / len(lat) if lat else None},
        "completion_tokens": tokens,
        "wall_s": wall,
        "requests_per_s": len(ok) / wall if wall > 0 else 0.0,
        "completion_tokens_per_s": tokens / wall if wall > 0 else 0.0,
    }


def create_contexts(server):
    ids, info = {}, {}
    for label, press, text in CONTEXTS:
        body = {"text": text}
        if press:
            body["kv_press"] = press
        status, _, raw = server.request("POST", "/v1/contexts", body)
        if status != 200:
            raise RuntimeError("POST /v1/contexts (%s) -> HTTP %d: %s" % (label, status, raw[:300]))
        j = json.loads(raw)
        ids[label] = j["id"]
        info[label] = {k: j.get(k) for k in ("id", "context_tokens", "kv_bytes", "kv_bytes_uncompressed",
                                             "achieved_ratio")}
    return ids, info


def delete_contexts(server, ids):
    for cid in ids.values():
        try:
            server.request("DELETE", "/v1/contexts/" + cid)
        except Exception:  # noqa: BLE001 - cleanup only
            pass


def model_id(server):
    status, _, raw = server.request("GET", "/v1/models")
    if status != 200:
        raise RuntimeError("GET /v1/models -> HTTP %d: %s" % (status, raw[:300]))
    return json.loads(raw)["data"][0]["id"]


def fmt_ms(x):
    return "-" if x is None else "%.0f ms" % (x * 1000)


def load_test(args, server):
    t_start = time.monotonic()
    deadline = t_start + args.time_limit_s
    report = {"mode": "load", "url": args.url, "clients": args.clients, "requests": args.requests,
              "seed": args.seed, "stream_fraction": args.stream_fraction, "time_limit_s": args.time_limit_s}
    model = model_id(server)
    ctx_ids, ctx_info = create_contexts(server)
    report["contexts"] = ctx_info
    failures = []
    try:
        variants = build_variants(model, ctx_ids)
        report["variants"] = len(variants)
        log("%d variants, %d contexts; phase 1: each variant alone" % (len(variants), len(ctx_ids)))

        # Phase 1: the single-request answers.
        t1 = time.monotonic()
        reference = {}
        for i, v in enumerate(variants):
            a = send(server, v, deadline)
            if a.error:
                failures.append({"phase": 1, "variant": v["name"], "error": a.error})
            else:
                reference[i] = a
                log("  %-28s %-6s %5s %r" % (v["name"], a.finish, fmt_ms(a.latency), a.text[:70]))
        report["phase1"] = {"wall_s": time.monotonic() - t1, "answered": len(reference),
                            "answers": {variants[i]["name"]: {"text": a.text, "finish_reason": a.finish}
                                        for i, a in reference.items()}}

        # Phase 2: the same variants, many at once.
        rng = random.Random(args.seed)
        plan = [rng.randrange(len(variants)) for _ in range(args.requests)]
        stream_plan = [rng.random() < args.stream_fraction for _ in range(args.requests)]
        log("phase 2: %d requests from %d clients" % (len(plan), args.clients))
        answers, wall = run_concurrent(server, variants, plan, args.clients, deadline, stream_plan,
                                       progress=max(1, args.requests // 10))
        mismatches = 0
        for i, a in enumerate(answers):
            if a is None:
                continue
            v = variants[plan[i]]
            if a.error:
                failures.append({"phase": 2, "request": i, "variant": v["name"], "stream": stream_plan[i],
                                 "error": a.error})
                continue
            ref = reference.get(plan[i])
            if ref is None:
                failures.append({"phase": 2, "request": i, "variant": v["name"], "stream": stream_plan[i],
                                 "error": "no single-request answer to compare with"})
            elif (a.text, a.finish) != (ref.text, ref.finish):
                mismatches += 1
                failures.append({"phase": 2, "request": i, "variant": v["name"], "stream": stream_plan[i],
                                 "error": "mismatch", "expected": [ref.text, ref.finish],
                                 "got": [a.text, a.finish]})
        p2 = summarize(answers, wall)
        p2["mismatches"] = mismatches
        p2["streamed"] = sum(1 for i, a in enumerate(answers) if a is not None and stream_plan[i])
        report["phase2"] = p2
    finally:
        delete_contexts(server, ctx_ids)
    report["wall_s"] = time.monotonic() - t_start
    report["time_limit_exceeded"] = (("phase2" in report and report["phase2"]["not_sent"] > 0)
                                     or time.monotonic() > deadline)
    report["failures"] = len(failures)
    report["first_failures"] = failures[:10]
    p2 = report.get("phase2", {})
    report["ok"] = (not failures and not report["time_limit_exceeded"]
                    and p2.get("answered") == args.requests)
    if not args.json:
        print("load test: %d clients, %d requests (%.0f%% streamed), %d variants, seed %d" % (
            args.clients, args.requests, 100 * args.stream_fraction, report.get("variants", 0), args.seed))
        if p2:
            print("  answered %d/%d, mismatches %d, errors %d, not sent %d (time limit), "
                  "503 retries %d, 429 retries %d" % (p2["answered"], args.requests, p2["mismatches"],
                                                      p2["errors"], p2["not_sent"], p2["retries_503"],
                                                      p2["retries_429"]))
            lt = p2["latency_s"]
            print("  latency p50 %s, p90 %s, p99 %s, max %s" % (fmt_ms(lt["p50"]), fmt_ms(lt["p90"]),
                                                                 fmt_ms(lt["p99"]), fmt_ms(lt["max"])))
            print("  throughput %.2f requests/s, %.1f completion tokens/s (%d tokens in %.1f s)" % (
                p2["requests_per_s"], p2["completion_tokens_per_s"], p2["completion_tokens"], p2["wall_s"]))
        print("  phase 1 %.1f s, wall time %.1f s (limit %g s)%s" % (
            report.get("phase1", {}).get("wall_s", 0), report["wall_s"], args.time_limit_s,
            ", TIME LIMIT EXCEEDED" if report["time_limit_exceeded"] else ""))
        print("  failures: %d" % len(failures))
        for f in failures[:5]:
            print("    " + json.dumps(f)[:600])
        print("RESULT: " + ("PASS" if report["ok"] else "FAIL"))
    return report


def throughput_test(args, server):
    t_start = time.monotonic()
    deadline = t_start + args.time_limit_s
    model = model_id(server)
    variants = throughput_variants(model, args.throughput_endpoint)
    report = {"mode": "throughput", "url": args.url, "endpoint": args.throughput_endpoint, "max_tokens": 32}
    log("warm-up")
    send(server, variants[0], deadline)

    log("serial: %d requests, one at a time" % args.serial_requests)
    serial_plan = [i % len(variants) for i in range(args.serial_requests)]
    m0 = server_counters(server)
    serial, serial_wall = run_concurrent(server, variants, serial_plan, 1, deadline)
    m1 = server_counters(server)
    s = summarize(serial, serial_wall)
    s["server"] = counter_delta(m0, m1)
    log("  %.1f completion tokens/s, %.2f requests/s" % (s["completion_tokens_per_s"], s["requests_per_s"]))

    log("concurrent: %d requests from %d clients" % (args.concurrent_requests, args.throughput_clients))
    conc_plan = [i % len(variants) for i in range(args.concurrent_requests)]
    conc, conc_wall = run_concurrent(server, variants, conc_plan, args.throughput_clients, deadline)
    m2 = server_counters(server)
    c = summarize(conc, conc_wall)
    c["server"] = counter_delta(m1, m2)

    # The answers must agree: one client or sixteen, the same greedy text.
    reference, failures = {}, []
    for plan, answers in ((serial_plan, serial), (conc_plan, conc)):
        for i, a in enumerate(answers):
            if a is None:
                continue
            if a.error:
                failures.append({"variant": variants[plan[i]]["name"], "error": a.error})
                continue
            ref = reference.setdefault(plan[i], (a.text, a.finish))
            if (a.text, a.finish) != ref:
                failures.append({"variant": variants[plan[i]]["name"], "error": "mismatch",
                                 "expected": list(ref), "got": [a.text, a.finish]})
    ratio_tok = c["completion_tokens_per_s"] / s["completion_tokens_per_s"] if s["completion_tokens_per_s"] else 0
    ratio_req = c["requests_per_s"] / s["requests_per_s"] if s["requests_per_s"] else 0
    report.update({"serial": dict(s, clients=1, requests=args.serial_requests),
                   "concurrent": dict(c, clients=args.throughput_clients, requests=args.concurrent_requests),
                   "ratio_tokens_per_s": ratio_tok, "ratio_requests_per_s": ratio_req,
                   "target_ratio": 4.0, "min_ratio": args.min_ratio, "failures": len(failures),
                   "first_failures": failures[:10], "wall_s": time.monotonic() - t_start})
    lost = s["not_sent"] + c["not_sent"]
    report["time_limit_exceeded"] = lost > 0
    report["ok"] = not failures and lost == 0 and ratio_tok >= args.min_ratio
    if not args.json:
        print("throughput (%s, short prompts, max_tokens 32, temperature 0):" % args.throughput_endpoint)
        for label, x in (("1 client", s), ("%d clients" % args.throughput_clients, c)):
            print("  %-10s %4d requests in %6.1f s: %6.2f requests/s, %7.1f completion tokens/s, "
                  "latency p50 %s p99 %s" % (label, x["answered"], x["wall_s"], x["requests_per_s"],
                                             x["completion_tokens_per_s"], fmt_ms(x["latency_s"]["p50"]),
                                             fmt_ms(x["latency_s"]["p99"])))
            sv = x.get("server") or {}
            if "completion_tokens_per_decode_step" in sv:
                print("             server: %d prompt tokens, %d decode steps, %.1f completion tokens per step"
                      % (sv.get("prompt_tokens_total", 0), sv["decode_steps_total"],
                         sv["completion_tokens_per_decode_step"]))
        print("  ratio: %.2fx completion tokens/s, %.2fx requests/s (target >= 4x: %s)" % (
            ratio_tok, ratio_req, "met" if ratio_tok >= 4.0 else "NOT met"))
        print("  failures: %d%s" % (len(failures), ", requests not sent (time limit): %d" % lost if lost else ""))
        for f in failures[:5]:
            print("    " + json.dumps(f)[:600])
        print("  wall time %.1f s" % report["wall_s"])
        print("RESULT: " + ("PASS" if report["ok"] else "FAIL"))
    return report


QUIET = [False]


def log(msg):
    if not QUIET[0]:
        print(msg, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--time-limit-s", type=float, default=900)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object (progress on stderr)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stream-fraction", type=float, default=0.0,
                    help="fraction of phase 2's requests sent with stream: true (default 0)")
    ap.add_argument("--request-timeout-s", type=float, default=600, help="socket timeout of one request")
    ap.add_argument("--throughput", action="store_true", help="measure the concurrency speed-up instead")
    ap.add_argument("--serial-requests", type=int, default=32)
    ap.add_argument("--concurrent-requests", type=int, default=128)
    ap.add_argument("--throughput-clients", type=int, default=16)
    ap.add_argument("--throughput-endpoint", choices=("completions", "chat"), default="completions",
                    help="--throughput's requests: completions with a raw prompt (default), or chat")
    ap.add_argument("--min-ratio", type=float, default=0.0,
                    help="--throughput fails below this tokens/s ratio (default 0: only reported)")
    args = ap.parse_args()
    if args.clients < 1 or args.requests < 0:
        ap.error("--clients must be >= 1 and --requests >= 0")
    QUIET[0] = False
    server = Server(args.url, args.api_key, args.request_timeout_s)
    try:
        report = throughput_test(args, server) if args.throughput else load_test(args, server)
    except Exception as e:  # noqa: BLE001
        report = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        if not args.json:
            print("RESULT: FAIL (%s)" % report["error"])
    if args.json:
        print(json.dumps(report, indent=2))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
