#!/usr/bin/env python3
"""Hostile-input client for `kvpress serve`: thousands of malformed or hostile HTTP requests.

    python3 tools/server/hostile_client.py --url http://127.0.0.1:PORT [--count 10000] [--seed 0]
        [--api-key K] [--max-body-kib 1024] [--read-timeout-s 5] [--workers 8] [--json]
    python3 tools/server/hostile_client.py --self-test          # no server needed
    python3 tools/server/hostile_client.py --url ... --only-case 123 [--only-case 456]

Standard library only. Every request goes over a raw socket (HTTP/1.1, `Connection: close`)
and every response is read by this file's own parser with a deadline, so that a server's
malformed framing is seen as such rather than smoothed over by a client library.

The requests fall into categories, about evenly: truncated JSON, huge numbers, deep nesting,
wrong types (every field of /v1/chat/completions, /v1/completions, /v1/contexts), invalid
UTF-8, oversized bodies (honest and lying Content-Length), bad methods, unknown paths,
bad Content-Length / Transfer-Encoding, garbage request lines and headers, huge headers,
context ids that do not exist (and create/delete/use sequences), empty bodies, non-object
JSON, and (with --api-key) bad credentials. Case i of seed s is always the same request
(random.Random("s:i")), so `--only-case i` replays one. Then a few dozen "slow partial sends"
run concurrently: headers and part of a body, then a stall (or a trickle of one byte at a
time); the server must close the connection or answer with an error within
--read-timeout-s + 5 s.

Checks, per response: a complete, well-framed HTTP response arrives; its status is 4xx/5xx,
except that a request which may be valid can get a 2xx (counted apart; its body must then be
JSON, or an SSE stream ending in [DONE], of the endpoint's shape); every 4xx/5xx with a body
carries {"error": {"message": str, "type": str, "param": str|null, "code": str|null}} in
UTF-8 JSON. A connection reset (or a close without a response) is accepted only where the
request sent bytes that the server may refuse to read (oversized bodies, lying lengths, huge
headers, binary garbage) and is counted apart. GET /health must answer 200 every 1000
requests and at the end, and a valid chat request must then still get its answer.

Exit code 0 only when nothing failed and the server stayed alive; 1 otherwise.
"""

import argparse
import concurrent.futures
import http.server
import json
import math
import random
import re
import select
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

# ------------------------------------------------------------------------------------------
# Constants

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
         "contexts": "/v1/contexts"}
PROMPTS = ["Say hi.", "What is 2+2?", "Name a color.", "Hello", "Count to three.",
           "Reply with one word."]
CONTEXT_TEXTS = ["The capital of France is Paris. The Seine flows through it.",
                 "Alice has three apples and Bob has two pears. Alice gives Bob one apple.",
                 "The Zorblatt Observatory was built in 1987 on the slopes of Mount Kerrigan."]
SIMPLE_PRESSES = ["knorm", "snapkv", "streaming_llm", "tova", "expected_attention", "random",
                  "keydiff", "pyramidkv"]
OTHER_PRESSES = ["ada_snapkv", "observed_attention", "criticalkv", "chunk", "chunkkv",
                 "key_rerotation", "per_layer", "composed", "qfilter"]
UNKNOWN_PRESSES = ["nonexistent", "", "SNAPKV", "snapkv ", " snapkv", "snap\u0000kv", "a" * 5000,
                   "../snapkv", "snapkv;rm -rf /", "%s%s%s%n", "\u202esnapkv", "null",
                   "snapkv\n", "Knorm", "k norm"]
VALID_FINAL = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}

# Byte sequences that are not UTF-8 (or are UTF-8 that a strict decoder refuses).
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc0\x80", b"\xc1\xbf",
            b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\x80\xed\xb0\x80",
            b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80",
            b"\xfc\x84\x80\x80\x80\x80", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3", b"\xe2\x28\xa1",
            b"\xa0\xa1", b"\xf0\x28\x8c\x28", b"\x80\x80\x80\x80", b"\xc3\x28"]
# JSON escapes that are valid JSON grammar but not valid Unicode scalar values, or odd ones.
ODD_ESCAPES = [b"\\ud800", b"\\udc00", b"\\ud800\\u0041", b"\\udbff\\udbff", b"\\uDFFF\\uD800",
               b"\\u0000", b"\\u0000\\u0000abc", b"\\uffff", b"\\ufffe", b"\\u202e"]
VALID_UNICODE = ["h\u00e9llo w\u00f6rld", "\u4f60\u597d\uff0c\u4e16\u754c", "\U0001f600\U0001f680 emoji",
                 "\u0645\u0631\u062d\u0628\u0627", "e\u0301\u0301\u0301\u0301 combining",
                 "\u200b\u200c\u200d\ufeff zero widths", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
                 "\u0000nul inside", "tab\tnewline\nCR\r", "\U0010ffff max"]

INF = float("inf")

# ------------------------------------------------------------------------------------------
# Small helpers


def B(x):
    """bytes of x (str -> UTF-8)."""
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    return str(x).encode("utf-8")


def short(b, n=240):
    """A short repr of bytes or text, with the total size when cut."""
    if b is None:
        return "None"
    r = repr(b[:n])
    if len(b) > n:
        r += "...(%d bytes)" % len(b)
    return r


class Raw:
    """Bytes inserted verbatim into a JSON text built by dump_json (a number token, a broken
    string, a deep nest ...)."""

    def __init__(self, b):
        self.b = B(b)


def dump_json(obj, rng=None):
    """JSON text (bytes) of obj, where Raw values (and Raw keys) go in verbatim."""
    raws = []

    def conv(o):
        if isinstance(o, Raw):
            raws.append(o.b)
            return "\u0001RAW%d\u0001" % (len(raws) - 1)
        if isinstance(o, dict):
            return {(conv(k) if isinstance(k, Raw) else k): conv(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [conv(x) for x in o]
        return o

    seps = (",", ":")
    ensure_ascii = True
    if rng is not None:
        seps = rng.choice([(",", ":"), (", ", ": "), (" ,", " : ")])
        ensure_ascii = rng.random() < 0.7
    text = json.dumps(conv(obj), separators=seps, ensure_ascii=ensure_ascii, allow_nan=True)
    out = text.encode("utf-8")
    for i, rb in enumerate(raws):
        ph = json.dumps("\u0001RAW%d\u0001" % i, ensure_ascii=ensure_ascii).encode("utf-8")
        out = out.replace(ph, rb, 1)
    return out


def set_path(obj, path, value):
    """obj with path (keys / list indices) set to value; missing dicts are created."""
    cur = obj
    for k in path[:-1]:
        if isinstance(cur, list):
            cur = cur[k]
        else:
            if k not in cur or not isinstance(cur[k], (dict, list)):
                cur[k] = {}
            cur = cur[k]
    if isinstance(cur, list):
        cur[path[-1]] = value
    else:
        cur[path[-1]] = value
    return obj


def del_path(obj, path):
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    if isinstance(cur, list):
        del cur[path[-1]]
    else:
        cur.pop(path[-1], None)
    return obj


def path_name(path):
    s = ""
    for k in path:
        s += "[%d]" % k if isinstance(k, int) else ("." if s else "") + str(k)
    return s


# ------------------------------------------------------------------------------------------
# Cases


class Case:
    """One request (or, with seq, a short sequence of them) and what may come back.

    allow_2xx: the request may be valid, so a 2xx is no failure (expect200 says what its body
    must look like: chat, completion, context, json, health, text, any).
    allow_reset / allow_close: a reset / a close without any response is acceptable.
    half_close: shut our sending side once the bytes are out (the server sees EOF).
    head: a HEAD request (the response has no body)."""

    __slots__ = ("index", "category", "variant", "data", "allow_2xx", "allow_reset", "allow_close",
                 "half_close", "head", "stream", "expect200", "seq", "step")

    def __init__(self, index, category, variant, data=b"", *, allow_2xx=False, allow_reset=False,
                 allow_close=False, half_close=False, head=False, stream=False, expect200="any",
                 seq=None, step=""):
        self.index, self.category, self.variant, self.data = index, category, variant, data
        self.allow_2xx, self.allow_reset, self.allow_close = allow_2xx, allow_reset, allow_close
        self.half_close, self.head, self.stream, self.expect200 = half_close, head, stream, expect200
        self.seq, self.step = seq, step

    def label(self):
        s = "#%d %s/%s" % (self.index, self.category, self.variant)
        return s + (" step " + self.step if self.step else "")


class Config:
    def __init__(self, host, port, api_key=None, seed=0, max_body_kib=1024, read_timeout_s=5.0,
                 response_timeout_s=60.0, slow_grace_s=5.0, workers=8):
        self.host, self.port, self.api_key, self.seed = host, port, api_key, seed
        self.max_body = max_body_kib * 1024
        self.read_timeout = read_timeout_s
        self.response_timeout = response_timeout_s
        self.slow_grace = slow_grace_s
        self.workers = workers
        self.host_header = "%s:%d" % (host, port)
        self.fail_on_trickle = True  # the command line's default is False (--fail-on-trickle)


def num_must_error(kind, v):
    """Whether a number v (None: not a JSON number at all) in a field of this kind makes the
    request invalid beyond doubt. Where the contract leaves it open (a max_tokens above the
    server's limit is 'capped'), the request may be valid."""
    if v is None:
        return True
    if isinstance(v, float) and not math.isfinite(v):
        return True
    if isinstance(v, int) and abs(v) > 1.7e308:  # not a double: JSON parsers overflow
        return True
    integral = isinstance(v, int) or float(v).is_integer()
    if kind == "max_tokens":
        return (not integral) or v < 1
    if kind == "temperature":
        return v < 0
    if kind == "top_p":
        return v < 0 or v > 1
    if kind == "top_k":
        return (not integral) or v < 0
    if kind == "seed":
        return not integral
    if kind == "ratio":
        return v < 0 or v >= 1
    if kind == "n":
        return (not integral) or v < 1
    if kind in ("content", "model", "stream", "prompt", "text", "press", "role"):
        return True  # a number where a string/bool goes
    return False  # press arguments, penalties: the server decides


NUM_TOKENS = [(b"1e999", INF), (b"-1e400", -INF), (b"1E+99999", INF), (b"1e-400", 0.0),
              (b"-0", 0), (b"-0.0", -0.0), (b"0", 0), (b"1", 1), (b"4", 4),
              (B(2 ** 70), 2 ** 70), (B(-2 ** 70), -2 ** 70), (B(10 ** 30), 10 ** 30),
              (B(2 ** 63), 2 ** 63), (B(2 ** 63 - 1), 2 ** 63 - 1), (B(-2 ** 63), -2 ** 63),
              (B(-2 ** 63 - 1), -2 ** 63 - 1), (B(2 ** 64), 2 ** 64), (B(2 ** 64 - 1), 2 ** 64 - 1),
              (B(2 ** 31), 2 ** 31), (B(2 ** 31 - 1), 2 ** 31 - 1), (B(-2 ** 31 - 1), -2 ** 31 - 1),
              (B(2 ** 32), 2 ** 32), (B(2 ** 53 + 1), 2 ** 53 + 1), (b"-1", -1),
              (b"1e308", 1e308), (b"-1e308", -1e308), (b"1.7976931348623157e308", 1.7976931348623157e308),
              (b"1.7976931348623159e308", INF), (b"5e-324", 5e-324), (b"2.2250738585072014e-308", 2.2250738585072014e-308),
              (b"1e-300", 1e-300), (b"1e-45", 1e-45), (b"9" * 400, 10 ** 400),
              (b"0." + b"0" * 400 + b"1", 0.0), (b"1" + b"0" * 5000, 10 ** 5000),
              (b"4.0", 4.0), (b"1.5", 1.5), (b"1e2", 100.0), (b"0.999999", 0.999999),
              (b"0.9999999", 0.9999999), (b"0.99999999999999999", 1.0), (b"1.0000000000000002", 1.0000000000000002),
              (b"0.5e1", 5.0), (b"2", 2), (b"1024", 1024), (b"1025", 1025), (b"-1e-9", -1e-9),
              (b"3.0e0", 3.0), (b"1E2", 100.0), (b"1e+2", 100.0), (b"123456789012345678901234567890.5", 1.2345678901234568e29)]
BAD_NUM_TOKENS = [b"NaN", b"nan", b"-NaN", b"Infinity", b"-Infinity", b"inf", b"+1", b"01", b"00",
                  b"1.", b".5", b"1e", b"-", b"0x10", b"1_000", b"1e+", b"--1", b"1.2.3",
                  b"\xef\xbc\x91", b"1 2", b"0b1", b"1e1.5", b"- 1", b"\xd9\xa1", b"1e-", b"+Infinity",
                  b"1,5", b"\x00", b"0.", b"-.5", b"1e99999999999999999999", b"0e", b"1ee1"]


class Gen:
    """Builds case `index` of a run from its own random.Random("seed:index")."""

    CATEGORIES = ["truncated_json", "huge_numbers", "deep_nesting", "wrong_types", "invalid_utf8",
                  "oversized_body", "bad_method", "unknown_path", "bad_content_length",
                  "garbage_request", "huge_headers", "missing_context", "empty_body",
                  "non_object_json"]

    def __init__(self, cfg, index, categories):
        self.cfg, self.index = cfg, index
        self.rng = random.Random("%d:%d" % (cfg.seed, index))
        self.categories = categories

    # -------------------------------------------------------------- request building
    def req(self, method, path, body=b"", *, headers=(), cl="auto", ctype="application/json",
            version="HTTP/1.1", host=True, auth=True, close=True):
        lines = [B(method) + b" " + B(path) + b" " + B(version)]
        if host:
            lines.append(b"Host: " + B(self.cfg.host_header))
        if auth and self.cfg.api_key:
            lines.append(b"Authorization: Bearer " + B(self.cfg.api_key))
        body = B(body)
        if ctype and (body or method in ("POST", "PUT", "PATCH")):
            lines.append(b"Content-Type: " + B(ctype))
        if cl == "auto":
            if body or method in ("POST", "PUT", "PATCH"):
                lines.append(b"Content-Length: " + B(len(body)))
        elif cl is not None:
            lines.append(b"Content-Length: " + B(cl))
        if close:
            lines.append(b"Connection: close")
        for h in headers:
            if isinstance(h, tuple):
                lines.append(B(h[0]) + b": " + B(h[1]))
            else:
                lines.append(B(h))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def case(self, category, variant, data, **kw):
        return Case(self.index, category, variant, data, **kw)

    def gen_case(self, category, variant, endpoint, body_bytes, *, must_error, method="POST",
                 stream=False, **kw):
        """A POST of body_bytes to an endpoint, 2xx allowed unless must_error."""
        data = self.req(method, PATHS[endpoint], body_bytes)
        exp = {"chat": "chat", "completions": "completion", "contexts": "context"}[endpoint]
        return self.case(category, variant, data, allow_2xx=not must_error, stream=stream,
                         expect200=exp, **kw)

    # -------------------------------------------------------------- valid bodies
    def valid_press(self):
        r = self.rng
        p = {"press": r.choice(SIMPLE_PRESSES), "ratio": r.choice([0.25, 0.5, 0.75])}
        if p["press"] in ("snapkv", "pyramidkv") and r.random() < 0.5:
            p["args"] = {"window_size": r.choice([2, 4, 8])}
        elif p["press"] == "streaming_llm" and r.random() < 0.5:
            p["args"] = {"n_sink": r.choice([1, 2, 4])}
        return p

    def valid_messages(self):
        r = self.rng
        msgs = []
        if r.random() < 0.2:
            msgs.append({"role": "system", "content": "You are terse."})
        msgs.append({"role": "user", "content": r.choice(PROMPTS)})
        return msgs

    def valid_body(self, endpoint, extras=True):
        r = self.rng
        if endpoint == "contexts":
            b = {"text": r.choice(CONTEXT_TEXTS)} if r.random() < 0.7 else {"messages": self.valid_messages()}
            if extras and r.random() < 0.4:
                b["kv_press"] = self.valid_press()
            return b
        if endpoint == "chat":
            b = {"messages": self.valid_messages(), "max_tokens": r.randint(1, 4)}
        else:
            b = {"prompt": r.choice(PROMPTS), "max_tokens": r.randint(1, 4)}
        if extras:
            if r.random() < 0.3:
                b["model"] = "kvpress"
            if r.random() < 0.2:
                b["temperature"] = r.choice([0, 0.7, 1.0])
                b["seed"] = r.randint(0, 1000)
            if r.random() < 0.1:
                b["top_p"] = 0.9
            if r.random() < 0.1:
                b["top_k"] = 20
            if r.random() < 0.15:
                b["stop"] = r.choice(["\n", [".", " the"]])
            if r.random() < 0.2:
                b["stream"] = True
                if r.random() < 0.5:
                    b["stream_options"] = {"include_usage": True}
            if r.random() < 0.3:
                b["kv_press"] = self.valid_press()
        return b

    # -------------------------------------------------------------- dispatch
    def make(self):
        cat = self.categories[self.index % len(self.categories)]
        return getattr(self, "g_" + cat)()

    # -------------------------------------------------------------- categories
    def g_truncated_json(self):
        r = self.rng
        ep = r.choice(["chat", "chat", "completions", "contexts"])
        body = dump_json(self.valid_body(ep), r)
        if r.random() < 0.3:  # a wrapper that makes more cut points interesting
            body = dump_json({"messages": [{"role": "user", "content": "x \\\" \u00e9 \U0001f600"}],
                              "max_tokens": 2, "stop": ["a", "b"], "kv_press": {"press": "snapkv",
                              "ratio": 0.5, "args": {"window_size": 4}}}, r) if ep == "chat" else body
        cut = r.randrange(0, len(body))
        return self.gen_case("truncated_json", "%s cut %d/%d" % (ep, cut, len(body)), ep, body[:cut],
                             must_error=True)

    def g_huge_numbers(self):
        r = self.rng
        ep = r.choice(["chat", "chat", "completions", "contexts"])
        body = self.valid_body(ep, extras=False)
        if ep == "contexts":
            fields = [(("kv_press", "ratio"), "ratio"), (("kv_press", "args", "window_size"), "arg"),
                      (("text",), "text")]
        else:
            fields = [(("max_tokens",), "max_tokens"), (("temperature",), "temperature"),
                      (("top_p",), "top_p"), (("top_k",), "top_k"), (("seed",), "seed"),
                      (("kv_press", "ratio"), "ratio"), (("kv_press", "args", "window_size"), "arg"),
                      (("kv_press", "args", "n_sink"), "arg"), (("n",), "n"),
                      (("presence_penalty",), "penalty"), (("model",), "model"), (("stream",), "stream")]
            if ep == "chat":
                fields += [(("messages", -1, "content"), "content"), (("max_completion_tokens",), "max_tokens")]
            else:
                fields += [(("prompt",), "prompt")]
        path, kind = r.choice(fields)
        if r.random() < 0.2:
            tok, val = r.choice(BAD_NUM_TOKENS), None
        else:
            tok, val = r.choice(NUM_TOKENS)
        if path[0] == "kv_press":
            press = "snapkv" if path[-1] != "n_sink" else "streaming_llm"
            body["kv_press"] = {"press": press, "ratio": 0.5}
        if path == ("temperature",) and r.random() < 0.5:
            body["seed"] = 7
        set_path(body, list(path), Raw(tok))
        must = num_must_error(kind, val)
        if kind == "arg" and val is None:
            must = True
        if kind == "arg" and isinstance(val, float) and not math.isfinite(val):
            must = True
        return self.gen_case("huge_numbers", "%s %s=%s" % (ep, path_name(path), short(tok, 40)), ep,
                             dump_json(body, r), must_error=must)

    def deep(self, depth, kind):
        if kind == "array":
            return b"[" * depth + b"]" * depth
        if kind == "object":
            return b'{"a":' * depth + b"1" + b"}" * depth
        if kind == "mixed":
            return b'[{"a":' * (depth // 2) + b"null" + b"}]" * (depth // 2)
        if kind == "unclosed_array":
            return b"[" * depth
        if kind == "unclosed_object":
            return b'{"a":' * depth
        if kind == "closers":
            return b"]" * depth
        raise ValueError(kind)

    def g_deep_nesting(self):
        r = self.rng
        kind = r.choice(["array", "object", "mixed", "unclosed_array", "unclosed_object", "closers"])
        per_level = {"array": 2, "object": 6, "mixed": 7, "unclosed_array": 1, "unclosed_object": 5,
                     "closers": 1}[kind]
        depth = int(10 ** r.uniform(1, 5))
        depth = max(2, min(depth, (self.cfg.max_body - 2048) // per_level))
        nest = self.deep(depth, kind)
        ep = r.choice(["chat", "chat", "completions", "contexts"])
        places = ["body", "body", "unknown_field"]
        if ep == "chat":
            places += ["messages", "content", "message", "stop", "kv_press", "kv_press.args",
                       "stream_options", "model"]
        elif ep == "completions":
            places += ["prompt", "stop", "kv_press.args", "max_tokens"]
        else:
            places += ["text", "messages", "kv_press", "kv_press.args"]
        place = r.choice(places)
        if place == "body":
            data = nest
        else:
            body = self.valid_body(ep, extras=False)
            path = {"unknown_field": ["deep"], "messages": ["messages"], "content": ["messages", -1, "content"],
                    "message": ["messages", -1], "stop": ["stop"], "kv_press": ["kv_press"],
                    "kv_press.args": ["kv_press", "args"], "stream_options": ["stream_options"],
                    "model": ["model"], "prompt": ["prompt"], "max_tokens": ["max_tokens"],
                    "text": ["text"]}[place]
            if place == "kv_press.args":
                body["kv_press"] = {"press": "snapkv", "ratio": 0.5}
            if ep == "contexts" and place == "messages":
                body.pop("text", None)
            set_path(body, path, Raw(nest))
            data = dump_json(body, r)
        return self.gen_case("deep_nesting", "%s %s %s depth %d" % (ep, place, kind, depth), ep, data,
                             must_error=True, allow_reset=len(data) > self.cfg.max_body)

    WRONG = {
        "str": [1, 1.5, True, False, [], {}, ["a"], {"a": "b"}, 0],
        "content": [1, 1.5, True, {}, {"type": "text", "text": "hi"}, [1], ["hi"], [{"type": "image_url"}],
                    [{"type": "text"}], [{"type": "text", "text": 5}], [None]],
        "prompt": [1, 1.5, True, {}, [], [1, 2, 3], [None], ["a", "b"], {"text": "hi"}, [[]]],
        "int": ["1", "abc", True, 1.5, [], {}, [1], "", "0x10"],
        "num": ["0.5", True, [], {}, [0.5], "", "NaN"],
        "bool": ["true", 1, 0, [], {}, "false", "yes"],
        "obj": ["x", 1, [], True, [{"press": "snapkv"}], 0.5],
        "list": ["hello", 1, {}, True, {"role": "user", "content": "hi"}, [[]], [1], ["hi"]],
        "stop": [1, True, {}, {"a": "b"}, [1], [None], [[]], [{}], 1.5],
        "argval": [[], {}, None, [1], {"a": 1}, [[]]],
    }

    def fields_for(self, ep):
        # (path, class, required, needs)
        common = [(("model",), "str", False), (("max_tokens",), "int", False), (("stop",), "stop", False),
                  (("temperature",), "num", False), (("top_p",), "num", False), (("top_k",), "int", False),
                  (("seed",), "int", False), (("stream",), "bool", False), (("stream_options",), "obj", False),
                  (("stream_options", "include_usage"), "bool", False), (("kv_press",), "obj", False),
                  (("kv_press", "press"), "str", True), (("kv_press", "ratio"), "num", False),
                  (("kv_press", "args"), "obj", False), (("kv_press", "args", "window_size"), "argval", False),
                  (("context_id",), "str", False), (("user",), "str", False), (("n",), "int", False),
                  (("logprobs",), "bool", False)]
        if ep == "chat":
            return common + [(("messages",), "list", True), (("messages", -1), "obj", True),
                             (("messages", -1, "role"), "str", True), (("messages", -1, "content"), "content", True),
                             (("max_completion_tokens",), "int", False)]
        if ep == "completions":
            return common + [(("prompt",), "prompt", True), (("echo",), "bool", False)]
        return [(("text",), "str", True), (("model",), "str", False), (("messages",), "list", True),
                (("messages", -1, "content"), "content", True), (("messages", -1, "role"), "str", True),
                (("kv_press",), "obj", False), (("kv_press", "press"), "str", True),
                (("kv_press", "ratio"), "num", False), (("kv_press", "args"), "obj", False),
                (("kv_press", "args", "window_size"), "argval", False)]

    def g_wrong_types(self):
        r = self.rng
        ep = r.choice(["chat", "chat", "completions", "contexts"])
        body = self.valid_body(ep, extras=False)
        if r.random() < 0.55:
            path, cls, required = r.choice(self.fields_for(ep))
            if ep == "contexts" and path[0] == "messages":
                body.pop("text", None)
                body["messages"] = self.valid_messages()
            elif ep == "contexts" and path[0] == "text":
                body.pop("messages", None)
                body["text"] = r.choice(CONTEXT_TEXTS)
            if path[0] == "kv_press" and len(path) > 1:
                body["kv_press"] = {"press": "snapkv", "ratio": 0.5}
            if path[0] == "stream_options" and len(path) > 1:
                body["stream"] = True
                body["stream_options"] = {"include_usage": True}
            values = list(self.WRONG[cls])
            if not required and r.random() < 0.12:
                values = [None]
            v = r.choice(values)
            must = not (v is None and not required)
            if path == ("kv_press",) and v is None:
                must = False
            set_path(body, list(path), v)
            variant = "%s %s=%s" % (ep, path_name(path), short(json.dumps(v), 40))
            stream = body.get("stream") is True
            return self.gen_case("wrong_types", variant, ep, dump_json(body, r), must_error=must, stream=stream)
        # Semantic wrongs: values of the right type that are out of range or unknown.
        sem = []
        if ep != "contexts":
            sem += [("max_tokens=0", ["max_tokens"], 0, True), ("max_tokens=-1", ["max_tokens"], -1, True),
                    ("temperature=-1", ["temperature"], -1, True), ("top_p=1.5", ["top_p"], 1.5, True),
                    ("top_p=-0.1", ["top_p"], -0.1, True), ("top_k=-1", ["top_k"], -1, True),
                    ("stop=5 strings", ["stop"], ["a", "b", "c", "d", "e"], False),
                    ("stop=''", ["stop"], "", False), ("stop=10KiB", ["stop"], "x" * 10240, False),
                    ("stop=[]", ["stop"], [], False),
                    ("n=2", ["n"], 2, False), ("logprobs=true", ["logprobs"], True, False),
                    ("stream_options unknown", ["stream_options"], {"bogus": True}, False),
                    ("context_id+kv_press", ["context_id"], "ctx-" + "0" * 24, True),
                    ("presence_penalty=1", ["presence_penalty"], 1, False)]
        sem += [("ratio=-0.1", ["kv_press", "ratio"], -0.1, True), ("ratio=1.0", ["kv_press", "ratio"], 1.0, True),
                ("ratio=1.5", ["kv_press", "ratio"], 1.5, True), ("ratio=100", ["kv_press", "ratio"], 100, True),
                ("ratio=0.999999", ["kv_press", "ratio"], 0.999999, False),
                ("ratio=0", ["kv_press", "ratio"], 0, False),
                ("unknown press", ["kv_press", "press"], r.choice(UNKNOWN_PRESSES), True),
                ("other press", ["kv_press", "press"], r.choice(OTHER_PRESSES), False),
                ("unknown press arg", ["kv_press", "args"], r.choice(
                    [{"bogus": 1}, {"": 1}, {"window_size=3": 1}, {"a" * 1000: 1}, {"WINDOW_SIZE": 4},
                     {"k%d" % i: i for i in range(17)}, {"window_size": 4, "bogus": "x"}]), True),
                ("bad press arg value", ["kv_press", "args"], r.choice(
                    [{"window_size": "abc"}, {"window_size": -1}, {"window_size": 0}, {"window_size": 2 ** 62},
                     {"window_size": "4 "}, {"window_size": "0x10"}, {"window_size": True},
                     {"window_size": 1.5}, {"window_size": ""}]), False),
                ("wrapper press args", ["kv_press"], r.choice(
                    [{"press": "chunk", "args": {"press": "chunk"}}, {"press": "composed", "args": {"presses": "composed"}},
                     {"press": "composed", "args": {"presses": "knorm,composed"}},
                     {"press": "key_rerotation", "args": {"press": "key_rerotation"}},
                     {"press": "per_layer", "args": {"press": "knorm", "compression_ratios": "0.5"}},
                     {"press": "per_layer", "args": {"press": "knorm", "compression_ratios": ",,,"}},
                     {"press": "chunk", "args": {"press": "", "chunk_length": 0}},
                     {"press": "criticalkv", "args": {"press": "nonexistent"}},
                     {"press": "chunkkv", "args": {"press": "snapkv", "chunk_length": -5}}]), True),
                ("qfilter file", ["kv_press"], {"press": "qfilter", "ratio": 0.5, "args": {"filters": r.choice(
                    ["/etc/passwd", "/nonexistent", "/dev/zero", "/proc/self/environ", "/", "", "../../etc/shadow"])}}, True),
                ("kv_press unknown field", ["kv_press", "bogus"], 1, True),
                ("kv_press no press", ["kv_press"], {"ratio": 0.5}, True),
                ("unknown top-level field", [r.choice(["bogus", "foo", "Messages", "max_tokens ", "tools",
                                                       "kv-press", "\u00e9", ""])], 1, True)]
        if ep == "chat":
            sem += [("messages=[]", ["messages"], [], True),
                    ("role=wizard", ["messages", -1, "role"], "wizard", False),
                    ("role missing", ["messages", -1], {"content": "hi"}, True),
                    ("content missing", ["messages", -1], {"role": "user"}, True),
                    ("content=null", ["messages", -1, "content"], None, True),
                    ("content=[]", ["messages", -1, "content"], [], False),
                    ("content parts", ["messages", -1, "content"], [{"type": "text", "text": "Say hi."}], False),
                    ("last is assistant", ["messages"], [{"role": "user", "content": "a"},
                                                         {"role": "assistant", "content": "b"}], False),
                    ("300 messages", ["messages"], [{"role": "user", "content": "hi"}] * 300, False),
                    ("context_id+2 messages", ["messages"], [{"role": "user", "content": "a"},
                                                             {"role": "user", "content": "b"}], True),
                    ("message extra field", ["messages", -1, "bogus"], 1, False)]
        elif ep == "completions":
            sem += [("prompt=''", ["prompt"], "", False), ("prompt=[]", ["prompt"], [], True),
                    ("prompt=['a']", ["prompt"], ["Say hi."], False),
                    ("prompt tokens", ["prompt"], [1, 2, 3], True)]
        else:
            sem += [("neither text nor messages", ["text"], None, True), ("text=''", ["text"], "", False),
                    ("text and messages", ["messages"], [{"role": "user", "content": "hi"}], False),
                    ("unknown field", ["bogus"], 1, True)]
        name, path, v, must = r.choice(sem)
        if path[0] == "kv_press" and len(path) > 1:
            body["kv_press"] = {"press": "snapkv", "ratio": 0.5}
        if ep == "contexts" and name in ("neither text nor messages",):
            body.pop("messages", None)
        if ep == "contexts" and name in ("text and messages", "text=''"):
            body["text"] = "" if name == "text=''" else r.choice(CONTEXT_TEXTS)
        if name == "context_id+kv_press":
            body["kv_press"] = {"press": "snapkv", "ratio": 0.5}
        if name == "context_id+2 messages":
            body["context_id"] = "ctx-" + "0" * 24
        if name == "unknown top-level field" and path[0] == "" and ep == "contexts":
            pass
        if name == "qfilter file" and body.get("kv_press") is None:
            pass
        if name == "stream_options unknown":
            body["stream"] = True
        set_path(body, list(path), v)
        stream = body.get("stream") is True
        return self.gen_case("wrong_types", "%s %s" % (ep, name), ep, dump_json(body, r), must_error=must,
                             stream=stream)

    def g_invalid_utf8(self):
        r = self.rng
        ep = r.choice(["chat", "chat", "completions", "contexts"])
        body = self.valid_body(ep, extras=False)
        kind = r.choice(["in_string", "in_string", "in_string", "in_key", "odd_escape", "valid_unicode",
                         "raw_body", "bom", "utf16_body", "in_path", "in_header", "in_press_name",
                         "in_context_id_path"])
        bad = r.choice(BAD_UTF8)
        if kind in ("in_string", "odd_escape", "valid_unicode"):
            if ep == "chat":
                fields = [["messages", -1, "content"], ["messages", -1, "content"], ["messages", -1, "role"],
                          ["model"], ["stop"], ["context_id"], ["user"]]
            elif ep == "completions":
                fields = [["prompt"], ["prompt"], ["model"], ["stop"], ["context_id"]]
            else:
                fields = [["text"], ["model"]] if "text" in body else [["messages", -1, "content"], ["model"]]
            path = r.choice(fields)
            pre = r.choice([b"", b"Say ", b"abc"])
            post = r.choice([b"", b" hi", b"x"])
            if kind == "in_string":
                tok = b'"' + pre + bad + post + b'"'
                must = True
            elif kind == "odd_escape":
                tok = b'"' + pre + r.choice(ODD_ESCAPES) + post + b'"'
                must = path[-1] in ("context_id",)
            else:
                s = r.choice(VALID_UNICODE)
                tok = json.dumps(s, ensure_ascii=r.random() < 0.5).encode("utf-8")
                must = path[-1] in ("context_id", "role")
            if path[-1] == "role":
                must = True
            set_path(body, path, Raw(tok))
            data = self.req("POST", PATHS[ep], dump_json(body, r))
            variant = "%s %s %s %s" % (ep, kind, path_name(path), short(tok, 40))
            if path[-1] == "stop" and kind == "valid_unicode":
                must = False
            return self.case("invalid_utf8", variant, data, allow_2xx=not must,
                             expect200={"chat": "chat", "completions": "completion", "contexts": "context"}[ep])
        if kind == "in_key":
            body[Raw(b'"' + r.choice([b"", b"max_tokens", b"k"]) + bad + b'"')] = 1
            data = self.req("POST", PATHS[ep], dump_json(body, r))
            return self.case("invalid_utf8", "%s key %r" % (ep, bad), data)
        if kind == "in_press_name":
            body["kv_press"] = {"press": Raw(b'"snap' + bad + b'kv"'), "ratio": 0.5}
            data = self.req("POST", PATHS[ep], dump_json(body, r))
            return self.case("invalid_utf8", "%s press name %r" % (ep, bad), data)
        if kind == "raw_body":
            n = r.randint(1, 2000)
            raw = bytes(r.randrange(256) for _ in range(n))
            raw = raw[: n // 2] + bad + raw[n // 2:]
            if r.random() < 0.5:
                raw = b'{"messages":[{"role":"user","content":"' + raw + b'"}]}'
            data = self.req("POST", PATHS[ep], raw)
            return self.case("invalid_utf8", "%s raw body %d bytes" % (ep, len(raw)), data)
        if kind == "bom":
            bom = r.choice([b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b"\xff\xfe", b"\xef\xbb"])
            data = self.req("POST", PATHS[ep], bom + dump_json(body, r))
            return self.case("invalid_utf8", "%s bom %r" % (ep, bom), data,
                             allow_2xx=bom == b"\xef\xbb\xbf",
                             expect200={"chat": "chat", "completions": "completion", "contexts": "context"}[ep])
        if kind == "utf16_body":
            enc = r.choice(["utf-16", "utf-16-le", "utf-32"])
            text = json.dumps(body).encode(enc)
            data = self.req("POST", PATHS[ep], text)
            return self.case("invalid_utf8", "%s body in %s" % (ep, enc), data)
        if kind == "in_path":
            path = r.choice([b"/v1/chat/completions" + bad, b"/v1/" + bad, b"/" + bad,
                             b"/v1/chat/completions?q=" + bad, b"/health" + bad])
            data = self.req(r.choice(["GET", "POST"]), path, dump_json(body, r))
            return self.case("invalid_utf8", "path %r" % path, data, allow_2xx=b"?" in path,
                             expect200="chat")
        if kind == "in_header":
            h = r.choice([b"X-Bad: " + bad, b"User-Agent: " + bad * 10, b"X-" + bad + b": 1",
                          b"Content-Type: application/json; charset=" + bad])
            data = self.req("POST", PATHS[ep], dump_json(body, r), headers=[h])
            # A header value may carry obs-text bytes; a bad header *name* is a malformed request.
            return self.case("invalid_utf8", "%s header %r" % (ep, h[:30]), data,
                             allow_2xx=not h.startswith(b"X-" + bad),
                             expect200={"chat": "chat", "completions": "completion", "contexts": "context"}[ep])
        # in_context_id_path
        cid = b"ctx-" + bad + b"0" * 20
        method = r.choice(["GET", "DELETE"])
        return self.case("invalid_utf8", "%s /v1/contexts/%r" % (method, cid),
                         self.req(method, b"/v1/contexts/" + cid))

    def filler_body(self, size, valid_json=True):
        """A JSON chat body of about `size` bytes (words, so a tokenizer has no pathological run)."""
        head = b'{"messages":[{"role":"user","content":"'
        tail = b'"}],"max_tokens":1}'
        n = max(0, size - len(head) - len(tail))
        words = (b"hello world " * (n // 12 + 1))[:n]
        return head + words + tail if valid_json else words

    def g_oversized_body(self):
        r = self.rng
        lim = self.cfg.max_body
        ep = r.choice(["chat", "completions", "contexts"])
        path = PATHS[ep]
        variant = r.choices(["honest", "honest_garbage", "claims_small", "claims_limit", "claims_huge_sends_some",
                             "claims_over_sends_little", "expect_continue", "long_prompt_below_limit"],
                            weights=[5, 2, 3, 3, 2, 2, 1, 1])[0]
        k = r.randint(1, 4096)
        if variant == "honest":
            body = self.filler_body(lim + k)
            data = self.req("POST", path, body)
            return self.case("oversized_body", "%s honest %d" % (ep, len(body)), data, allow_reset=True)
        if variant == "honest_garbage":
            body = bytes(r.randrange(32, 127) for _ in range(64)) * ((lim + k) // 64 + 1)
            data = self.req("POST", path, body)
            return self.case("oversized_body", "%s honest garbage %d" % (ep, len(body)), data, allow_reset=True)
        if variant == "claims_small":
            body = self.filler_body(lim + k)
            cl = r.choice([0, 1, 10, 100, 1000])
            data = self.req("POST", path, body, cl=cl)
            return self.case("oversized_body", "%s CL %d sends %d" % (ep, cl, len(body)), data,
                             allow_reset=True, allow_close=True)
        if variant == "claims_limit":
            body = self.filler_body(lim + k)
            data = self.req("POST", path, body, cl=lim)
            return self.case("oversized_body", "%s CL %d (limit) sends %d" % (ep, lim, len(body)), data,
                             allow_reset=True, allow_close=True)
        if variant == "claims_huge_sends_some":
            cl = r.choice([lim + 1, 2 * lim, 10 ** 9, 2 ** 31, 2 ** 32 + 5, 2 ** 63 - 1])
            body = self.filler_body(min(lim + k, cl - 1))
            data = self.req("POST", path, body, cl=cl)
            return self.case("oversized_body", "%s CL %d sends %d" % (ep, cl, len(body)), data,
                             allow_reset=True, allow_close=True, half_close=True)
        if variant == "claims_over_sends_little":
            cl = lim + r.randint(1, 10)
            body = self.filler_body(0)[:r.randint(0, 30)]
            data = self.req("POST", path, body, cl=cl)
            return self.case("oversized_body", "%s CL %d sends %d" % (ep, cl, len(body)), data,
                             allow_reset=True, allow_close=True, half_close=True)
        if variant == "expect_continue":
            body = self.filler_body(lim + k)
            data = self.req("POST", path, body, headers=["Expect: 100-continue"])
            return self.case("oversized_body", "%s Expect: 100-continue %d" % (ep, len(body)), data,
                             allow_reset=True)
        # A valid request just below the limit whose prompt is far longer than any context.
        body = self.filler_body(lim - r.randint(100, 4000))
        return self.gen_case("oversized_body", "%s long prompt below limit %d" % ("chat", len(body)), "chat",
                             body, must_error=True)

    def g_bad_method(self):
        r = self.rng
        combos = [("PUT", "/v1/chat/completions", True, False), ("DELETE", "/v1/chat/completions", True, False),
                  ("PATCH", "/v1/chat/completions", True, False), ("GET", "/v1/chat/completions", False, False),
                  ("PUT", "/v1/completions", True, False), ("DELETE", "/v1/completions", False, False),
                  ("GET", "/v1/completions", False, False), ("PUT", "/v1/contexts", True, False),
                  ("DELETE", "/v1/contexts", False, False), ("PATCH", "/v1/contexts/ctx-" + "0" * 24, True, False),
                  ("POST", "/health", True, False), ("PUT", "/health", False, False),
                  ("POST", "/v1/models", True, False), ("DELETE", "/v1/models", False, False),
                  ("POST", "/metrics", True, False), ("TRACE", "/v1/chat/completions", False, False),
                  ("CONNECT", "127.0.0.1:80", False, False), ("FOO", "/v1/chat/completions", True, False),
                  ("P0ST", "/v1/chat/completions", True, False), ("G" * 10000, "/health", False, False),
                  ("GET\x00", "/health", False, False), ("PRI", "*", False, False),
                  ("OPTIONS", "/v1/chat/completions", False, True), ("OPTIONS", "*", False, True),
                  ("HEAD", "/health", False, True), ("HEAD", "/v1/models", False, True),
                  ("HEAD", "/v1/chat/completions", False, False), ("HEAD", "/nonexistent", False, False),
                  ("post", "/v1/chat/completions", True, True), ("Post", "/v1/chat/completions", True, True),
                  ("GET", "/health", True, True),
                  # RFC 9112 section 3: a recipient may split the request line on any whitespace.
                  ("POST ", "/v1/chat/completions", True, True)]
        method, path, with_body, ok2xx = r.choice(combos)
        body = dump_json(self.valid_body("chat", extras=False), r) if with_body else b""
        head = method == "HEAD"
        exp = "chat" if "completions" in path and method.upper() == "POST" else "any"
        if path in ("/health",) and method == "GET":
            exp = "health"
        if method == "PRI":
            data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            return self.case("bad_method", "PRI (HTTP/2 preface)", data, allow_close=True)
        data = self.req(method, path, body)
        return self.case("bad_method", "%s %s%s" % (short(method, 20), path, " +body" if body else ""), data,
                         allow_2xx=ok2xx, head=head, expect200=exp,
                         allow_reset=len(method) > 1000 or bool(body), allow_close=len(method) > 1000)

    def g_unknown_path(self):
        r = self.rng
        # (path, allow_2xx, method)
        paths = [("/", False), ("/v1", False), ("/v1/", False), ("/v1/chat", False),
                 ("/v1/chat/completions/", True), ("/v1/chat/completionsX", False),
                 ("/V1/CHAT/COMPLETIONS", False), ("//v1/chat/completions", True),
                 ("/v1/chat/completions?x=1", True), ("/v1/chat/completions?" + "a=b&" * 500, True),
                 ("/v1/chat/completions#frag", True), ("/v1/chat/%63ompletions", True),
                 ("/v1/chatcompletions", False), ("/v2/chat/completions", False), ("/v1/embeddings", False),
                 ("/v1/models/x", False), ("/v1/models/../models", True), ("/v1/contexts/x/y", False),
                 ("/../../../etc/passwd", False), ("/v1/../health", True), ("/%2e%2e/%2e%2e/etc/passwd", False),
                 ("/%00", False), ("/%", False), ("/%zz", False), ("/%ff%fe", False), ("/\x7f", False),
                 ("/health\x00", False), ("/" + "a" * 2048, False), ("/" + "a/" * 4096, False),
                 ("/v1/" + "x" * 65536, False), ("*", False), ("health", False),
                 ("http://127.0.0.1/health", True), ("/health/", True), ("/healthz", False),
                 ("/metricsX", False), ("/v1/contexts/", True), ("/health?x=1", True),
                 ("/health;x", False), ("/v1/completions/../chat/completions", True), ("", False),
                 ("/v1/contexts/ctx-" + "0" * 24 + "/extra", False), ("/\\v1\\chat\\completions", False),
                 ("/v1/chat/completions%00", False), ("/v1/chat/completions%2F", False),
                 ("/.env", False), ("/admin", False), ("/v1/models?x", True)]
        path, ok2xx = r.choice(paths)
        method = r.choice(["GET", "POST"])
        body = b""
        exp = "any"
        if method == "POST":
            body = dump_json(self.valid_body("chat", extras=False), r)
            exp = "chat" if "chat" in path and "completions" in path.lower() else "any"
        elif "health" in path:
            exp = "health"
        if method == "GET" and "completions" in path:
            ok2xx = False  # a GET of a POST endpoint is never an answer
        data = self.req(method, path, body)
        big = len(path) > 16384
        return self.case("unknown_path", "%s %s" % (method, short(path, 60)), data, allow_2xx=ok2xx,
                         expect200=exp, allow_reset=big, allow_close=big)

    def g_bad_content_length(self):
        r = self.rng
        ep = r.choice(["chat", "completions", "contexts"])
        path = PATHS[ep]
        body = dump_json(self.valid_body(ep, extras=False), r)
        n = len(body)
        variants = ["missing", "negative", "alpha", "empty", "space", "plus", "hex", "float", "exp",
                    "huge", "overflow", "two_differ", "two_same", "list_same", "list_differ", "smaller",
                    "larger", "zero_with_body", "lowercase", "space_before_colon", "te_chunked",
                    "te_chunked_bad", "te_chunked_huge", "te_and_cl", "te_gzip", "te_identity",
                    "te_chunked_trailer_garbage", "cl_leading_zeros", "cl_tab", "cl_nul"]
        # A server may wait out its read timeout on these (a body it cannot size): rarer, so
        # that the run stays short.
        waits = {"missing", "negative", "empty", "space_before_colon", "huge", "overflow"}
        variant = r.choices(variants, weights=[1 if v in waits else 3 for v in variants])[0]
        exp = {"chat": "chat", "completions": "completion", "contexts": "context"}[ep]
        kw = {"expect200": exp}

        def h(cl_value, body_bytes=body, extra=(), **more):
            return self.req("POST", path, body_bytes, cl=cl_value, headers=list(extra), **more)

        if variant == "missing":
            return self.case("bad_content_length", ep + " missing CL", h(None),
                             allow_reset=True, **kw)
        if variant == "negative":
            return self.case("bad_content_length", ep + " CL -1", h("-1"), allow_reset=True, **kw)
        if variant == "alpha":
            return self.case("bad_content_length", ep + " CL abc", h("abc"), allow_reset=True, **kw)
        if variant == "empty":
            return self.case("bad_content_length", ep + " CL ''", h(""), allow_reset=True, **kw)
        if variant == "space":
            return self.case("bad_content_length", ep + " CL '1 0'", h("1 0"), allow_reset=True, **kw)
        if variant == "plus":
            return self.case("bad_content_length", ep + " CL +n", h("+%d" % n),
                             allow_reset=True, **kw)
        if variant == "hex":
            return self.case("bad_content_length", ep + " CL 0x..", h("0x%x" % n),
                             allow_reset=True, **kw)
        if variant == "float":
            return self.case("bad_content_length", ep + " CL n.0", h("%d.0" % n),
                             allow_reset=True, **kw)
        if variant == "exp":
            return self.case("bad_content_length", ep + " CL 1e3", h("1e3"),
                             allow_reset=True, **kw)
        if variant == "huge":
            v = r.choice(["99999999999999999999", str(2 ** 64), str(2 ** 64 + n), str(10 ** 30), str(2 ** 63)])
            return self.case("bad_content_length", ep + " CL " + v, h(v),
                             allow_reset=True, **kw)
        if variant == "overflow":
            v = str(2 ** 64 + n)  # wraps to n in a 64-bit parser that does not check overflow
            return self.case("bad_content_length", ep + " CL 2^64+n", h(v),
                             allow_reset=True, **kw)
        if variant == "two_differ":
            return self.case("bad_content_length", ep + " two CL differ",
                             h(n, extra=["Content-Length: %d" % (n + 5)]),
                             allow_reset=True, **kw)
        if variant == "two_same":
            return self.case("bad_content_length", ep + " two CL same", h(n, extra=["Content-Length: %d" % n]),
                             allow_2xx=True, **kw)
        if variant == "list_same":
            return self.case("bad_content_length", ep + " CL 'n, n'", h("%d, %d" % (n, n)), allow_2xx=True,
                             allow_reset=True, **kw)
        if variant == "list_differ":
            return self.case("bad_content_length", ep + " CL 'n, n+1'", h("%d, %d" % (n, n + 1)),
                             allow_reset=True, **kw)
        if variant == "smaller":
            c = r.randrange(1, n)
            return self.case("bad_content_length", ep + " CL %d < %d" % (c, n), h(c),
                             allow_reset=True, **kw)
        if variant == "larger":
            c = n + r.randint(1, 1000)
            return self.case("bad_content_length", ep + " CL %d > %d, EOF" % (c, n), h(c), half_close=True,
                             allow_reset=True, allow_close=True, **kw)
        if variant == "zero_with_body":
            return self.case("bad_content_length", ep + " CL 0 with body", h(0),
                             allow_reset=True, **kw)
        if variant == "lowercase":
            data = self.req("POST", path, body, cl=None, headers=["content-length: %d" % n])
            return self.case("bad_content_length", ep + " lowercase header", data, allow_2xx=True, **kw)
        if variant == "space_before_colon":
            data = self.req("POST", path, body, cl=None, headers=["Content-Length : %d" % n])
            return self.case("bad_content_length", ep + " 'Content-Length :'", data,
                             allow_reset=True, **kw)
        if variant == "cl_leading_zeros":
            return self.case("bad_content_length", ep + " CL 000n", h("000%d" % n), allow_2xx=True,
                             allow_reset=True, **kw)
        if variant == "cl_tab":
            return self.case("bad_content_length", ep + " CL '\\tn\\t'", h("\t%d\t" % n), allow_2xx=True,
                             allow_reset=True, **kw)
        if variant == "cl_nul":
            # cpp-httplib 0.11 ends a header value at a NUL byte, so the server never sees what
            # follows and reads n: a known limit (docs/server.md), not a crash or a misframing.
            return self.case("bad_content_length", ep + " CL 'n\\0'", h("%d\x00" % n),
                             allow_2xx=True, allow_reset=True, **kw)
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (n, body)
        if variant == "te_chunked":
            data = self.req("POST", path, chunked, cl=None, headers=["Transfer-Encoding: chunked"])
            return self.case("bad_content_length", ep + " TE chunked", data, allow_2xx=True,
                             allow_reset=True, **kw)
        if variant == "te_chunked_bad":
            bad = r.choice([b"zz\r\n" + body + b"\r\n0\r\n\r\n", b"-1\r\n" + body + b"\r\n0\r\n\r\n",
                            b"%x\r\n%s" % (n + 100, body), b"%x\r\n%sXX0\r\n\r\n" % (n, body),
                            b"%x;ext=\xff\r\n%s\r\n0\r\n\r\n" % (n, body), b"\r\n\r\n"])
            data = self.req("POST", path, bad, cl=None, headers=["Transfer-Encoding: chunked"])
            return self.case("bad_content_length", ep + " TE chunked malformed", data, half_close=True,
                             allow_reset=True, allow_close=True, **kw)
        if variant == "te_chunked_huge":
            bad = r.choice([b"ffffffffffffffffffff\r\n", b"7fffffffffffffff\r\nab", b"10000000000000001\r\nabc"])
            data = self.req("POST", path, bad, cl=None, headers=["Transfer-Encoding: chunked"])
            return self.case("bad_content_length", ep + " TE chunked huge size", data, half_close=True,
                             allow_reset=True, allow_close=True, **kw)
        if variant == "te_and_cl":
            data = self.req("POST", path, chunked, cl=n, headers=["Transfer-Encoding: chunked"])
            # RFC 9112 section 6.1: a server may reject this, or use Transfer-Encoding alone.
            return self.case("bad_content_length", ep + " TE chunked + CL", data, allow_2xx=True,
                             allow_reset=True, **kw)
        if variant == "te_gzip":
            data = self.req("POST", path, body, cl=n, headers=["Transfer-Encoding: gzip"])
            return self.case("bad_content_length", ep + " TE gzip", data, allow_reset=True,
                             **kw)
        if variant == "te_identity":
            data = self.req("POST", path, body, cl=None, headers=["Transfer-Encoding: identity"])
            return self.case("bad_content_length", ep + " TE identity", data, half_close=True,
                             allow_reset=True, allow_close=True, **kw)
        data = self.req("POST", path, b"%x\r\n%s\r\n0\r\nX-Trailer: \xff\r\nbad trailer\r\n\r\n" % (n, body),
                        cl=None, headers=["Transfer-Encoding: chunked"])
        return self.case("bad_content_length", ep + " TE chunked garbage trailer", data,
                         allow_reset=True, **kw)

    def g_garbage_request(self):
        r = self.rng
        hh = b"Host: " + B(self.cfg.host_header) + b"\r\n"
        auth = (b"Authorization: Bearer " + B(self.cfg.api_key) + b"\r\n") if self.cfg.api_key else b""
        cc = b"Connection: close\r\n"
        # (name, bytes, allow_2xx, allow_close) ; every one is half-closed after sending.
        items = [
            ("GARBAGE", b"GARBAGE\r\n\r\n", False, False),
            ("GET only", b"GET\r\n\r\n", False, False),
            ("HTTP/0.9", b"GET /\r\n\r\n", False, True),
            ("HTTP/9.9", b"GET /health HTTP/9.9\r\n" + hh + cc + b"\r\n", False, False),
            ("HTTP/2.0", b"GET /health HTTP/2.0\r\n" + hh + cc + b"\r\n", False, False),
            ("HTTP/1.1 extra", b"GET /health HTTP/1.1 extra\r\n" + hh + cc + b"\r\n", False, False),
            ("bad version", b"GET /health HTTQ/1.1\r\n" + hh + cc + b"\r\n", False, False),
            ("version 1.10", b"GET /health HTTP/1.10\r\n" + hh + cc + b"\r\n", False, False),
            ("double spaces", b"GET  /health  HTTP/1.1\r\n" + hh + cc + b"\r\n", True, False),
            ("tab separators", b"GET\t/health\tHTTP/1.1\r\n" + hh + cc + b"\r\n", True, False),
            ("lowercase get", b"get /health HTTP/1.1\r\n" + hh + cc + b"\r\n", True, False),
            ("HTTP/1.0", b"GET /health HTTP/1.0\r\n\r\n", True, False),
            # RFC 9112 section 3.2: a server MUST answer 400 to an HTTP/1.1 request without a Host
            # header or with more than one.
            ("no Host", b"GET /health HTTP/1.1\r\n" + cc + b"\r\n", False, False),
            ("two Hosts", b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n" + cc + b"\r\n", False, False),
            ("LF only", b"GET /health HTTP/1.1\nHost: x\nConnection: close\n\n", True, True),
            ("CR only", b"GET /health HTTP/1.1\rHost: x\r\r", False, True),
            ("empty lines", b"\r\n\r\n\r\n", False, True),
            ("leading CRLF", b"\r\nGET /health HTTP/1.1\r\n" + hh + cc + b"\r\n", True, False),
            ("header no colon", b"GET /health HTTP/1.1\r\n" + hh + b"NoColonHere\r\n" + cc + b"\r\n", True, False),
            # RFC 9112 section 5.1: whitespace between a field name and the colon MUST get a 400.
            ("header space before colon", b"GET /health HTTP/1.1\r\n" + hh + b"X-A : 1\r\n" + cc + b"\r\n", False, False),
            ("empty header name", b"GET /health HTTP/1.1\r\n" + hh + b": x\r\n" + cc + b"\r\n", True, False),
            ("obs-fold", b"GET /health HTTP/1.1\r\n" + hh + b"X-A: a\r\n b\r\n" + cc + b"\r\n", True, False),
            ("NUL in header value", b"GET /health HTTP/1.1\r\n" + hh + b"X-A: a\x00b\r\n" + cc + b"\r\n", True, False),
            ("NUL in header name", b"GET /health HTTP/1.1\r\n" + hh + b"X-\x00A: 1\r\n" + cc + b"\r\n", True, False),
            ("control chars", b"GET /health HTTP/1.1\r\n" + hh + b"X-A: \x01\x02\x1b[31m\r\n" + cc + b"\r\n", True, False),
            ("NUL in request line", b"GET /he\x00alth HTTP/1.1\r\n" + hh + cc + b"\r\n", False, False),
            ("absolute URI", b"GET http://evil.example/health HTTP/1.1\r\n" + hh + cc + b"\r\n", True, False),
            ("TLS ClientHello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\x00" * 40,
             False, True),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False, True),
            ("binary", bytes(r.randrange(256) for _ in range(r.randint(1, 4000))), False, True),
            ("binary + CRLFCRLF", bytes(r.randrange(256) for _ in range(r.randint(1, 4000))) + b"\r\n\r\n",
             False, True),
            ("request line no CRLF", b"GET /health HTTP/1.1", False, True),
            ("headers no end", b"GET /health HTTP/1.1\r\n" + hh + cc, True, True),
            ("long request line", b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n" + hh + cc + b"\r\n", False, True),
            ("pipelined garbage", b"GET /health HTTP/1.1\r\n" + hh + b"\r\nGARBAGE\r\n\r\n", True, False),
            ("POST no body no CL", b"POST /v1/chat/completions HTTP/1.1\r\n" + hh + auth + cc + b"\r\n", False, False),
            ("header line only spaces", b"GET /health HTTP/1.1\r\n" + hh + b"   \r\n" + cc + b"\r\n", True, False),
            ("upgrade websocket", b"GET /health HTTP/1.1\r\n" + hh + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", True, False),
            ("h2c upgrade", b"GET /health HTTP/1.1\r\n" + hh + b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
             b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", True, False),
            ("percent in method", b"G%45T /health HTTP/1.1\r\n" + hh + cc + b"\r\n", False, False),
            ("only spaces", b"   \r\n\r\n", False, True),
            ("format strings", b"%s%s%s%n %x%x%x HTTP/1.1\r\n" + hh + cc + b"\r\n", False, False),
        ]
        name, data, ok2xx, ok_close = r.choice(items)
        # Where the authorization matters, a request with a key but without the header is a 401:
        # that is an error response too, so nothing changes in the expectations.
        exp = "health" if b"/health" in data[:40] else "any"
        big = len(data) > 65536
        # Only an incomplete request is half-closed (the server sees EOF rather than waiting for
        # its read timeout): this server answers nothing at all to a half-closed connection.
        return self.case("garbage_request", name, data, allow_2xx=ok2xx, allow_close=ok_close or big,
                         allow_reset=big or ok_close, half_close=ok_close and not big, expect200=exp)

    def g_huge_headers(self):
        r = self.rng
        target = r.choice(["GET /health", "POST /v1/chat/completions"])
        method, path = target.split(" ")
        body = dump_json(self.valid_body("chat", extras=False), r) if method == "POST" else b""
        variant = r.choice(["one_value", "one_value", "many_headers", "huge_name", "same_name", "cookie",
                            "many_small_values"])
        size = r.choice([8 * 1024, 16 * 1024, 64 * 1024, 256 * 1024, self.cfg.max_body + 4096,
                         2 * self.cfg.max_body])
        if variant == "one_value":
            headers = [b"X-Big: " + b"a" * size]
        elif variant == "many_headers":
            cnt = size // 16
            headers = [b"X-H%d: v" % i for i in range(cnt)]
        elif variant == "huge_name":
            headers = [b"X-" + b"n" * size + b": 1"]
        elif variant == "same_name":
            cnt = size // 12
            headers = [b"X-Same: 1"] * cnt
        elif variant == "cookie":
            headers = [b"Cookie: " + b"; ".join(b"c%d=v" % i for i in range(size // 8))]
        else:
            headers = [b"Accept: " + b",".join([b"text/html"] * (size // 10))]
        data = self.req(method, path, body, headers=headers)
        big = size > 64 * 1024
        exp = "health" if method == "GET" else "chat"
        return self.case("huge_headers", "%s %s %d KiB" % (target, variant, size // 1024), data,
                         allow_2xx=True, allow_reset=big, allow_close=big, expect200=exp)

    def g_missing_context(self):
        r = self.rng
        if r.random() < 0.12:
            return self.case("missing_context", r.choice(["create_delete_use", "use_context", "race_delete"]),
                             b"", seq=True)
        ids = ["ctx-" + "".join(r.choice("0123456789abcdef") for _ in range(24)), "ctx-", "ctx-" + "0" * 23,
               "ctx-" + "g" * 24, "x", "ctx-" + "a" * 10000, "..", "ctx-%00", "ctx-" + "0" * 24 + "/x",
               "ctx-" + "F" * 24, "%2e%2e%2fhealth", "ctx-000000000000000000000000%00", " ", "ctx-" + "0" * 25,
               "ctx-\u00e9" + "0" * 22, "null", "0", "-1", "ctx-" + "0" * 24 + "?x=1", "ctx-" + "0" * 24 + "/"]
        cid = r.choice(ids)
        kind = r.choice(["GET", "DELETE", "chat", "chat", "completions"])
        if kind in ("GET", "DELETE"):
            enc = cid if r.random() < 0.7 else urllib.parse.quote(cid, safe="")
            data = self.req(kind, "/v1/contexts/" + enc)
            return self.case("missing_context", "%s /v1/contexts/%s" % (kind, short(enc, 40)), data,
                             allow_reset=len(cid) > 8000)
        ep = kind
        body = {"messages": [{"role": "user", "content": "What is it?"}], "max_tokens": 2} if ep == "chat" \
            else {"prompt": " Question:", "max_tokens": 2}
        body["context_id"] = cid
        if r.random() < 0.2:
            body["stream"] = True
        return self.gen_case("missing_context", "%s context_id=%s" % (ep, short(cid, 40)), ep, dump_json(body, r),
                             must_error=True, stream=body.get("stream") is True)

    def g_empty_body(self):
        r = self.rng
        ep = r.choice(["chat", "completions", "contexts"])
        path = PATHS[ep]
        # variant -> (body, req() options); the list keeps the variants' order for the draw.
        table = {"CL 0": (b"", {"cl": 0}), "no CL": (b"", {"cl": None}), "spaces": (b"     ", {}),
                 "CRLF": (b"\r\n", {}), "tab": (b"\t\n ", {}), "{}": (b"{}", {}),
                 "chunked empty": (b"0\r\n\r\n", {"cl": None, "headers": ["Transfer-Encoding: chunked"]}),
                 "no content-type": (b"", {"ctype": None, "cl": 0}),
                 "text/plain empty": (b"", {"ctype": "text/plain", "cl": 0}),
                 "{ }": (b"{ \n }", {}), "NUL": (b"\x00", {})}
        variants = list(table)
        variant = r.choices(variants, weights=[1 if v == "no CL" else 3 for v in variants])[0]
        body, options = table[variant]
        data = self.req("POST", path, body, **options)
        return self.case("empty_body", "%s %s" % (ep, variant), data,
                         allow_reset=variant == "chunked empty", allow_close=variant == "chunked empty")

    def g_non_object_json(self):
        r = self.rng
        ep = r.choice(["chat", "chat", "completions", "contexts"])
        valid = dump_json(self.valid_body(ep, extras=False), r)
        items = [("[]", b"[]", True), ("[1]", b"[1]", True), ("1", b"1", True), ("-1.5", b"-1.5", True),
                 ("string", b'"hello"', True), ("null", b"null", True), ("true", b"true", True),
                 ("false", b"false", True), ("1e999", b"1e999", True), ("[valid]", b"[" + valid + b"]", True),
                 ("valid as string", json.dumps(valid.decode("utf-8")).encode("utf-8"), True),
                 ("two objects", valid + b" " + valid, True), ("trailing garbage", valid + b" x", True),
                 ("trailing comma obj", valid[:-1] + b",}", True), ("comment", b"/* c */" + valid, True),
                 ("single quotes", valid.replace(b'"', b"'"), True), ("trailing NUL", valid + b"\x00", True),
                 ("trailing whitespace", valid + b"\n \t", False), ("leading whitespace", b" \n" + valid, False),
                 ("duplicate keys", valid[:-1] + b',"max_tokens":1}' if ep != "contexts" else valid, False),
                 ("unquoted keys", re.sub(rb'"([a-z_]+)"(\s*):', rb"\1\2:", valid), True),
                 ("object of arrays", b'{"messages":[[]]}', True), ("{}", b"{}", True),
                 ("NaN body", b"NaN", True), ("empty array of objects", b"[{}]", True),
                 ("ndjson", valid + b"\n" + valid + b"\n", True)]
        name, body, must = r.choice(items)
        return self.gen_case("non_object_json", "%s %s" % (ep, name), ep, body, must_error=must)

    def g_auth(self):
        r = self.rng
        key = self.cfg.api_key or "k"
        variants = [("missing", [], True), ("wrong", ["Authorization: Bearer wrong-" + key], True),
                    ("empty bearer", ["Authorization: Bearer "], True), ("no scheme", ["Authorization: " + key], True),
                    ("basic", ["Authorization: Basic dXNlcjpwYXNz"], True),
                    ("prefix of key", ["Authorization: Bearer " + key[:-1]], True),
                    ("key + suffix", ["Authorization: Bearer " + key + "x"], True),
                    ("huge", ["Authorization: Bearer " + "k" * 20000], True),
                    ("bad utf8", [b"Authorization: Bearer \xff\xfe" + B(key)], True),
                    # The value ends at the NUL in cpp-httplib 0.11 (see cl_nul): the key itself
                    # was sent, so this may pass; documented in docs/server.md.
                    ("NUL", [b"Authorization: Bearer " + B(key) + b"\x00x"], False),
                    ("lowercase scheme", ["Authorization: bearer " + key], False),
                    ("trailing space", ["Authorization: Bearer " + key + " "], False),
                    ("two headers", ["Authorization: Bearer wrong", "Authorization: Bearer " + key], False),
                    ("x-api-key", ["X-Api-Key: " + key], False)]
        name, headers, must = r.choice(variants)
        target = r.choice(["chat", "completions", "contexts", "models"])
        if target == "models":
            data = self.req("GET", "/v1/models", headers=headers, auth=False)
            exp = "json"
        else:
            data = self.req("POST", PATHS[target], dump_json(self.valid_body(target, extras=False), r),
                            headers=headers, auth=False)
            exp = {"chat": "chat", "completions": "completion", "contexts": "context"}[target]
        return self.case("auth", "%s %s" % (target, name), data, allow_2xx=not must, expect200=exp)


# ------------------------------------------------------------------------------------------
# HTTP over raw sockets

STATUS_RE = re.compile(rb"^HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?$")
TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class Outcome:
    """What came back: kind is response | reset | closed | timeout | connect_error | malformed |
    truncated."""

    __slots__ = ("kind", "status", "headers", "body", "note", "partial", "elapsed", "send_note")

    def __init__(self, kind, status=None, headers=None, body=b"", note="", partial=b""):
        self.kind, self.status, self.headers, self.body = kind, status, headers or [], body
        self.note, self.partial, self.elapsed, self.send_note = note, partial, 0.0, None

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def brief(self, n=240):
        if self.kind == "response":
            return "HTTP %s %s" % (self.status, short(self.body, n))
        s = self.kind
        if self.note:
            s += " (%s)" % self.note
        if self.partial:
            s += " after %s" % short(self.partial, n)
        return s


def decode_chunked(buf, pos):
    """('ok', body) | ('incomplete', None) | ('bad', reason)."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return ("incomplete", None) if len(buf) - pos < 1024 else ("bad", "chunk size line too long")
        line = bytes(buf[pos:eol]).split(b";")[0].strip()
        if not line or not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", line):
            return "bad", "bad chunk size %r" % line[:40]
        size = int(line, 16)
        pos = eol + 2
        if size == 0:
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return "incomplete", None
                if eol == pos:
                    return "ok", bytes(out)
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return "incomplete", None
        out += buf[pos:pos + size]
        if buf[pos + size:pos + size + 2] != b"\r\n":
            return "bad", "chunk not followed by CRLF"
        pos += size + 2


def parse_response(buf, head, eof):
    """An Outcome when buf holds a complete response (or is beyond repair), else None."""
    start = 0
    while True:
        end = buf.find(b"\r\n\r\n", start)
        if end < 0:
            if len(buf) - start >= 5 and bytes(buf[start:start + 5]) != b"HTTP/":
                return Outcome("malformed", note="not an HTTP response", partial=bytes(buf[:200]))
            if len(buf) - start > 65536:
                return Outcome("malformed", note="response headers over 64 KiB", partial=bytes(buf[:200]))
            return None
        lines = bytes(buf[start:end]).split(b"\r\n")
        m = STATUS_RE.match(lines[0])
        if not m:
            return Outcome("malformed", note="bad status line %r" % lines[0][:80], partial=bytes(buf[:200]))
        status = int(m.group(1))
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not TOKEN_RE.match(name):
                return Outcome("malformed", note="bad header line %r" % line[:80], partial=bytes(buf[:200]))
            headers.append((name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")))
        body_start = end + 4
        if 100 <= status < 200 and status != 101:
            start = body_start
            continue
        break
    cls = [v for n, v in headers if n == "content-length"]
    tes = [v for n, v in headers if n == "transfer-encoding"]
    if head or status in (204, 304) or status < 200:
        return Outcome("response", status, headers, b"")
    if tes:
        if tes[-1].lower().split(",")[-1].strip() != "chunked":
            return Outcome("malformed", note="Transfer-Encoding %r" % tes, partial=bytes(buf[:200]))
        if cls:
            return Outcome("malformed", note="both Content-Length and Transfer-Encoding", partial=bytes(buf[:200]))
        st, val = decode_chunked(buf, body_start)
        if st == "ok":
            return Outcome("response", status, headers, val)
        if st == "bad":
            return Outcome("malformed", note=val, partial=bytes(buf[:200]))
        return None
    if cls:
        if len(set(cls)) != 1 or not cls[0].isdigit():
            return Outcome("malformed", note="Content-Length %r" % cls, partial=bytes(buf[:200]))
        n = int(cls[0])
        if len(buf) - body_start >= n:
            return Outcome("response", status, headers, bytes(buf[body_start:body_start + n]))
        return None
    if eof:
        return Outcome("response", status, headers, bytes(buf[body_start:]))
    return None


MAX_RESPONSE = 8 << 20


def read_response(s, deadline, head):
    buf = bytearray()
    while True:
        res = parse_response(buf, head, eof=False)
        if res is not None:
            return res
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Outcome("timeout", partial=bytes(buf[:200]))
        s.settimeout(remaining)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return Outcome("timeout", partial=bytes(buf[:200]))
        except (ConnectionResetError, ConnectionAbortedError) as e:
            return Outcome("reset", note=type(e).__name__, partial=bytes(buf[:200]))
        except OSError as e:
            return Outcome("reset", note=str(e), partial=bytes(buf[:200]))
        if not chunk:
            if not buf:
                return Outcome("closed")
            res = parse_response(buf, head, eof=True)
            return res if res is not None else Outcome("truncated", note="closed mid-response",
                                                       partial=bytes(buf[:200]))
        buf += chunk
        if len(buf) > MAX_RESPONSE:
            return Outcome("malformed", note="response over 8 MiB", partial=bytes(buf[:200]))


def send_watching(s, data, deadline, stall_limit):
    """Sends data, stopping early when the server answers (or closes) first. None when all was
    sent, else why not."""
    view = memoryview(data)
    off = 0
    last = time.monotonic()
    while off < len(view):
        now = time.monotonic()
        if now >= deadline:
            return "send_timeout"
        if stall_limit is not None and now - last > stall_limit:
            return "send_stalled"
        try:
            rd, wr, _ = select.select([s], [s], [], min(0.5, deadline - now))
        except (OSError, ValueError) as e:
            return "select:%s" % e
        if rd:
            return "early_response"
        if wr:
            try:
                n = s.send(view[off:off + 262144])
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
                return "send_" + type(e).__name__
            except OSError as e:
                return "send_error:%s" % e
            off += n
            last = time.monotonic()
    return None


def exchange(cfg, data, *, timeout=None, half_close=False, head=False):
    timeout = cfg.response_timeout if timeout is None else timeout
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        s = socket.create_connection((cfg.host, cfg.port), timeout=min(timeout, 10.0))
    except OSError as e:
        out = Outcome("connect_error", note=str(e))
        out.elapsed = time.monotonic() - t0
        return out
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        note = send_watching(s, data, deadline, cfg.read_timeout + cfg.slow_grace)
        if half_close and note is None:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        out = read_response(s, deadline, head)
        out.send_note = note
    finally:
        s.close()
    out.elapsed = time.monotonic() - t0
    return out


def http_json(cfg, method, path, body=None, timeout=None):
    """A plain well-formed request; (outcome, parsed JSON or None)."""
    b = dump_json(body) if body is not None else b""
    lines = [B(method) + b" " + B(path) + b" HTTP/1.1", b"Host: " + B(cfg.host_header)]
    if cfg.api_key:
        lines.append(b"Authorization: Bearer " + B(cfg.api_key))
    if body is not None or method in ("POST", "PUT"):
        lines += [b"Content-Type: application/json", b"Content-Length: " + B(len(b))]
    lines.append(b"Connection: close")
    out = exchange(cfg, b"\r\n".join(lines) + b"\r\n\r\n" + b, timeout=timeout)
    obj = None
    if out.kind == "response":
        try:
            obj = json.loads(out.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            obj = None
    return out, obj


def list_contexts(cfg):
    """The ids GET /v1/contexts lists, or None when it does not answer a list."""
    out, obj = http_json(cfg, "GET", "/v1/contexts", timeout=30)
    if out.kind != "response" or out.status != 200 or not isinstance(obj, dict) \
            or not isinstance(obj.get("data"), list):
        return None
    return [x.get("id") for x in obj["data"] if isinstance(x, dict) and isinstance(x.get("id"), str)]


def health(cfg, timeout=None):
    """(alive, detail): GET /health answers 200 {"status": "ok"} (three tries)."""
    timeout = timeout if timeout is not None else cfg.read_timeout + cfg.slow_grace + 5
    detail = ""
    for attempt in range(3):
        out, obj = http_json(cfg, "GET", "/health", timeout=timeout)
        if out.kind == "response" and out.status == 200:
            if isinstance(obj, dict) and obj.get("status") == "ok":
                return True, "200 in %.2f s" % out.elapsed
            return False, "200 but body %s" % short(out.body, 100)
        detail = out.brief(100)
        if out.kind == "connect_error":
            time.sleep(0.5)
        elif out.kind == "response" and out.status == 503:
            time.sleep(1.0)
        else:
            time.sleep(0.2)
    return False, detail


# ------------------------------------------------------------------------------------------
# Checks


def check_error_body(out):
    """None, or (kind, detail) for a 4xx/5xx response."""
    body = out.body
    if not body.strip():
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return "error_body", "error body is not UTF-8 (%s)" % e
    try:
        obj = json.loads(text)
    except ValueError as e:
        return "error_body", "error body is not JSON (%s)" % e
    if not isinstance(obj, dict) or not isinstance(obj.get("error"), dict):
        return "error_body", "no 'error' object"
    e = obj["error"]
    if not isinstance(e.get("message"), str):
        return "error_body", "'error.message' is not a string"
    problems = []
    if not e["message"]:
        problems.append("empty message")
    if not isinstance(e.get("type"), str):
        problems.append("'type' is not a string")
    for k in ("param", "code"):
        if k not in e:
            problems.append("no '%s'" % k)
        elif e[k] is not None and not isinstance(e[k], str):
            problems.append("'%s' is %s" % (k, type(e[k]).__name__))
    if out.status == 503 and out.header("retry-after") is None:
        problems.append("503 without Retry-After")
    if problems:
        return "error_shape", "; ".join(problems)
    return None


def check_sse(body):
    """None or why a body is not a well-formed SSE stream of JSON chunks ending in [DONE]."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return "SSE stream is not UTF-8 (%s)" % e
    text = text.replace("\r\n", "\n")
    done = False
    chunks = 0
    had_error = False
    for line in text.split("\n"):
        if not line or line.startswith(":"):
            continue
        if line.startswith("data:"):
            payload = line[5:]
            if payload.startswith(" "):
                payload = payload[1:]
            if done:
                return "data after [DONE]"
            if payload == "[DONE]":
                done = True
                continue
            try:
                obj = json.loads(payload)
            except ValueError:
                return "SSE data is not JSON: %s" % short(payload, 80)
            if not isinstance(obj, dict):
                return "SSE data is not an object"
            if "error" in obj:
                had_error = True
            chunks += 1
        elif line.split(":", 1)[0] in ("event", "id", "retry"):
            continue
        else:
            return "bad SSE line %s" % short(line, 80)
    if not done and not had_error:
        return "SSE stream does not end with [DONE]"
    if chunks == 0 and not had_error:
        return "SSE stream has no chunk"
    return None


def check_2xx(case, out):
    if case.head or out.status in (204, 304):
        return None
    ctype = (out.header("content-type") or "").lower()
    if "text/event-stream" in ctype:
        return check_sse(out.body)
    if case.stream and case.expect200 in ("chat", "completion"):
        return "stream requested, got Content-Type %r" % ctype
    if case.expect200 in ("text", "any") and "json" not in ctype:
        return None
    try:
        obj = json.loads(out.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return "2xx body is not UTF-8 JSON (%s)" % e
    if not isinstance(obj, dict):
        return "2xx body is not an object"
    if case.expect200 == "chat":
        try:
            ch = obj["choices"][0]
            msg = ch["message"]
            if not isinstance(msg.get("content"), (str, type(None))):
                return "choices[0].message.content is not a string"
            if ch.get("finish_reason") not in ("stop", "length"):
                return "finish_reason %r" % ch.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            return "chat completion without choices[0].message"
    elif case.expect200 == "completion":
        try:
            ch = obj["choices"][0]
            if not isinstance(ch["text"], str):
                return "choices[0].text is not a string"
        except (KeyError, IndexError, TypeError):
            return "completion without choices[0].text"
    elif case.expect200 == "context":
        if not (isinstance(obj.get("id"), str) and obj["id"].startswith("ctx-")):
            if not isinstance(obj.get("data"), list):  # GET /v1/contexts (list)
                return "context answer without an id"
    elif case.expect200 == "health":
        if obj.get("status") != "ok":
            return "health answer %s" % short(out.body, 80)
    return None


def judge(case, out):
    """(status key, failure kind or None, detail)."""
    k = out.kind
    key = str(out.status) if k == "response" else k
    if k == "connect_error":
        return key, "connect_error", out.note
    if k == "timeout":
        return key, "no_response", "no complete response within %.0f s%s" % (
            out.elapsed, (" (got %s)" % short(out.partial, 80)) if out.partial else "")
    if k == "reset":
        return key, (None if case.allow_reset else "reset"), out.brief()
    if k == "closed":
        return key, (None if case.allow_close else "closed_without_response"), "closed, no byte"
    if k in ("malformed", "truncated"):
        return key, "malformed_response", out.brief()
    st = out.status
    if 200 <= st < 300:
        if not case.allow_2xx:
            return key, "accepted_invalid", "an invalid request got %d" % st
        why = check_2xx(case, out)
        return key, ("bad_2xx_body" if why else None), why or ""
    if 400 <= st < 600:
        r = check_error_body(out)
        if r:
            return key, r[0], r[1]
        return key, None, ""
    return key, "unexpected_status", "status %d" % st


# ------------------------------------------------------------------------------------------
# Sequences on real contexts (create, use, delete, use after delete; a delete racing a use)


def run_sequence(cfg, case, gen):
    """[(step Case, Outcome)] for a missing_context sequence case."""
    r = gen.rng
    steps = []

    def step(name, data, **kw):
        c = Case(case.index, case.category, case.variant, data, step=name, **kw)
        out = exchange(cfg, data, half_close=False)
        steps.append((c, out))
        return c, out

    body = {"text": r.choice(CONTEXT_TEXTS)}
    if r.random() < 0.5:
        body["kv_press"] = {"press": r.choice(["snapkv", "knorm", "streaming_llm"]), "ratio": 0.5}
    _, out = step("create", gen.req("POST", "/v1/contexts", dump_json(body)), allow_2xx=True, expect200="context")
    cid = None
    if out.kind == "response" and 200 <= out.status < 300:
        try:
            cid = json.loads(out.body.decode("utf-8")).get("id")
        except (ValueError, UnicodeDecodeError, AttributeError):
            cid = None
    if not isinstance(cid, str) or not cid:
        return steps
    q = {"messages": [{"role": "user", "content": "What is it about?"}], "max_tokens": 2, "context_id": cid}
    if case.variant == "use_context":
        step("chat", gen.req("POST", PATHS["chat"], dump_json(q)), allow_2xx=True, expect200="chat")
        step("completions", gen.req("POST", PATHS["completions"],
                                    dump_json({"prompt": " In short,", "max_tokens": 2, "context_id": cid})),
             allow_2xx=True, expect200="completion")
        q2 = dict(q, messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
        step("chat 2 messages", gen.req("POST", PATHS["chat"], dump_json(q2)))
        step("get", gen.req("GET", "/v1/contexts/" + cid), allow_2xx=True, expect200="context")
        step("delete", gen.req("DELETE", "/v1/contexts/" + cid), allow_2xx=True)
        step("get after delete", gen.req("GET", "/v1/contexts/" + cid))
        return steps
    if case.variant == "race_delete":
        results = {}

        def use():
            results["use"] = exchange(cfg, gen.req("POST", PATHS["chat"], dump_json(dict(q, stream=True))))

        t = threading.Thread(target=use)
        t.start()
        time.sleep(r.random() * 0.05)
        dout = exchange(cfg, gen.req("DELETE", "/v1/contexts/" + cid))
        t.join()
        steps.append((Case(case.index, case.category, case.variant, b"", step="chat during delete",
                           allow_2xx=True, expect200="chat", stream=True), results["use"]))
        steps.append((Case(case.index, case.category, case.variant, b"", step="delete during chat",
                           allow_2xx=True), dout))
        step("get after delete", gen.req("GET", "/v1/contexts/" + cid))
        step("chat after delete", gen.req("POST", PATHS["chat"], dump_json(q)))
        return steps
    # create_delete_use
    step("delete", gen.req("DELETE", "/v1/contexts/" + cid), allow_2xx=True)
    step("get after delete", gen.req("GET", "/v1/contexts/" + cid))
    step("chat after delete", gen.req("POST", PATHS["chat"], dump_json(q)))
    step("completions after delete", gen.req("POST", PATHS["completions"],
                                             dump_json({"prompt": "x", "max_tokens": 1, "context_id": cid})))
    step("delete again", gen.req("DELETE", "/v1/contexts/" + cid))
    return steps


# ------------------------------------------------------------------------------------------
# Slow partial sends


SLOW_VARIANTS = ["stall_request_line", "stall_headers", "stall_after_headers", "stall_mid_body",
                 "stall_silent", "trickle_headers", "trickle_body", "stall_mid_body_big"]


def run_slow_one(cfg, i):
    """One slow client; a dict with variant, ok, how, seconds, detail."""
    variant = SLOW_VARIANTS[i % len(SLOW_VARIANTS)]
    rng = random.Random("%d:slow:%d" % (cfg.seed, i))
    gen = Gen(cfg, 0, Gen.CATEGORIES)
    gen.rng = rng
    body = dump_json(gen.valid_body("chat", extras=False))
    full = gen.req("POST", PATHS["chat"], body)
    head_end = full.index(b"\r\n\r\n") + 4
    if variant == "stall_request_line":
        part = full[:rng.randint(1, 20)]
    elif variant == "stall_headers":
        part = full[:rng.randint(25, head_end - 3)]
    elif variant == "stall_after_headers":
        part = full[:head_end]
    elif variant == "stall_mid_body":
        part = full[:head_end + rng.randint(1, len(body) - 1)]
    elif variant == "stall_mid_body_big":
        big = gen.filler_body(min(cfg.max_body // 2, 200000))
        full = gen.req("POST", PATHS["chat"], big)
        part = full[:len(full) - rng.randint(1, 1000)]
    elif variant == "stall_silent":
        part = b""
    elif variant == "trickle_headers":
        full = gen.req("POST", PATHS["chat"], body, headers=[b"X-Slow: " + b"s" * 100000])
        part = None
        pos = full.index(b"X-Slow: ") + 18
    else:  # trickle_body
        full = gen.req("POST", PATHS["chat"], gen.filler_body(100000))
        part = None
        pos = full.index(b"\r\n\r\n") + 14
    res = {"variant": variant, "ok": False, "how": "", "seconds": 0.0, "detail": ""}
    try:
        s = socket.create_connection((cfg.host, cfg.port), timeout=10)
    except OSError as e:
        res.update(how="connect_error", detail=str(e))
        return res
    buf = bytearray()
    t0 = time.monotonic()
    limit = cfg.read_timeout + cfg.slow_grace

    def finish(how, ok, detail=""):
        res.update(how=how, ok=ok, seconds=round(time.monotonic() - t_stall, 2), detail=detail)
        return res

    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if part is not None:
            note = send_watching(s, part, t0 + limit, None)
            t_stall = time.monotonic()
            if note and note != "early_response":
                return finish("cut while sending (%s)" % note, True)
        else:
            t_stall = t0
        deadline = t_stall + limit
        interval = max(0.1, min(1.0, cfg.read_timeout / 3.0))
        if part is None:  # the start at once, then one byte at a time
            note = send_watching(s, full[:pos], deadline, None)
            if note and note != "early_response":
                return finish("cut while sending (%s)" % note, True)
        while True:
            now = time.monotonic()
            if now >= deadline:
                return finish("not cut", False, "still open %.1f s after the stall began (limit %.1f s)" % (
                    now - t_stall, limit))
            wait = deadline - now if part is not None else min(interval, deadline - now)
            rd, _, _ = select.select([s], [], [], wait)
            if rd:
                try:
                    chunk = s.recv(65536)
                except OSError as e:
                    return finish("reset", True, type(e).__name__)
                if not chunk:
                    if buf:
                        out = parse_response(buf, False, eof=True)
                        if out is None or out.kind != "response":
                            return finish("closed mid-response", False, short(bytes(buf), 120))
                        return judge_slow(finish, out)
                    return finish("closed", True)
                buf += chunk
                out = parse_response(buf, False, eof=False)
                if out is not None:
                    if out.kind != "response":
                        return finish("malformed response", False, out.brief())
                    return judge_slow(finish, out)
                continue
            if part is None:
                if pos >= len(full) - 1:
                    return finish("not cut", False, "the trickle reached the end of the request")
                try:
                    s.send(full[pos:pos + 1])
                    pos += 1
                except OSError as e:
                    return finish("cut while sending (%s)" % type(e).__name__, True)
    finally:
        s.close()


def judge_slow(finish, out):
    if 200 <= out.status < 300:
        return finish("answered %d" % out.status, False, "an incomplete request got a success: " + out.brief())
    if out.status >= 400:
        r = check_error_body(out)
        if r:
            return finish("answered %d" % out.status, False, "%s: %s" % r)
        return finish("answered %d" % out.status, True)
    return finish("answered %d" % out.status, False, "unexpected status")


def run_slow_phase(cfg, n, log):
    """n slow clients at once, and a health check while they hold their connections."""
    if n <= 0:
        return {"count": 0, "results": [], "health_during": None}
    results = [None] * n
    threads = []
    for i in range(n):
        def work(i=i):
            try:
                results[i] = run_slow_one(cfg, i)
            except Exception as e:  # noqa: BLE001 - a client bug shows up as a failed slow case
                results[i] = {"variant": SLOW_VARIANTS[i % len(SLOW_VARIANTS)], "ok": False,
                              "how": "client exception", "seconds": 0.0, "detail": repr(e)}
        t = threading.Thread(target=work, daemon=True)
        t.start()
        threads.append(t)
    time.sleep(min(1.0, cfg.read_timeout / 2))
    t0 = time.monotonic()
    alive, detail = health(cfg, timeout=cfg.read_timeout + cfg.slow_grace + 5)
    health_during = {"ok": alive, "seconds": round(time.monotonic() - t0, 2), "detail": detail}
    for t in threads:
        t.join(cfg.read_timeout + cfg.slow_grace + 30)
    results = [r or {"variant": "?", "ok": False, "how": "thread did not finish", "seconds": 0.0,
                     "detail": ""} for r in results]
    log("[hostile] slow partial sends: %d/%d cut in time; /health during them: %s" % (
        sum(1 for r in results if r["ok"]), n, detail))
    return {"count": n, "results": results, "health_during": health_during}


# ------------------------------------------------------------------------------------------
# The run


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.cases = 0
        self.requests = 0
        self.by_cat = {}
        self.statuses = {}
        self.failures = []
        self.failure_kinds = {}
        self.warnings = []
        self.accepted = []  # (label, status) of 2xx answers
        self.slowest = []
        self.contexts_created = []

    def add(self, case, out, key, fail, detail):
        with self.lock:
            self.requests += 1
            c = self.by_cat.setdefault(case.category, {"requests": 0, "statuses": {}, "failures": 0,
                                                       "accepted_2xx": 0, "resets": 0, "closed": 0,
                                                       "seconds": 0.0})
            c["requests"] += 1
            c["seconds"] = round(c["seconds"] + out.elapsed, 2)
            c["statuses"][key] = c["statuses"].get(key, 0) + 1
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if key == "reset":
                c["resets"] += 1
            if key == "closed":
                c["closed"] += 1
            if out.kind == "response" and 200 <= out.status < 300:
                c["accepted_2xx"] += 1
                if len(self.accepted) < 200:
                    self.accepted.append((case.label(), out.status))
            if out.kind == "response" and out.status >= 500 and out.status not in (501, 503, 505) \
                    and len(self.warnings) < 200:
                self.warnings.append({"case": case.label(), "warning": "status %d (a client error answered as "
                                      "a server error?)" % out.status, "request": short(case.data),
                                      "response": out.brief()})
            if fail:
                c["failures"] += 1
                self.failure_kinds[fail] = self.failure_kinds.get(fail, 0) + 1
                if len(self.failures) < 500:
                    self.failures.append({"case": case.label(), "kind": fail, "detail": detail,
                                          "request": short(case.data), "response": out.brief(),
                                          "seconds": round(out.elapsed, 2)})
            self.slowest.append((round(out.elapsed, 2), case.label()))
            if len(self.slowest) > 50:
                self.slowest.sort(reverse=True)
                del self.slowest[10:]

    def fail_global(self, kind, detail):
        with self.lock:
            self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1
            self.failures.append({"case": "-", "kind": kind, "detail": detail, "request": "", "response": ""})


def run_case(cfg, index, categories, stats, dead):
    if dead.is_set():
        return
    gen = Gen(cfg, index, categories)
    case = gen.make()
    with stats.lock:
        stats.cases += 1
    if case.seq:
        pairs = run_sequence(cfg, case, gen)
    else:
        out = exchange(cfg, case.data, half_close=case.half_close, head=case.head)
        pairs = [(case, out)]
    for c, out in pairs:
        key, fail, detail = judge(c, out)
        stats.add(c, out, key, fail, detail)
        if fail == "connect_error":
            alive, _ = health(cfg)
            if not alive:
                dead.set()
        if out.kind == "response" and 200 <= out.status < 300 and c.expect200 == "context" and not c.seq:
            try:
                cid = json.loads(out.body.decode("utf-8")).get("id")
                if isinstance(cid, str) and c.step != "create":
                    with stats.lock:
                        stats.contexts_created.append(cid)
            except (ValueError, UnicodeDecodeError, AttributeError):
                pass


def describe_case(cfg, index, categories):
    gen = Gen(cfg, index, categories)
    case = gen.make()
    lines = ["case %s" % case.label(),
             "  allow_2xx=%s allow_reset=%s allow_close=%s half_close=%s head=%s stream=%s expect200=%s" % (
                 case.allow_2xx, case.allow_reset, case.allow_close, case.half_close, case.head, case.stream,
                 case.expect200),
             "  request (%d bytes): %s" % (len(case.data), short(case.data, 2000))]
    return case, gen, lines


def final_valid_request(cfg):
    out, obj = http_json(cfg, "POST", PATHS["chat"], VALID_FINAL, timeout=max(cfg.response_timeout, 120))
    res = {"ok": False, "status": out.status if out.kind == "response" else out.kind, "detail": "",
           "seconds": round(out.elapsed, 2)}
    if out.kind != "response" or out.status != 200:
        res["detail"] = out.brief(300)
        return res
    try:
        ch = obj["choices"][0]
        content = (ch.get("message") or {}).get("content")
        if (isinstance(content, str) and content) or ch.get("finish_reason"):
            res.update(ok=True, detail="content %r finish_reason %r" % (content, ch.get("finish_reason")))
        else:
            res["detail"] = "no content and no finish_reason: " + short(out.body, 300)
    except (KeyError, IndexError, TypeError, AttributeError):
        res["detail"] = "not a chat completion: " + short(out.body, 300)
    return res


def run(cfg, count, categories, slow_count, log):
    stats = Stats()
    dead = threading.Event()
    t_start = time.monotonic()
    health_log = []
    alive, detail = health(cfg)
    health_log.append({"after": 0, "ok": alive, "detail": detail})
    if not alive:
        stats.fail_global("server_dead", "GET /health before the run: " + detail)
        return stats, health_log, None, None, time.monotonic() - t_start, False
    contexts_before = list_contexts(cfg)
    block = 1000
    with concurrent.futures.ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        for start in range(0, count, block):
            futs = [pool.submit(run_case, cfg, i, categories, stats, dead)
                    for i in range(start, min(count, start + block))]
            for f in concurrent.futures.as_completed(futs):
                exc = f.exception()
                if exc is not None:
                    stats.fail_global("client_exception", repr(exc))
            done = min(count, start + block)
            alive, detail = health(cfg)
            health_log.append({"after": done, "ok": alive, "detail": detail})
            log("[hostile] %d/%d cases (%d requests), %d failures, %.1f s, /health: %s" % (
                done, count, stats.requests, len(stats.failures), time.monotonic() - t_start,
                "ok" if alive else "DEAD " + detail))
            if not alive or dead.is_set():
                stats.fail_global("server_dead", "GET /health after %d cases: %s" % (done, detail))
                return stats, health_log, None, None, time.monotonic() - t_start, False
    slow = run_slow_phase(cfg, slow_count, log)
    for r in slow["results"]:
        if not r["ok"]:
            kind = "slow_not_cut" if r["how"] == "not cut" else "slow_send"
            if r["how"] == "not cut" and r["variant"].startswith("trickle"):
                kind = "trickle_not_cut"
                if not cfg.fail_on_trickle:
                    # A known limit, documented in docs/server.md: cpp-httplib 0.11 times out
                    # each read, not a whole request, so a client sending a byte a second is
                    # never cut. Reported, not failed, unless --fail-on-trickle.
                    stats.warnings.append({"case": "-", "warning": "known limit (trickle not cut): %s %s (%.1f s)" % (
                        r["variant"], r["detail"], r["seconds"])})
                    continue
            stats.fail_global(kind, "%s: %s %s (%.1f s)" % (r["variant"], r["how"], r["detail"], r["seconds"]))
    # Contexts that hostile-but-valid requests created: delete them.
    for cid in stats.contexts_created:
        http_json(cfg, "DELETE", "/v1/contexts/" + cid, timeout=30)
    # Any other context that appeared during the run was made by a request whose answer never
    # said so (a dropped response, a delete that did not stick): report, then delete it.
    contexts_after = list_contexts(cfg)
    if contexts_before is not None and contexts_after is not None:
        left = sorted(set(contexts_after) - set(contexts_before))
        if left:
            stats.warnings.insert(0, {"case": "-", "warning": "%d context(s) left stored by the run although "
                                      "every context it was told about was deleted: %s" % (
                                          len(left), ", ".join(left[:5])), "request": "", "response": ""})
        for cid in left:
            http_json(cfg, "DELETE", "/v1/contexts/" + cid, timeout=30)
    alive, detail = health(cfg)
    health_log.append({"after": "end", "ok": alive, "detail": detail})
    final = None
    if alive:
        final = final_valid_request(cfg)
        if not final["ok"]:
            stats.fail_global("final_request", "the valid chat request afterwards: %s %s" % (
                final["status"], final["detail"]))
    else:
        stats.fail_global("server_dead", "GET /health at the end: " + detail)
    return stats, health_log, slow, final, time.monotonic() - t_start, alive


def summarize(cfg, count, stats, health_log, slow, final, elapsed, alive, out):
    w = out.write
    ok = alive and not stats.failures and final is not None and final["ok"]
    w("hostile_client: %d cases, %d requests in %.1f s against http://%s (seed %d)\n" % (
        stats.cases, stats.requests, elapsed, cfg.host_header, cfg.seed))
    w("%-20s %8s %6s %6s %6s %6s %6s %6s %7s  %s\n" % ("category", "requests", "2xx", "4xx", "5xx", "reset",
                                                        "closed", "FAIL", "req-s", "statuses"))
    for cat in sorted(stats.by_cat):
        c = stats.by_cat[cat]
        st = c["statuses"]
        n4 = sum(v for k, v in st.items() if k.isdigit() and k.startswith("4"))
        n5 = sum(v for k, v in st.items() if k.isdigit() and k.startswith("5"))
        w("%-20s %8d %6d %6d %6d %6d %6d %6d %7.0f  %s\n" % (
            cat, c["requests"], c["accepted_2xx"], n4, n5, c["resets"], c["closed"], c["failures"], c["seconds"],
            " ".join("%s:%d" % kv for kv in sorted(st.items()))))
    w("all statuses: %s\n" % " ".join("%s:%d" % kv for kv in sorted(stats.statuses.items())))
    if slow:
        hows = {}
        for r in slow["results"]:
            hows[r["how"]] = hows.get(r["how"], 0) + 1
        secs = [r["seconds"] for r in slow["results"] if r["ok"]]
        w("slow partial sends: %d, cut in time %d (%s); longest to cut %.1f s (limit %.1f s); "
          "/health while they stalled: %s\n" % (
              slow["count"], sum(1 for r in slow["results"] if r["ok"]),
              ", ".join("%s %d" % kv for kv in sorted(hows.items())), max(secs) if secs else 0.0,
              cfg.read_timeout + cfg.slow_grace, slow["health_during"]))
    w("health checks: %d/%d ok\n" % (sum(1 for h in health_log if h["ok"]), len(health_log)))
    if final:
        w("final valid chat: %s %s (%.1f s)\n" % (final["status"], final["detail"], final["seconds"]))
    if stats.slowest:
        top = sorted(stats.slowest, reverse=True)[:5]
        w("slowest requests: %s\n" % "; ".join("%.1f s %s" % t for t in top))
    if stats.accepted:
        w("2xx answers (first 10 of %d): %s\n" % (sum(c["accepted_2xx"] for c in stats.by_cat.values()),
                                                  "; ".join("%s -> %d" % a for a in stats.accepted[:10])))
    if stats.warnings:
        w("warnings (%d; first 10):\n" % len(stats.warnings))
        for x in stats.warnings[:10]:
            w("  %s: %s\n" % (x["case"], x["warning"]))
            if x.get("request"):
                w("    request: %s\n    response: %s\n" % (x["request"], x["response"]))
    if stats.failures:
        w("FAILURES: %d (%s); first 20:\n" % (
            sum(stats.failure_kinds.values()),
            ", ".join("%s %d" % kv for kv in sorted(stats.failure_kinds.items()))))
        for f in stats.failures[:20]:
            w("  %s [%s] %s\n" % (f["case"], f["kind"], f["detail"]))
            if f["request"]:
                w("    request: %s\n    response: %s\n" % (f["request"], f["response"]))
    w("RESULT: %s\n" % ("PASS" if ok else "FAIL"))
    return ok


def result_json(cfg, count, stats, health_log, slow, final, elapsed, alive, ok):
    return {
        "ok": ok, "url": "http://" + cfg.host_header, "seed": cfg.seed, "cases": stats.cases,
        "requests": stats.requests, "elapsed_s": round(elapsed, 2), "alive": alive,
        "categories": stats.by_cat, "statuses": stats.statuses, "failure_kinds": stats.failure_kinds,
        "failures": stats.failures[:100], "warnings": stats.warnings[:50],
        "accepted_2xx": [{"case": a, "status": s} for a, s in stats.accepted[:100]],
        "slow": slow, "health": health_log, "final_request": final,
    }


# ------------------------------------------------------------------------------------------
# Self-test: a throwaway loopback server, and checks that good answers pass and bad ones fail


class _MockHandler(socketserver.BaseRequestHandler):
    def handle(self):
        srv = self.server
        s = self.request
        deadline = time.monotonic() + srv.read_timeout if srv.cut_slow else None
        buf = bytearray()

        def recv():
            if deadline is not None:
                rem = deadline - time.monotonic()
                if rem <= 0:
                    raise socket.timeout()
                s.settimeout(rem)
            else:
                s.settimeout(None)
            return s.recv(65536)

        try:
            while b"\r\n\r\n" not in buf:
                if len(buf) > 65536:
                    return self.reply(431, "request headers too large")
                c = recv()
                if not c:
                    return self.reply(400, "incomplete request") if buf else None
                buf += c
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
                return self.reply(400, "bad request line")
            method, target = parts[0], parts[1]
            headers = {}
            for ln in lines[1:]:
                name, sep, value = ln.partition(b":")
                if not sep or not TOKEN_RE.match(name):
                    return self.reply(400, "bad header line")
                headers.setdefault(name.lower(), []).append(value.strip())
            if parts[2] == b"HTTP/1.1" and len(headers.get(b"host", [])) != 1:
                return self.reply(400, "an HTTP/1.1 request needs exactly one Host header")
            if b"transfer-encoding" in headers:
                return self.reply(501, "Transfer-Encoding is not supported")
            cl = headers.get(b"content-length", [b"0"])
            if len(set(cl)) != 1 or not cl[0].isdigit() or len(cl[0]) > 15:
                return self.reply(400, "bad Content-Length")
            n = int(cl[0])
            if n > srv.max_body:
                return self.reply(413, "body too large")
            body = bytearray(rest)
            while len(body) < n:
                c = recv()
                if not c:
                    return self.reply(400, "truncated body")
                body += c
            body = bytes(body[:n])
        except socket.timeout:
            return self.reply(408, "request timeout")
        except OSError:
            return None
        path = target.decode("latin-1")
        is_head = method == b"HEAD"
        if path == "/health" and method in (b"GET", b"HEAD"):
            return self.raw(200, b'{"status":"ok"}', head=is_head)
        if path == "/garbage":
            return self.raw(400, b"<html>oops</html>", ctype="text/html")
        if path == "/bad-shape":
            return self.raw(400, b'{"error":"nope"}')
        if path == "/bad-utf8":
            return self.raw(400, b'{"error":{"message":"bad \xff","type":"x","param":null,"code":null}}')
        if path == "/ok-garbage":
            return self.raw(200, b"not json")
        if path == "/drop":
            return None
        if path == "/truncated":
            return self.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\n{\"error\"")
        if path == "/chunked":
            e = json.dumps({"error": {"message": "chunked", "type": "x", "param": None, "code": None}}).encode()
            return self.send(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                             + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (5, e[:5], len(e) - 5, e[5:]))
        if path == "/continue":
            e = json.dumps({"error": {"message": "after 100", "type": "x", "param": None, "code": None}}).encode()
            return self.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(e), e))
        if path == "/sse":
            sse = (b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"hi"}}]}\n\n'
                   b": keepalive\n\ndata: [DONE]\n\n")
            return self.raw(200, sse, ctype="text/event-stream")
        if path == "/sse-bad":
            return self.raw(200, b"data: {not json}\n\n", ctype="text/event-stream")
        if path == PATHS["chat"] and method == b"POST":
            try:
                if json.loads(body) == VALID_FINAL:
                    return self.raw(200, json.dumps({"object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "Hi!"},
                         "finish_reason": "stop"}]}).encode())
            except (ValueError, RecursionError):
                pass
        return self.reply(404 if path.startswith("/nowhere") else 400, "mock says no", head=is_head)

    def reply(self, status, message, head=False):
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": None}}).encode()
        return self.raw(status, body, head=head)

    def raw(self, status, body, ctype="application/json", head=False):
        hdr = b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
            status, ctype.encode(), len(body))
        return self.send(hdr + (b"" if head else body))

    def send(self, data):
        s = self.request
        try:
            s.settimeout(5)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            # Lingering close: read what the client still sends, so that closing resets nothing.
            s.settimeout(0.5)
            got = 0
            while got < (4 << 20):
                c = s.recv(65536)
                if not c:
                    break
                got += len(c)
        except OSError:
            pass


def start_mock(read_timeout, max_body, cut_slow=True):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MockHandler)
    srv.read_timeout, srv.max_body, srv.cut_slow = read_timeout, max_body, cut_slow
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return srv


def self_test():
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(("PASS  " if ok else "FAIL  ") + name + ("" if ok or not detail else "\n      " + str(detail)),
              flush=True)

    quiet = lambda msg: None  # noqa: E731
    max_kib = 64
    srv = start_mock(read_timeout=1.0, max_body=max_kib * 1024)
    port = srv.server_address[1]
    cfg = Config("127.0.0.1", port, seed=1, max_body_kib=max_kib, read_timeout_s=1.0, response_timeout_s=15,
                 slow_grace_s=1.5, workers=8)
    cats = list(Gen.CATEGORIES)

    # 1. Determinism: case i is the same bytes each time.
    same = all(Gen(cfg, i, cats).make().data == Gen(cfg, i, cats).make().data for i in range(0, 200, 7))
    check("case i of a seed is always the same request", same)
    diff = Gen(cfg, 5, cats).make().data != Gen(Config("127.0.0.1", port, seed=2, max_body_kib=max_kib), 5,
                                                  cats).make().data
    check("another seed gives other requests", diff)

    # 2. Every category generates, and a full (small) run against a well-behaved server passes.
    counts = {}
    for i in range(len(cats) * 30):
        c = Gen(cfg, i, cats).make()
        counts[c.category] = counts.get(c.category, 0) + 1
    check("all %d categories generate" % len(cats), sorted(counts) == sorted(cats), counts)
    n = len(cats) * 25
    stats, hl, slow, final, el, alive = run(cfg, n, cats, 8, quiet)
    ok_run = alive and not stats.failures and final and final["ok"]
    detail = ""
    if not ok_run:
        import io
        buf = io.StringIO()
        summarize(cfg, n, stats, hl, slow, final, el, alive, buf)
        detail = buf.getvalue()
    check("a %d-case run against a server that answers 400 JSON to everything passes (%.1f s)" % (n, el),
          ok_run, detail)
    check("the run sent every case", stats.cases == n, "%d cases" % stats.cases)
    check("the slow clients were all cut (the mock cuts at 1 s)", slow and all(r["ok"] for r in slow["results"]),
          slow and [r for r in slow["results"] if not r["ok"]])

    # 3. Bad answers are caught.
    def probe(path, method="GET", **case_kw):
        g = Gen(cfg, 0, cats)
        case = Case(0, "probe", path, g.req(method, path, b"{}" if method == "POST" else b""), **case_kw)
        out = exchange(cfg, case.data, half_close=case.half_close, head=case.head)
        return judge(case, out), out

    (k, fail, d), _ = probe("/garbage")
    check("an HTML error body fails (error_body)", fail == "error_body", (k, fail, d))
    (k, fail, d), _ = probe("/bad-shape")
    check("an error that is a string fails (error_body)", fail == "error_body", (k, fail, d))
    (k, fail, d), _ = probe("/bad-utf8")
    check("an error body with invalid UTF-8 fails (error_body)", fail == "error_body", (k, fail, d))
    (k, fail, d), _ = probe("/ok-garbage", allow_2xx=True, expect200="json")
    check("a 2xx whose body is not JSON fails (bad_2xx_body)", fail == "bad_2xx_body", (k, fail, d))
    (k, fail, d), _ = probe("/ok-garbage")
    check("a 2xx to an invalid request fails (accepted_invalid)", fail == "accepted_invalid", (k, fail, d))
    (k, fail, d), _ = probe("/drop")
    check("a close without a response fails (closed_without_response)", fail == "closed_without_response",
          (k, fail, d))
    (k, fail, d), _ = probe("/drop", allow_close=True)
    check("... unless the case allows it", fail is None and k == "closed", (k, fail, d))
    (k, fail, d), _ = probe("/truncated")
    check("a response shorter than its Content-Length fails (malformed_response)", fail == "malformed_response",
          (k, fail, d))
    (k, fail, d), out = probe("/chunked")
    check("a chunked error response is decoded and passes", fail is None and k == "400", (k, fail, d, out.brief()))
    (k, fail, d), _ = probe("/continue")
    check("100 Continue then the final response is read", fail is None and k == "404", (k, fail, d))
    (k, fail, d), _ = probe("/sse", allow_2xx=True, expect200="chat", stream=True)
    check("a well-formed SSE stream passes", fail is None and k == "200", (k, fail, d))
    (k, fail, d), _ = probe("/sse-bad", allow_2xx=True, expect200="chat", stream=True)
    check("an SSE stream with non-JSON data fails", fail == "bad_2xx_body", (k, fail, d))
    (k, fail, d), _ = probe("/health", method="HEAD", head=True, allow_2xx=True)
    check("a HEAD answer has no body to wait for", fail is None and k == "200", (k, fail, d))
    check("SSE without [DONE] fails", check_sse(b'data: {"a":1}\n\n') is not None)
    check("SSE with only [DONE] fails", check_sse(b"data: [DONE]\n\n") is not None)
    check("SSE with an error event and no [DONE] passes", check_sse(b'data: {"error":{"message":"x"}}\n\n') is None)
    check("an error without param/code fails (error_shape)",
          check_error_body(Outcome("response", 400, [], b'{"error":{"message":"m","type":"t"}}'))[0] == "error_shape")
    check("an error with all four fields passes", check_error_body(Outcome(
        "response", 400, [], b'{"error":{"message":"m","type":"t","param":null,"code":"c"}}')) is None)
    check("a 503 without Retry-After fails (error_shape)", (check_error_body(Outcome(
        "response", 503, [], b'{"error":{"message":"m","type":"t","param":null,"code":null}}')) or ("",))[0]
        == "error_shape")
    check("a bodyless 405 passes", judge(Case(0, "p", "v"), Outcome("response", 405, [], b""))[1] is None)
    check("a 302 fails (unexpected_status)", judge(Case(0, "p", "v"), Outcome("response", 302, [], b""))[1]
          == "unexpected_status")
    check("a reset fails unless allowed", judge(Case(0, "p", "v"), Outcome("reset"))[1] == "reset"
          and judge(Case(0, "p", "v", allow_reset=True), Outcome("reset"))[1] is None)
    check("a timeout fails", judge(Case(0, "p", "v", allow_close=True, allow_reset=True),
                                   Outcome("timeout"))[1] == "no_response")

    # 4. A server that never cuts slow clients is caught, and a dead one is seen as dead.
    lazy = start_mock(read_timeout=1.0, max_body=max_kib * 1024, cut_slow=False)
    lcfg = Config("127.0.0.1", lazy.server_address[1], seed=1, max_body_kib=max_kib, read_timeout_s=0.5,
                  slow_grace_s=0.5)
    slow = run_slow_phase(lcfg, 4, quiet)
    check("slow clients that a server never cuts fail (not cut)",
          all((not r["ok"]) and r["how"] == "not cut" for r in slow["results"]), slow["results"])
    lazy.shutdown()
    lazy.server_close()
    dead_sock = socket.socket()
    dead_sock.bind(("127.0.0.1", 0))
    dport = dead_sock.getsockname()[1]
    dead_sock.close()
    alive, d = health(Config("127.0.0.1", dport, read_timeout_s=0.2, slow_grace_s=0.2), timeout=1)
    check("a server that is gone is not alive", not alive, d)
    dstats, _, _, _, _, dalive = run(Config("127.0.0.1", dport, read_timeout_s=0.2, slow_grace_s=0.2), 10, cats,
                                     0, quiet)
    check("a run against a dead server fails", not dalive and "server_dead" in dstats.failure_kinds,
          dstats.failure_kinds)
    srv.shutdown()
    srv.server_close()
    ok = all(results)
    print("self-test: %d/%d checks passed -> %s" % (sum(results), len(results), "PASS" if ok else "FAIL"))
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="the server, http://HOST:PORT")
    ap.add_argument("--count", type=int, default=10000, help="hostile cases to send (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-key", default=None, help="the server's --api-key (adds an auth category)")
    ap.add_argument("--max-body-kib", type=int, default=1024, help="the server's --max-body-kib")
    ap.add_argument("--read-timeout-s", type=float, default=5.0, help="the server's --read-timeout-s")
    ap.add_argument("--response-timeout-s", type=float, default=60.0,
                    help="how long one request may wait for its response (default 60)")
    ap.add_argument("--slow-count", type=int, default=None,
                    help="slow partial sends, all at once (default 32; fewer for small --count)")
    ap.add_argument("--slow-grace-s", type=float, default=5.0, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--fail-on-trickle", action="store_true",
                    help="count trickling senders that are never cut as failures (a known limit "
                         "of the server; by default they are reported as warnings)")
    ap.add_argument("--categories", default=None, help="comma-separated subset of the categories")
    ap.add_argument("--only-case", type=int, action="append", default=None,
                    help="send only this case (repeatable) and print it in full")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout (the summary goes to stderr)")
    ap.add_argument("--self-test", action="store_true", help="test this client against a loopback mock server")
    args = ap.parse_args(argv)

    if args.self_test:
        return self_test()
    if not args.url:
        ap.error("--url is required (or --self-test)")
    u = urllib.parse.urlsplit(args.url)
    if u.scheme != "http" or not u.hostname:
        ap.error("--url must be http://HOST:PORT")
    cfg = Config(u.hostname, u.port or 80, api_key=args.api_key, seed=args.seed, max_body_kib=args.max_body_kib,
                 read_timeout_s=args.read_timeout_s, response_timeout_s=args.response_timeout_s,
                 slow_grace_s=args.slow_grace_s, workers=max(1, args.workers))
    cfg.fail_on_trickle = args.fail_on_trickle
    cats = list(Gen.CATEGORIES) + (["auth"] if args.api_key else [])
    if args.categories:
        want = [c.strip() for c in args.categories.split(",") if c.strip()]
        bad = [c for c in want if c not in cats]
        if bad:
            ap.error("unknown categories %s (known: %s)" % (bad, ", ".join(cats)))
        cats = want

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.only_case:
        any_fail = False
        for idx in args.only_case:
            case, gen, lines = describe_case(cfg, idx, cats)
            print("\n".join(lines))
            if case.seq:
                pairs = run_sequence(cfg, case, gen)
            else:
                pairs = [(case, exchange(cfg, case.data, half_close=case.half_close, head=case.head))]
            for c, out in pairs:
                key, fail, detail = judge(c, out)
                any_fail |= bool(fail)
                print("  %s -> %s in %.2f s (send: %s)\n  response: %s\n  verdict: %s %s" % (
                    c.step or "request", key, out.elapsed, out.send_note, out.brief(2000),
                    "FAIL " + fail if fail else "ok", detail))
        return 1 if any_fail else 0

    slow_count = args.slow_count if args.slow_count is not None else max(4, min(32, args.count // 60))
    stats, hl, slow, final, elapsed, alive = run(cfg, args.count, cats, slow_count, log)
    text_out = sys.stderr if args.json else sys.stdout
    ok = summarize(cfg, args.count, stats, hl, slow, final, elapsed, alive, text_out)
    if args.json:
        print(json.dumps(result_json(cfg, args.count, stats, hl, slow, final, elapsed, alive, ok)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
