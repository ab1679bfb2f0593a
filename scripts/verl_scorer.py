#!/usr/bin/env python3
"""A verl reward function, unchanged, as a clipo scorer program (schemas/scorer.md).

    clipo-verify -i t.parquet -o r.parquet --scorer 'python3 scripts/verl_scorer.py my_reward.py'
    python3 scripts/verl_scorer.py FILE.py[:FUNCTION]      (FUNCTION defaults to compute_score)

FILE.py is imported as verl imports `custom_reward_function.path` (as the module
`custom_module`, with FILE's directory first on sys.path so that its own imports work), and
FUNCTION is called for each request line on stdin exactly as verl's reward manager calls it:

    FUNCTION(data_source=..., solution_str=..., ground_truth=..., extra_info=...)

(`solution_str` is the request's `response_text`; `extra_info` is the request's value, None
when the table has no `extra_info` column). It may return a number (int, float, bool, numpy
scalar) or a dict with a `score` key, as in verl. One JSON line is printed per request:

- `score`: the number, or the dict's `score`;
- `correct`: the dict's `correct`, else its `acc` (verl's accuracy key, e.g. math_dapo's),
  else `score > 0` (the paper's label);
- `extracted`: the dict's `extracted`, else its `pred` (verl's extracted-answer key);
- `reason`: the dict's `reason`, if any;
- every other key of the dict as it is (clipo stores them in the rewards table's `extra`);
- `prompt_id` and `sample_idx` of the request, so that clipo can check the order.

An exception in the function, or a score that is not a finite number, stops the program with a
traceback on stderr: clipo-verify then fails naming the row, with the traceback's last lines.
Uses only the standard library.
"""

import importlib.util
import json
import math
import os
import sys


def load(spec):
    """FILE.py[:FUNCTION] -> the function (the last `:` separates FUNCTION when FILE exists)."""
    path, name = spec, "compute_score"
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isidentifier() and os.path.exists(head):
        path, name = head, tail
    if not os.path.isfile(path):
        sys.exit(f"verl_scorer.py: {path}: no such file (usage: verl_scorer.py FILE.py[:FUNCTION])")
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    module_spec = importlib.util.spec_from_file_location("custom_module", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["custom_module"] = module
    module_spec.loader.exec_module(module)
    if not hasattr(module, name):
        sys.exit(f"verl_scorer.py: {path} has no function `{name}`")
    return getattr(module, name)


def plain(value):
    """numpy scalars and arrays as JSON values; anything else unknown as its text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def answer(result):
    """A verl return value as a protocol answer (without the request's key)."""
    if isinstance(result, dict):
        if "score" not in result:
            raise ValueError(f"the reward function returned a dict without `score`: {result!r}")
        out = dict(result)
        score = out.pop("score")
        if "correct" not in out and "acc" in out:
            out["correct"] = bool(out["acc"])
        if "extracted" not in out and "pred" in out:
            out["extracted"] = None if out["pred"] is None else str(out["pred"])
    else:
        out, score = {}, result
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"the reward function returned the score {score}")
    out["score"] = score
    if "correct" in out and out["correct"] is not None:
        out["correct"] = bool(out["correct"])
    else:
        out["correct"] = score > 0
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: verl_scorer.py FILE.py[:FUNCTION]")
    fn = load(sys.argv[1])
    for line in sys.stdin:
        req = json.loads(line)
        out = answer(
            fn(
                data_source=req["data_source"],
                solution_str=req["response_text"],
                ground_truth=req["ground_truth"],
                extra_info=req.get("extra_info"),
            )
        )
        out["prompt_id"] = req["prompt_id"]
        out["sample_idx"] = req["sample_idx"]
        sys.stdout.write(json.dumps(out, default=plain, allow_nan=False) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
