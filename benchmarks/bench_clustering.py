"""Clustering protocol: bytes, rounds and per-node work, before (the old routing) and after.

Per network (15 cameras: the MSMT17-sized problem, ~3,900 memories, d = 2048; 30 and 60
cameras: ~260 memories each, d = 256 and 128 so that the centralised reference stays within
minutes), features = identity centre + camera offset + noise, L2-normalised, each identity seen
by 1 + Poisson(2) cameras, this prints:

- the best-of time of the centralised reference and of the protocol in-process, and a check
  that both flood reaches and ``top1-on = "server"`` give the reference's labels and edges;
- bytes and messages per message type, and the rounds, before and after. Before: the top-1
  round sent node m the banks of every camera after it (computed from the bank sizes); the
  flooding merged whole neighbour sets (replayed on the same kept graph, sizes only, as the
  old ``route_flood``/``node_flood`` counted them); the triangle reply carried no labels.
  After: measured from the protocol's rounds (array bytes, gid encoding included);
- the top-1 work per node (distances, each over d) and the banks each node receives: max and
  mean over the M nodes, before and after; the server's own top-1 time (``top1-on``);
- the top-1 bytes at N = 1,000 and d = 2,048, before and after, computed;
- for 15 cameras, what banks rounded to float16 on the wire (``feature-dtype``) change.

    python benchmarks/bench_clustering.py [--alpha 1] [--repeats 3] [--cameras 15,30,60]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import sparse

from dmnreid.memory.diagnostics import cluster_scores
from dmnreid.memory.protocol import (
    RoundStats,
    all_pairs,
    assign_pairs,
    cluster_distributed,
    mutual_top1,
)
from dmnreid.memory.reference import GlobalIds, cluster_centralised, validate_banks
from dmnreid.messages import wire_features

# cameras -> (identities, d): about 260 memories per camera
SCALES = {15: (1300, 2048), 30: (2600, 256), 60: (5200, 128)}
MB = 1e6
# the old flooding held every memory's whole set (O(C^2) for a component of C memories): it is
# replayed up to this component size, above it only a lower bound is computed
REPLAY_LIMIT = 2000


def make_banks(cameras: int = 15, identities: int = 1300, dim: int = 2048, seed: int = 0,
               camera_gap: float = 0.6, noise: float = 0.8
               ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Banks per camera (1..cameras) and the true identity of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((identities, dim)).astype(np.float32) / np.sqrt(dim)
    offsets = camera_gap * rng.standard_normal((cameras, dim)).astype(np.float32) / np.sqrt(dim)
    # each identity walks past 1 + Poisson(2) cameras (MSMT17-like: most ids in a few cameras)
    seen = np.minimum(1 + rng.poisson(2.0, identities), cameras)
    rows: dict[int, list[int]] = {c: [] for c in range(1, cameras + 1)}
    for ident, k in enumerate(seen):
        for cam in rng.choice(cameras, size=k, replace=False):
            rows[int(cam) + 1].append(ident)
    banks, truth = {}, {}
    for cam, idents in rows.items():
        ids = np.array(idents, np.int64)
        noise_part = noise * rng.standard_normal((len(ids), dim)).astype(np.float32) / np.sqrt(dim)
        feats = centres[ids] + offsets[cam - 1] + noise_part
        banks[cam] = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        truth[cam] = ids
    return banks, truth


def best_of(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, tuple]:
    """Per run: (best seconds, result of the best call). The runs are interleaved, so a burst
    of load on this shared machine does not land on one of them only."""
    best: dict[str, tuple] = {name: (float("inf"), None) for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            result = fn()
            seconds = time.perf_counter() - start
            if seconds < best[name][0]:
                best[name] = (seconds, result)
    return best


def old_top1(ids: GlobalIds, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Before: node m got the banks of the cameras after it (features float32, camera and label
    int64 per row) and judged those pairs: (bytes received, distances, banks) per node."""
    after = ids.total - ids.ends
    banks = np.arange(ids.cameras.size)[::-1]
    return after * (4 * dim + 16) + ids.nbytes, ids.sizes * after, banks


def new_top1(ids: GlobalIds, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """After: (bytes received, distances, banks) per node from the balanced blocks (0: no
    block), as ``route_top1`` builds the payloads: the other cameras' rows and the pairs."""
    out = np.zeros((3, ids.cameras.size), np.int64)
    for runner, pairs in assign_pairs(ids).items():
        others = set(pairs.ravel().tolist()) - {runner}
        rows = sum(ids.size(c) for c in others)
        out[:, ids.index(runner)] = (rows * (4 * dim + 16) + pairs.nbytes + ids.nbytes,
                                     sum(ids.size(a) * ids.size(b) for a, b in pairs.tolist()),
                                     len(others))
    return out[0], out[1], out[2]


def old_flood(kept: np.ndarray, ids: GlobalIds, reach: str) -> list[tuple[int, int]]:
    """Before: the set flooding replayed on the kept graph, (bytes sent, received) per round.

    Node m got its kept edges, its memories' sets and the sets of their neighbours (``edges``)
    or of every member of its sets (``sets``), 16 bytes a pair, and returned the sets grown by
    every relayed set they touch, plus a label per memory; the server stopped after the first
    round in which nothing grew or after which nothing would grow.
    """
    total = ids.total
    u, v = np.r_[kept[:, 0], kept[:, 1]], np.r_[kept[:, 1], kept[:, 0]]
    adj = sparse.csr_matrix((np.ones(len(u), bool), (u, v)), shape=(total, total))
    eye = sparse.identity(total, dtype=bool, format="csr")
    sets, rounds, grew = adj, [], True
    while True:
        parts, sent, received = [], 0, 0
        for lo, hi in zip(ids.offsets, ids.ends, strict=True):
            edges, own = adj[lo:hi], sets[lo:hi]
            wanted = np.unique(edges.indices if reach == "edges"
                               else np.r_[edges.indices, own.indices])
            known = ((own + edges + eye[lo:hi]) > 0).astype(np.int32)
            relay = sparse.csr_matrix((np.ones(len(wanted), np.int32), (wanted, wanted)),
                                      shape=(total, total))
            grown = ((known + known @ relay @ sets.astype(np.int32)) > 0).tocsr()
            sent += 16 * (edges.nnz + own.nnz + sets[wanted].nnz) + ids.nbytes
            received += 16 * grown.nnz + 8 * (hi - lo) + 8
            parts.append(grown)
        new = sparse.vstack(parts).tocsr() if parts else sets
        if rounds and (not grew or new.nnz == sets.nnz):
            return rounds  # the server saw the round it would send change nothing
        grew = new.nnz != ((sets + adj + eye) > 0).nnz
        rounds.append((sent, received))
        sets = new


def by_type(rounds: list[RoundStats]) -> dict[str, tuple[int, int, int, int]]:
    """Message type -> (rounds, messages, bytes sent, bytes received)."""
    out: dict[str, tuple[int, int, int, int]] = {}
    for r in rounds:
        kind = r.name.partition("-")[0]
        n, m, s, b = out.get(kind, (0, 0, 0, 0))
        out[kind] = (n + 1, m + r.messages, s + r.bytes_sent, b + r.bytes_received)
    return out


def row(name: str, before: tuple | None, after: tuple) -> str:
    def cell(rounds: int, messages: int, sent: int, received: int) -> str:
        return f"{rounds:>4}{messages:>6}{sent / MB:>10.2f}{received / MB:>9.2f}"
    return f"{name:<16}{cell(*before) if before else 'not replayed':>29}   {cell(*after)}"


def per_node(name: str, before: np.ndarray, after: np.ndarray, unit: float, what: str) -> str:
    return (f"{name:<28} before max {before.max() / unit:8.2f} mean {before.mean() / unit:8.2f}"
            f" | after max {after.max() / unit:8.2f} mean {after.mean() / unit:8.2f} {what}")


def report(cameras: int, identities: int, dim: int, alpha: int, repeats: int) -> None:
    banks, truth = make_banks(cameras=cameras, identities=identities, dim=dim)
    ids, feats = validate_banks(banks)
    print(f"\n=== {cameras} cameras, {ids.total} memories, d={dim}, alpha={alpha} ===")
    timed = best_of(repeats, {
        "reference": lambda: cluster_centralised(banks, alpha),
        "edges": lambda: cluster_distributed(banks, alpha, reach="edges"),
        "sets": lambda: cluster_distributed(banks, alpha, reach="sets"),
        "server": lambda: cluster_distributed(banks, alpha, reach="sets", top1_on="server"),
    })
    t_ref, ref = timed["reference"]
    same = all(np.array_equal(ref.cluster_of, res.cluster_of)
               and np.array_equal(ref.mutual_edges, res.mutual_edges)
               and np.array_equal(ref.kept_edges, res.kept_edges)
               for res, _ in (timed[k][1] for k in ("edges", "sets", "server")))
    print(f"reference {t_ref:.2f} s; protocol in-process (best of {repeats}): "
          + ", ".join(f"{k} {timed[k][0]:.2f} s ({timed[k][0] / t_ref:.2f}x)"
                      for k in ("edges", "sets", "server")))
    print(f"labels and edges identical (reference; reach edges, sets; top1-on server): {same}")
    if not same:
        raise SystemExit("MISMATCH between the centralised reference and the protocol")
    flat_truth = np.concatenate([truth[c] for c in sorted(truth)])
    scores = cluster_scores(ref.cluster_of, flat_truth)
    component = np.bincount(np.unique(ref.cluster_of, return_inverse=True)[1])
    print(f"edges: mutual top-1 {ref.edges_mutual}, kept {ref.edges_kept}; clusters "
          f"{ref.clusters}, the largest {component.max()}; precision {scores['precision']:.3f} "
          f"recall {scores['recall']:.3f} NMI {scores['nmi']:.3f}")

    memory = (1, cameras, 0, sum(b.nbytes for b in feats.values()))
    old_sent, old_work, old_banks = old_top1(ids, dim)
    new_sent, new_work, new_banks = new_top1(ids, dim)
    print(f"\n{'':<16}{'before: rounds msgs   sent MB  recv MB':>39}   "
          f"{'after: rounds msgs   sent MB  recv MB':>39}")
    totals = {}
    for reach in ("edges", "sets"):
        rounds = timed[reach][1][1]
        after = by_type(rounds)
        top1, tri = after["top1"], after["triangle"]
        assert new_sent.sum() == top1[2], "the computed top-1 bytes must be those measured"
        before_top1 = (1, cameras, int(old_sent.sum()), top1[3])
        before_tri = (*tri[:3], tri[3] - 8 * ids.total)  # no labels in the old reply
        before_flood = None
        if component.max() <= REPLAY_LIMIT:
            flood = old_flood(ref.kept_edges, ids, reach)
            before_flood = (len(flood), cameras * len(flood), sum(s for s, _ in flood),
                            sum(r for _, r in flood))
        if reach == "edges":
            print(row("memory (up)", memory, memory))
            print(row("top1", before_top1, top1))
            print(row("triangle", before_tri, tri))
        print(row(f"flood ({reach})", before_flood, after["flood"]))
        totals[reach] = before_flood and [
            sum(x) for x in zip(memory, before_top1, before_tri, before_flood, strict=True)], \
            [sum(x) for x in zip(memory, top1, tri, after["flood"], strict=True)]
    for reach, (before, after) in totals.items():
        print(row(f"total ({reach})", before, after))
    if component.max() > REPLAY_LIMIT:
        floor = 16 * int((component.astype(np.int64) ** 2).sum())
        print(f"flooding before, not replayed (a component of {component.max()} memories): "
              f"its last round's replies alone held every memory's whole set, >= "
              f"{floor / MB:,.0f} MB")
    flood_rounds = [r for r in timed["sets"][1][1] if r.name.startswith("flood")]
    print("flood rounds after, reach sets (MB sent/received each): " + ", ".join(
        f"{r.bytes_sent / MB:.3f}/{r.bytes_received / MB:.3f}" for r in flood_rounds))

    print()
    print(per_node("top-1 banks received", old_banks, new_banks, 1, "banks"))
    print(per_node("top-1 bytes received", old_sent, new_sent, MB, "MB"))
    print(per_node("top-1 distances", old_work, new_work, 1e6, "million (x d)"))
    start = time.perf_counter()
    mutual_top1(feats, all_pairs(ids), ids)
    print(f"top1-on = server: {time.perf_counter() - start:.2f} s for all "
          f"{cameras * (cameras - 1) // 2} pairs on one machine, no top-1 round (its banks "
          "came with the memory round); on nodes the slowest does "
          f"{new_work.max() / new_work.sum():.1%} of that work")

    sizes = GlobalIds(ids.cameras, np.full(cameras, 1000))
    print(f"at N = 1,000, d = 2,048: top-1 round sends {old_top1(sizes, 2048)[0].sum() / 1e9:.2f}"
          f" GB before, {new_top1(sizes, 2048)[0].sum() / 1e9:.2f} GB after (the banks "
          f"themselves: {cameras * 1000 * 2048 * 4 / 1e9:.2f} GB)")

    if cameras == 15:
        half = {c: wire_features(b, "float16").astype(np.float32) for c, b in banks.items()}
        rounded = cluster_centralised(half, alpha)
        half_nmi = cluster_scores(rounded.cluster_of, flat_truth)["nmi"]
        print(f"feature-dtype float16 (banks {memory[3] / 2e6:.1f} MB instead of "
              f"{memory[3] / MB:.1f}): edges kept {rounded.edges_kept} vs {ref.edges_kept}, "
              f"clusters {rounded.clusters} vs {ref.clusters}, NMI {half_nmi:.4f} vs "
              f"{scores['nmi']:.4f} (float32)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cameras", default="15,30,60",
                        help=f"networks to run, of {sorted(SCALES)}")
    args = parser.parse_args()
    for cameras in (int(c) for c in args.cameras.split(",")):
        report(cameras, *SCALES[cameras], args.alpha, args.repeats)


if __name__ == "__main__":
    main()
