"""Zero 5xx on bad input, proven by fuzzing the running stack through Nginx.

(a) schemathesis over every operation of the published `/openapi.json` (fixed seed, bounded examples);
(b) hypothesis-built hostile bodies against the JSON routes: lone surrogates, NUL, 1 MB strings, deep
    nesting, huge numbers, NaN/Infinity, wrong content types, duplicate keys, invalid UTF-8, truncated
    JSON, empty bodies; every answer is < 500 and every 4xx is OpenAI's `{"error": {...}}`;
(c) afterwards the stack is healthy and a normal chat still works;
(d) a refused request changes nothing stored: the knowledge-base list, the documents of a knowledge base
    this package creates and a session's messages are the same after hostile requests aimed at them.

`RAYCHAT_FUZZ_SCALE` (default 1, about two minutes) multiplies every example count and time budget;
`make fuzz` runs with 10. `RAYCHAT_FUZZ_SEED` changes the fixed seed. Every request goes to the stack's
loopback URL, every loop is bounded in count (examples) and time (a budget per part, a timeout per request).

The modules, data first:
- `common.py`: scale, seed, budgets and limits; the checked `Sender`, the OpenAI error-format check, the
  stored state (`Stored`) and its `snapshot`;
- `conftest.py`: the package's fixtures (client, credentials, the stored state, created once for the
  package) and the hook that runs the `fuzz_afterwards` tests after all the others;
- `bodies.py`: the JSON routes' base bodies and where their strings and numbers live, and the byte-level
  helpers that put a hostile token into a body;
- `hostile.py`: hostile values and the Hypothesis strategy that builds hostile requests from them;
- `hostile_cases.py`: the fixed hostile bodies and the lone-surrogate regression cases;
- `refusal_cases.py`: the requests aimed at the stored state that must be refused;
- `test_hostile_bodies.py`: (b) and the lone-surrogate regressions;
- `test_published_schema.py`: the published schema's shape, and (a);
- `test_refusals_store_nothing.py`: (d);
- `test_still_healthy.py`: (c).
"""
