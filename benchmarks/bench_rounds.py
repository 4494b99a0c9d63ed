"""What deployment costs over simulation: the same run both ways, rounds per phase, wall times.

Starts, on 127.0.0.1, a real SuperLink with TLS and SuperNode authentication and one real
SuperNode per camera, each in its own device folder (the deployment tests' harness), runs the
small pipeline of the deployment tests there, then the same settings in simulation, and
reports both wall times (``flwr run`` to the end of the run), their ratio, the message rounds
and messages per phase of the deployed run with the seconds the server waited for replies
(``rounds.json``), and the mean hop: round trip against node-side training. Every process is
stopped by its PID.

    python benchmarks/bench_rounds.py --out rounds.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tests.flower_harness import FlowerLink, camera_network, deployed_link
from tests.test_flower_deployment import RUN


def timed_run(link: FlowerLink, config: dict, out: Path, **options) -> dict:
    """Run ``config`` to its end; wall seconds, status, and what its run directory says."""
    start = time.perf_counter()
    run_id, log = link.start_run({**config, "output-dir": str(out)}, **options)
    status = link.wait(run_id)
    seconds = time.perf_counter() - start
    if status != "finished:completed":
        raise RuntimeError(f"run ended {status}:\n{log[-3000:]}")
    run_dir = next(out.iterdir())
    hops = [json.loads(line) for line in (run_dir / "hops.jsonl").read_text().splitlines()]
    rounds = run_dir / "rounds.json"
    return {"seconds": round(seconds, 1),
            "rounds": json.loads(rounds.read_text()) if rounds.is_file() else None,
            "hop_round_trip": round(sum(h["round_trip_seconds"] for h in hops) / len(hops), 2),
            "hop_training": round(sum(h["seconds"] for h in hops) / len(hops), 2),
            "metrics": json.loads((run_dir / "metrics.json").read_text())["final"]}


def measure(root: Path, poll_interval: float | None) -> dict:
    config = dict(RUN) if poll_interval is None else {**RUN, "poll-interval": poll_interval}
    network = camera_network(root, config)
    link = deployed_link(network)
    try:
        deployed = timed_run(link, {**config, "partitions-dir": str(network["partitions"])},
                             root / "deployed-out")
    finally:
        link.stop()
    simulation = FlowerLink(root / "sim-home", {"DMNREID_CACHE": str(root / "sim-cache")})
    try:
        simulated = timed_run(simulation, config, root / "sim-out",
                              supernodes=len(network["devices"]))
    finally:
        simulation.stop()
    if simulated["metrics"] != deployed["metrics"]:
        raise RuntimeError(f"deployment {deployed['metrics']} differs from simulation "
                           f"{simulated['metrics']}")
    return {"deployed": deployed, "simulated": simulated,
            "ratio": round(deployed["seconds"] / simulated["seconds"], 2)}


def markdown(result: dict) -> str:
    deployed, simulated = result["deployed"], result["simulated"]
    lines = [f"deployed {deployed['seconds']} s, simulated {simulated['seconds']} s: "
             f"{result['ratio']}x; a deployed hop {deployed['hop_round_trip']} s round trip "
             f"around {deployed['hop_training']} s of training "
             f"(simulated: {simulated['hop_round_trip']} s)"]
    if deployed["rounds"]:
        lines += ["", "| phase | rounds | messages | seconds waiting (deployed) |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {phase} | {e['rounds']} | {e['messages']} | {e['seconds']:.1f} |"
                  for phase, e in deployed["rounds"].items()]
        total = sum(e["rounds"] for e in deployed["rounds"].values())
        lines += [f"| all | {total} | "
                  f"{sum(e['messages'] for e in deployed['rounds'].values())} | "
                  f"{sum(e['seconds'] for e in deployed['rounds'].values()):.1f} |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll-interval", type=float, default=None,
                        help="the run's poll-interval (default: the project's default)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rounds-") as tmp:
        result = measure(Path(tmp), args.poll_interval)
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
