"""P9: convert + build + export Omni-SILA clip windows at 20K vs 200K clips — wall time and peak RSS side by side
(goal: flat memory, peak(200K) / peak(20K) <= 1.5).

The input is a TSL-300-format annotation set (``datasets_scripts.scale.write_tsl300_scale_set``: 200-s sources,
every id a symbolic link to one real video) of 100 or 1,000 sources; with the default 20-s windows every second
that is 20K or 200K clips. Each size runs in its own fresh subprocess, stage by stage: ``convert_tsl300`` (streams
the windows to ``explicit.jsonl``), the ``OmniSila`` builder (``tasks`` rows per clip, default the combined one)
and ``export_parquet``; then ``load_dataset`` of the export and a pass over it. Per stage the wall time and the
process's peak RSS so far (``VmHWM``; the peak of the whole process is what matters for flatness) are printed.

    python bench/bench_p9_scale.py [--sizes 100 1000] [--tasks combined]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def _hwm_mib() -> float:
    return _status_mib("VmHWM")


class _AnonPeak:
    """Samples ``RssAnon`` (heap and other anonymous memory, i.e. without the page cache of memory-mapped Arrow
    and Parquet files that ``VmHWM`` also counts) every 10 ms in a thread and keeps the maximum."""

    def __init__(self):
        import threading

        self.peak = _status_mib("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _status_mib("RssAnon"))

    def read(self) -> float:
        self.peak = max(self.peak, _status_mib("RssAnon"))
        return self.peak


def child(num_sources: int, tasks: list[str], work: str) -> dict:
    import numpy as np

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    from datasets_scripts.builders import OmniSila
    from datasets_scripts.converters import convert_tsl300
    from datasets_scripts.export import export_parquet
    from datasets_scripts.mini_set import write_video
    from datasets_scripts.scale import write_tsl300_scale_set

    datasets.disable_progress_bars()
    work = Path(work)
    video = work / "source.mp4"
    write_video(video, np.full((200, 32, 32, 3), 90, np.uint8), fps=1)
    root = write_tsl300_scale_set(work / "VideoSenti", video, num_sources=num_sources)
    stages, base, anon = {}, _hwm_mib(), _AnonPeak()

    def stage(name, fn):
        t = time.perf_counter()
        out = fn()
        stages[name] = {"wall_s": round(time.perf_counter() - t, 2), "peak_rss_mib": round(_hwm_mib(), 1),
                        "peak_anon_mib": round(anon.read(), 1)}  # fmt: skip
        return out

    windows, _ = stage("convert", lambda: convert_tsl300(root, root / "fps_dict.json", root / "len_duration_dict.json",
                                                         root / "videos", work / "data" / "explicit.jsonl"))  # fmt: skip
    builder = OmniSila(config_name="explicit", data_dir=str(work / "data"), cache_dir=str(work / "hf"),
                       tasks=tuple(tasks))  # fmt: skip
    built = stage("build", lambda: (builder.download_and_prepare(), builder.as_dataset())[1])
    stage("export", lambda: export_parquet({"explicit": built}, work / "export"))
    built = None  # the export is what is read next
    loaded = stage("load_dataset", lambda: datasets.load_dataset(str(work / "export"), "explicit",
                                                                 cache_dir=str(work / "hf2")))  # fmt: skip
    stage("read_all", lambda: sum(len(b["answer"]) for b in loaded["train"].iter(batch_size=4096)))
    return {"clips": len(windows), "rows": sum(len(d) for d in loaded.values()), "import_rss_mib": round(base, 1),
            "stages": stages}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="numbers of 200-s sources")
    parser.add_argument("--tasks", nargs="+", default=["combined"])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.tasks, args.work)))
        return
    results = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as work:
            t = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--child", str(size), "--work", work, "--tasks", *args.tasks],
                                 capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            results[size] = json.loads(out.stdout.strip().splitlines()[-1])
            results[size]["total_s"] = round(time.perf_counter() - t, 1)
    small, large = results[args.sizes[0]], results[args.sizes[-1]]
    print(f"P9 convert + build + export + load_dataset, tasks={args.tasks}")
    print("peak so far after each stage: VmHWM (RSS incl. memory-mapped file pages) · RssAnon (heap)")
    print(f"{'stage':<14}" + "".join(f"{r['clips']:>9,} clips: s · VmHWM · anon MiB" for r in results.values()))
    for name in small["stages"]:
        print(f"{name:<14}" + "".join(
            f"{r['stages'][name]['wall_s']:>18.1f} · {r['stages'][name]['peak_rss_mib']:>5.0f} · "
            f"{r['stages'][name]['peak_anon_mib']:>5.0f}" for r in results.values()))  # fmt: skip
    wall_s = sum(s["wall_s"] for s in small["stages"].values())
    wall_l = sum(s["wall_s"] for s in large["stages"].values())
    for key, what in (("peak_rss_mib", "peak RSS (VmHWM)"), ("peak_anon_mib", "peak anonymous RSS")):
        peak_s = max(s[key] for s in small["stages"].values())
        peak_l = max(s[key] for s in large["stages"].values())
        print(f"{what}: {peak_s:.0f} MiB vs {peak_l:.0f} MiB, ratio {peak_l / peak_s:.2f}x (goal <= 1.5x)")
    print(
        f"wall {wall_s:.1f} s vs {wall_l:.1f} s: {wall_l / wall_s:.1f}x for {large['clips'] / small['clips']:.0f}x clips"
    )


if __name__ == "__main__":
    main()
