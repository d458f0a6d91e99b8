"""How ``opencave synth`` scales: ``python -m bench.scale --synapses N [--max-memory GiB]``.

Builds the datastack of N synapses into the benchmark cache (so ``python -m bench`` reuses
it), timing it and sampling the peak memory of its process tree, then reports the disk each
version adds. With a memory or time cap the build is stopped when it goes over, and the
report says where (py-spy) — the check that the generator runs in bounded memory, without
letting it exhaust a shared machine.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from . import datastack
from .report import fmt_bytes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--synapses", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-memory", type=float, default=None,
                        help="GiB of its own memory (mapped file pages excluded)")
    parser.add_argument("--max-minutes", type=float, default=None)
    args = parser.parse_args(argv)
    path = datastack.directory(args.synapses, args.seed)
    record = datastack.CACHE / f"scale-{args.synapses}-seed{args.seed}.json"
    try:
        seconds, peak, anon = datastack.build(
            path, args.synapses, args.seed,
            max_memory=int(args.max_memory * 2**30) if args.max_memory else None,
            max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    except datastack.BuildStopped as stopped:
        print(stopped)
        record.write_text(json.dumps({"synapses": args.synapses, "stopped": str(stopped),
                                      "seconds": stopped.seconds, "peak_rss": stopped.peak,
                                      "where": stopped.where}, indent=1))
        raise SystemExit(1) from None
    stats = datastack.measure(path, args.synapses, args.seed, seconds, peak, anon)
    path.with_suffix(".json").write_text(json.dumps(asdict(stats), indent=1))
    record.write_text(json.dumps(asdict(stats), indent=1))
    first = min(stats.version_bytes, key=int)
    later = sorted(v for k, v in stats.version_bytes.items() if k != first)
    took = "resumed, total time unknown" if seconds is None else f"{seconds / 60:.1f} min"
    print(f"{args.synapses:,} synapses: {took}, peak {fmt_bytes(anon)} of "
          f"its own ({fmt_bytes(peak)} resident with mapped files), "
          f"{fmt_bytes(stats.disk_bytes)} on disk; v{first} {fmt_bytes(stats.version_bytes[first])}"
          f", later versions {fmt_bytes(later[len(later) // 2])} median, "
          f"{fmt_bytes(later[-1])} max")


if __name__ == "__main__":
    main()
