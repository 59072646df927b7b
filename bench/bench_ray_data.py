"""Data on Ray Data at growing sizes: import + 5-core + holdout, time and peak memory.

The target (issue 15): at 100 M synthetic interactions, import + 5-core + holdout split on Ray
Data with a peak memory <= 6 GB (streaming); the time, and the ratio to the single-process
path at 20 M, where that path still fits.

For each size the synthetic generator (``privrank.data.synthetic``, users = rows / 100, items =
rows / 500, ratings and timestamps) writes one Parquet file with 1 M-row row groups, block by
block (never whole in memory). Then each engine runs in a fresh Python process, the same two
steps on the same file:

- ``local``: ``read_interactions`` → ``curate`` (k-core 5) → ``save``; ``split`` (holdout 0.2,
  seed 0) → ``save``;
- ``ray``: ``import_on_ray`` (k-core 5) → ``split_on_ray`` (holdout 0.2, seed 0), on one local
  Ray instance of 2 CPUs with a 512 MiB object store, started first (as a running cluster
  would be); its start-up is reported apart (``ray_start_s``) and not in ``total_s``.

Peak memory is the largest sum of the RSS of the child and all its descendants (the Ray head
processes and workers), sampled every 0.1 s by this process. Shared pages (the object store)
are counted once per process that maps them, so this over-states the true footprint. The
fingerprint and the split counts of both engines are compared at the sizes where both run.

Usage::

    .venv/bin/python bench/bench_ray_data.py --sizes 1e6 5e6 20e6 --local-up-to 20e6
    .venv/bin/python bench/bench_ray_data.py --sizes 100e6 --local-up-to 0   # ray only
    .venv/bin/python bench/bench_ray_data.py --plot bench/results/ray_data.json
    PRIVRANK_BENCH_PART_ROWS=250000 .venv/bin/python bench/bench_ray_data.py --nodes 1 2 3 \
        --node-rows 2e6   # node-count curve, 8 partitions a pass
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

TARGET_PEAK_GB = 6.0


def write_input(rows: int, path: Path) -> dict:
    """Generate ``rows`` synthetic interactions into one Parquet file, block by block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from privrank.data.synthetic import SyntheticConfig, iter_blocks

    config = SyntheticConfig(
        n_users=max(rows // 100, 10),
        n_items=max(rows // 500, 10),
        n_interactions=rows,
        seed=0,
    )
    start = time.perf_counter()
    schema = pa.schema(
        [
            ("user", pa.int64()),
            ("item", pa.int64()),
            ("timestamp", pa.int64()),
            ("rating", pa.float32()),
        ]
    )
    pending: list[pa.Table] = []
    pending_rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for block in iter_blocks(config):
            pending.append(
                pa.table(
                    {
                        "user": block.users.astype("int64"),
                        "item": block.items.astype("int64"),
                        "timestamp": block.timestamps,
                        "rating": block.values,
                    },
                    schema=schema,
                )
            )
            pending_rows += len(block.users)
            if pending_rows >= 1_000_000:
                writer.write_table(pa.concat_tables(pending), row_group_size=1_000_000)
                pending, pending_rows = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=1_000_000)
    return {
        "users": config.n_users,
        "items": config.n_items,
        "write_s": time.perf_counter() - start,
        "bytes": path.stat().st_size,
    }


def child(engine: str, source: str, work: str) -> dict:
    """One engine's import + 5-core + holdout on ``source`` (run in a fresh process)."""
    from privrank.data.curation import CurationConfig
    from privrank.data.readers import ReadOptions

    options = ReadOptions(
        format="parquet",
        user_col="user",
        item_col="item",
        time_col="timestamp",
        value_col="rating",
        name="synthetic",
    )
    curation = CurationConfig(k_core={"user_k": 5, "item_k": 5})
    spec = {"protocol": "holdout", "fraction": 0.2, "seed": 0}
    out = Path(work)
    times = {}
    start = time.perf_counter()
    if engine == "local":
        from privrank.data.curation import curate
        from privrank.data.readers import read_interactions
        from privrank.data.splits import split

        data = curate(read_interactions(source, options).interactions, curation)
        data.save(out / "dataset")
        times["import_s"] = time.perf_counter() - start
        result = split(data, spec)
        result.save(out / "split")
        counts, fingerprint, rows = result.counts, result.source.fingerprint, len(data)
    else:
        import ray

        from privrank.distributed.ray_data import RayDataOptions, import_on_ray, split_on_ray

        # one Ray instance for both commands, as on a running cluster; its start is timed apart
        if engine.startswith("nodes-"):  # a local multi-node cluster, one CPU a node
            from ray.cluster_utils import Cluster

            cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 0, "object_store_memory": 256 * 2**20},
            )
            for _ in range(int(engine.split("-")[1])):
                cluster.add_node(num_cpus=1, object_store_memory=256 * 2**20)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(
                num_cpus=2,
                object_store_memory=512 * 2**20,
                include_dashboard=False,
                log_to_driver=False,
            )
        times["ray_start_s"] = time.perf_counter() - start
        start = time.perf_counter()
        engine_options = RayDataOptions(
            part_rows=int(os.environ.get("PRIVRANK_BENCH_PART_ROWS", "2000000"))
        )
        imported = import_on_ray(
            source, options, out / "dataset", curation=curation, engine=engine_options
        )
        times["import_s"] = time.perf_counter() - start
        result = split_on_ray(out / "dataset", spec, out / "split", engine=engine_options)
        counts, fingerprint, rows = result.counts, result.source.fingerprint, imported.rows
        ray.shutdown()
        if engine.startswith("nodes-"):
            cluster.shutdown()
    times["total_s"] = time.perf_counter() - start
    times["split_s"] = times["total_s"] - times["import_s"]
    return {
        **times,
        "rows_after_5core": rows,
        "fingerprint": fingerprint,
        "counts": {name: c.__dict__ for name, c in counts.items()},
    }


def run_with_tree_peak(command: list[str]) -> tuple[str, int]:
    """Run ``command``; return its stdout and the peak RSS (bytes) of its whole process tree
    (the process and all its descendants, e.g. Ray's head processes and workers), sampled
    every 0.1 s. Shared pages count once per process, so this over-states a tree's footprint.

    Raises:
        RuntimeError: The command failed.
    """
    from privrank.testing import PeakTreeMemory

    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    with PeakTreeMemory(process.pid, interval=0.1) as peak:
        output, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[1:3]} failed with exit code {process.returncode}")
    return output, peak.bytes


def measure(engine: str, source: Path, work: Path) -> dict:
    """Run :func:`child` in a fresh process; sample the RSS of its whole process tree."""
    output, peak = run_with_tree_peak(
        [sys.executable, __file__, "--child", engine, str(source), str(work)]
    )
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_tree_rss_gb"] = peak / 2**30
    return result


def plot(results: list[dict], path: Path, nodes: list[dict] | None = None) -> None:
    """Time and peak memory against size, both engines (and the node curve), in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if nodes is None and path.with_suffix(".json").is_file():
        nodes = json.loads(path.with_suffix(".json").read_text()).get("nodes")
    columns = 3 if nodes else 2
    figure, axes = plt.subplots(1, columns, figsize=(5.5 * columns, 4.2))
    left, right = axes[0], axes[1]
    if nodes:
        third = axes[2]
        counts = [n["nodes"] for n in nodes]
        third.plot(counts, [n["total_s"] for n in nodes], "s-")
        third.set_xlabel(f"one-CPU nodes (local cluster), {nodes[0]['rows'] / 1e6:g}M rows")
        third.set_ylabel("Ray path: import + 5-core + holdout (s)")
        third.set_xticks(counts)
        third.grid(alpha=0.3)
    for engine, style in (("local", "o-"), ("ray", "s-")):
        points = sorted((r["rows"], r[engine]) for r in results if r.get(engine) is not None)
        if not points:
            continue
        sizes = [p[0] / 1e6 for p in points]
        left.plot(sizes, [p[1]["total_s"] for p in points], style, label=engine)
        right.plot(sizes, [p[1]["peak_tree_rss_gb"] for p in points], style, label=engine)
    right.axhline(TARGET_PEAK_GB, color="grey", linestyle="--", label="target 6 GB")
    for axis, label in (
        (left, "import + 5-core + holdout (s)"),
        (right, "peak RSS, process tree (GB)"),
    ):
        axis.set_xlabel("synthetic interactions (millions)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("Data on Ray Data vs one process (2-core 24 GB machine, shared)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def node_curve(args: argparse.Namespace) -> None:
    """Time and peak memory of the Ray path on local clusters of 1, 2, 3... one-CPU nodes."""
    rows = int(args.node_rows)
    work_root = Path(tempfile.mkdtemp(prefix="bench-ray-nodes-", dir=args.work))
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {"results": []}
    try:
        source = work_root / "input.parquet"
        write_input(rows, source)
        curve = []
        for nodes in args.nodes:
            work = work_root / f"nodes-{nodes}"
            work.mkdir()
            result = measure(f"nodes-{nodes}", source, work)
            shutil.rmtree(work)
            result.pop("counts")
            curve.append({"nodes": nodes, "rows": rows, **result})
            print(f"  {nodes} node(s): {result}", flush=True)
        stored = json.loads(args.out.read_text()) if args.out.is_file() else stored
        stored["nodes"] = curve
        args.out.write_text(json.dumps(stored, indent=2) + "\n")
        plot(stored["results"], args.out.with_suffix(".png"), curve)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 5e6, 20e6])
    parser.add_argument("--local-up-to", type=float, default=20e6)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ray_data.json"))
    parser.add_argument("--plot", type=Path, default=None, help="Only plot this results file.")
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "SOURCE", "WORK"))
    parser.add_argument(
        "--nodes",
        nargs="+",
        type=int,
        default=None,
        help="Node-count curve instead: a local cluster of N one-CPU nodes, at --node-rows.",
    )
    parser.add_argument("--node-rows", type=float, default=2e6)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    if args.plot:
        results = json.loads(args.plot.read_text())["results"]
        plot(results, args.plot.with_suffix(".png"))
        return
    if args.nodes:
        node_curve(args)
        return
    previous = json.loads(args.out.read_text())["results"] if args.out.is_file() else []
    by_size = {r["rows"]: r for r in previous}
    work_root = Path(tempfile.mkdtemp(prefix="bench-ray-data-", dir=args.work))
    try:
        for size in args.sizes:
            rows = int(size)
            source = work_root / f"input-{rows}.parquet"
            entry: dict = {"rows": rows, "input": write_input(rows, source)}
            print(f"{rows:,} rows: input {entry['input']}", flush=True)
            for engine in ("local", "ray"):
                if engine == "local" and rows > args.local_up_to:
                    entry[engine] = None
                    continue
                work = work_root / f"{engine}-{rows}"
                work.mkdir()
                entry[engine] = measure(engine, source, work)
                shutil.rmtree(work)
                shown = {k: v for k, v in entry[engine].items() if k not in ("counts",)}
                print(f"  {engine}: {shown}", flush=True)
            if entry.get("local") and entry.get("ray"):
                entry["same_fingerprint"] = (
                    entry["local"]["fingerprint"] == entry["ray"]["fingerprint"]
                )
                entry["same_counts"] = entry["local"]["counts"] == entry["ray"]["counts"]
                entry["ratio_ray_over_local"] = entry["ray"]["total_s"] / entry["local"]["total_s"]
                print(
                    f"  same fingerprint {entry['same_fingerprint']}, same counts "
                    f"{entry['same_counts']}, ray/local time {entry['ratio_ray_over_local']:.2f}",
                    flush=True,
                )
            source.unlink()
            by_size[rows] = entry
            results = [by_size[k] for k in sorted(by_size)]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(
                json.dumps(
                    {
                        "date": datetime.now(UTC).isoformat(timespec="seconds"),
                        "machine": f"{platform.node()}: 2-core 24 GB, shared with parallel work",
                        "results": results,
                    },
                    indent=2,
                )
                + "\n"
            )
            plot(results, args.out.with_suffix(".png"))
    finally:
        shutil.rmtree(work_root, ignore_errors=True)


if __name__ == "__main__":
    main()
