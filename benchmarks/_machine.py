"""What the benchmark scripts report about the machine they ran on, and how they save it."""

import json
import os
import platform


def cpu_name():
    """The CPU's model name, with its family and model numbers, the instruction sets that
    choose fastlstm's kernels and the L2 per core (/proc/cpuinfo and sysfs, Linux), else
    what platform says. The model name alone can hide the kind: a VM here reports
    "AMD EPYC" for both Zen 4 (family 25, model 17) and Zen 5."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model", "flags") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break                       # the first processor's block is enough
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    detail = [f"family {fields['cpu family']}, model {fields['model']}"
              if "cpu family" in fields and "model" in fields else None,
              " ".join(isa) or None, _l2_per_core()]
    return f"{fields['model name']} ({'; '.join(d for d in detail if d)})"


def _l2_per_core():
    """The L2 cache of cpu0 as sysfs gives it ("1024K"), or None."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            with open(os.path.join(base, index, "level")) as fh:
                if fh.read().strip() != "2":
                    continue
            with open(os.path.join(base, index, "size")) as fh:
                return "L2 " + fh.read().strip()
    except OSError:
        pass
    return None


def build_state():
    """fastlstm._build_source.build_state(), and a line that says it: whether the loaded
    kernels were built from the checkout's sources as they are now."""
    from fastlstm._build_source import build_state as state
    build = state()
    if build["fresh"]:
        line = f"kernels built from this tree's sources ({build['built']})"
    elif build["fresh"] is False:
        line = (f"WARNING: STALE KERNELS: built from sources {build['built']}, the tree's are "
                f"{build['tree']}; rebuild (python setup.py build_ext --inplace) before timing")
    else:
        line = f"kernels' sources unknown (built {build['built']}, tree {build['tree']})"
    return build, line


def write_json(path, result):
    """Save a benchmark's ``result`` dict as JSON at ``path`` (folders made), with the
    kernels' :func:`build_state` under "build", and say so (loudly if they are stale)."""
    build, line = build_state()
    result = dict(result, build=build)
    if build["fresh"] is False:
        print(line)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"\nwrote {path}")
