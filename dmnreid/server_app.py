"""ServerApp: runs the phases in order and writes the run directory.

Phases: set-up (data, weights, nodes), style transfer, direct-transfer baseline, random walk,
distributed clustering, incremental random walk, unification, final evaluation. Each hop is
checkpointed; ``resume-from`` continues a run from its last finished hop (an interrupted style
transfer continues from each node's own checkpoint).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from dmnreid.checks import StateError, check_state
from dmnreid.compute import resolve_device
from dmnreid.config import ConfigError, RunConfig, defaults
from dmnreid.data_prep.partition import read_partition
from dmnreid.memory.prototypes import build_memory
from dmnreid.messages import (
    CLASSES,
    HEAD,
    PROTOTYPES,
    WEIGHTS,
    Answers,
    NodeError,
    arrays_record,
    as_sent,
    ask_nodes,
    metrics_of,
    record_state,
    state_record,
)
from dmnreid.prepare import prepare_partitions
from dmnreid.provenance import check_same_weights, run_provenance, short
from dmnreid.reid.camera_bn import state_bytes, without_bn_statistics
from dmnreid.reid.evaluator import Evaluator
from dmnreid.reid.model import (
    ReidNet,
    build_model,
    new_head,
    resolve_weights,
    stem_digest,
    walking_state,
    weights_digest,
)
from dmnreid.reid.pretrain import ensure_source_weights
from dmnreid.rounds import RoundsGrid, added
from dmnreid.run_dir import PROVENANCE, REEVALUATIONS, WALKING_JSON, RunDir
from dmnreid.strategies.camera_training import CameraFedAvg, CameraWalk, train_steps
from dmnreid.strategies.clustering import GlobalLabels, check_oracle, cluster_phase, oracle_phase
from dmnreid.strategies.evaluation import evaluate_state
from dmnreid.strategies.hops import Hop, SkippedHop, State
from dmnreid.strategies.pretrained import distribute_weights
from dmnreid.strategies.roster import Roster, camera_of_info, info_message
from dmnreid.strategies.style import STYLE_JSON, style_phase
from dmnreid.strategies.unification import pick_one, running_mean
from dmnreid.strategies.walkers import Walkers, check_walkers, evaluates_after, step_number

app = ServerApp()
DEFAULTS = defaults()
NETWORK_JSON = "network.json"
ROUNDS_JSON = "rounds.json"
MESSAGES_JSON = "messages.json"


# how long to wait, how often to retry, where to compute: a resumed run may need other values
# than it started with (a slower link, a node known to be gone, a GPU); they do not change
# what is trained
OPERATIONAL = ("node-timeout", "hop-timeout", "node-retries", "probe-interval", "device",
               "poll-interval")


def resolve_config(cfg: RunConfig) -> RunConfig:
    """The run's settings: these, or with ``resume-from`` the saved ones of that run (with
    this call's OPERATIONAL settings where it sets them).

    Nothing is written here: a setting that cannot be used stops the run before any run
    directory exists.
    """
    if not cfg.resume_from:
        return cfg
    run = RunDir.resume(Path(cfg.resume_from).expanduser())
    given = cfg.to_mapping()
    changed = {k: given[k] for k in OPERATIONAL if given[k] != DEFAULTS[k]}
    saved = RunConfig.from_mapping({**run.read_json("config.json"), **changed,
                                    "resume-from": cfg.resume_from})
    ignored = sorted(k for k, v in given.items() if k != "resume-from" and k not in changed
                     and v != DEFAULTS[k] and v != saved.to_mapping()[k])
    if ignored:
        log(WARNING, "resume-from continues with the run's saved settings; ignoring %s",
            ", ".join(f"{k} = {given[k]!r}" for k in ignored))
    return saved


def open_run(cfg: RunConfig) -> RunDir:
    """A new run directory, or the one named by ``resume-from``."""
    if cfg.resume_from:
        run = RunDir.resume(Path(cfg.resume_from).expanduser())
        log(INFO, "Resuming %s", run.path)
        return run
    output = Path(cfg.output_dir).expanduser() if cfg.output_dir else Path.cwd() / "outputs"
    run = RunDir.create(output.resolve(), cfg.run_name or f"{cfg.dataset}-{cfg.arch}")
    run.write_json("config.json", cfg.to_mapping())
    log(INFO, "Run directory: %s", run.path)
    return run


def with_provenance(cfg: RunConfig, record: dict) -> dict:
    """The run's metrics so far (a resumed run's, or none), with what it is computed from
    (``provenance``). A resumed run must go on from the weights it started from (each resume
    adds its kernel path); one from before runs recorded them goes on with a warning."""
    if not cfg.resume_from:
        return {PROVENANCE: record}
    path = Path(cfg.resume_from).expanduser()
    metrics = RunDir.resume(path).read_json("metrics.json")
    saved = metrics.get(PROVENANCE)
    if not saved:
        log(WARNING, "%s does not record the pretrained weights it started from; it goes on "
            "with %s (sha256 %s)", path, cfg.pretrained_weights, short(record["weights-sha256"]))
        return {**metrics, PROVENANCE: record}
    check_same_weights(saved, record, f"The run {path}")
    saved.setdefault("resumed", []).append(
        {k: record[k] for k in ("cpu-capability", "torch", "python")})
    return metrics


def pretrained_file(cfg: RunConfig) -> Path | None:
    if cfg.pretrained_weights == "synthetic-source":
        return ensure_source_weights(cfg)
    if cfg.pretrained_weights == "none" and cfg.bn_statistics == "frozen":
        log(WARNING, "pretrained-weights = 'none' with bn-statistics = 'frozen' keeps the BN "
            "statistics of a random initialisation; consider bn-statistics = 'update'")
    return resolve_weights(cfg.pretrained_weights, cfg.arch)


@dataclass(frozen=True)
class Network:
    """The cameras of a run: [(node id, camera)] of those present, sorted by camera, each
    camera's number of tracklets as its node reports it, (a resumed run) the cameras without
    a node now, with why, and the cameras whose node already holds the pretrained weights."""

    nodes: list[tuple[int, int]]
    tracklets: dict[int, int]
    missing: dict[int, str] = field(default_factory=dict)
    holding: set[int] = field(default_factory=set)


def expected_cameras(cfg: RunConfig, partitions: Path | None) -> list[int] | int:
    """The partition's cameras, or with ``dataset = "devices"`` how many devices to expect."""
    return [n["camera"] for n in read_partition(partitions)["nodes"]] if partitions \
        else cfg.cameras


def discover_nodes(grid: Grid, cameras: list[int] | int, partitions: Path | None,
                   timeout: float, target_camera: int,
                   known: dict[int, int] | None = None, weights_sha256: str = "") -> Network:
    """Wait for one node per camera and ask each which camera it holds (``query.info``) and
    whether it holds the pretrained weights ``weights_sha256``.

    ``cameras``: the partition's cameras, or (``dataset = "devices"``) only their number: then
    whatever distinct cameras the devices hold make the network. ``known``: a resumed run's
    cameras and tracklet counts; it goes on without the cameras that do not answer in time.
    """
    if known:
        cameras = sorted(known)
    count = cameras if isinstance(cameras, int) else len(cameras)
    deadline = time.monotonic() + timeout
    node_ids: list[int] = []
    while len(node_ids) < count and time.monotonic() < deadline:
        node_ids = list(grid.get_node_ids())
        time.sleep(0.5)
    if len(node_ids) < count and not (known and node_ids):
        raise NodeError(
            f"{count} cameras need {count} nodes, only {len(node_ids)} connected "
            f"within node-timeout = {timeout:g} s. In simulation, give the federation one "
            f"SuperNode per camera (--federation-config \"num-supernodes={count}\"); "
            "in deployment, start one flower-supernode per camera, or raise node-timeout if "
            "they are still starting")
    partition_dir = str(partitions) if partitions else ""
    replies = grid.send_and_receive(
        [info_message(n, partition_dir, weights_sha256) for n in node_ids], timeout=timeout)
    holders: dict[int, list[int]] = {}
    tracklets: dict[int, int] = {}
    holding: set[int] = set()
    failures = []
    for reply in replies:
        answer = camera_of_info(reply)
        if reply.has_error():
            failures.append(reply.error.reason)
        elif answer is not None:
            holders.setdefault(answer[0], []).append(reply.metadata.src_node_id)
            tracklets[answer[0]] = answer[1]
            if int(metrics_of(reply.content).get("held", 0)):
                holding.add(answer[0])
    wanted = set(holders) if isinstance(cameras, int) else set(cameras)
    missing = sorted(wanted - set(holders))
    doubled = sorted(c for c, ids in holders.items() if len(ids) > 1)
    if doubled or (not known and (missing or len(wanted) < count)) or not holders:
        raise NodeError(f"cameras without a node: {missing}; cameras on several nodes: "
                        f"{doubled}; cameras found: {sorted(holders)} of {count} expected"
                        + "".join(f"; a node failed: {why}" for why in failures))
    if known:
        changed = {c: (tracklets[c], known[c]) for c in holders if c in known
                   and tracklets[c] != known[c]}
        if changed:
            raise NodeError("the run continues only on the data it started with: " + "; ".join(
                f"camera {c} now holds {now} tracklets, {then} when the run started"
                for c, (now, then) in sorted(changed.items())))
        return Network([(holders[c][0], c) for c in sorted(wanted) if c in holders],
                       dict(known), {c: f"no node answered within node-timeout = {timeout:g} s "
                                        "when the run resumed" for c in missing}, holding)
    if target_camera not in wanted:
        raise ConfigError(f"target-camera = {target_camera}: no node holds that camera "
                          f"(cameras {sorted(wanted)})")
    return Network([(holders[c][0], c) for c in sorted(wanted)],
                   {c: tracklets[c] for c in sorted(wanted)}, holding=holding)


def log_scores(stage: str, hop: int, scores: dict[str, float]) -> None:
    log(INFO, "[%s, %d hops] rank-1 %.1f  rank-5 %.1f  rank-10 %.1f  mAP %.1f", stage, hop,
        scores["rank1"], scores["rank5"], scores["rank10"], scores["mAP"])


def node_settings(cfg: RunConfig, partitions: Path | None, run: RunDir,
                  weights_sha256: str) -> dict:
    """What every message carries: where the data is (simulation), the run, its settings, and
    the pretrained weights by sha256 (each node holds its own copy: ``query.pretrained``)."""
    return {"partition-dir": str(partitions) if partitions else "", "run-key": run.path.name,
            "run-config": json.dumps(cfg.to_mapping()), "weights-sha256": weights_sha256}


def server_evaluator(cfg: RunConfig, partitions: Path | None) -> Evaluator | None:
    """The server's copy of the test images, only when the server evaluates."""
    if cfg.eval_mode == "server" and partitions is not None:
        return Evaluator(partitions, cfg.image_height, cfg.image_width,
                         device=resolve_device(cfg.device))
    return None


def record_walking_bytes(run: RunDir, model: ReidNet, cfg: RunConfig) -> None:
    """How much of the walking state BN statistics are, and whether they travel."""
    shared = walking_state(model, cfg.freeze_stem, "shared")
    statistics = state_bytes(shared) - state_bytes(without_bn_statistics(shared))
    travelling = walking_state(model, cfg.freeze_stem, cfg.bn_mode)
    run.write_json(WALKING_JSON, {
        "bn-mode": cfg.bn_mode, "tensors": len(travelling), "bytes": state_bytes(travelling),
        "bn-statistics-bytes": statistics, "bn-statistics-travel": cfg.bn_mode == "shared"})
    log(INFO, "Walking state: %d tensors, %.2f MB; BN statistics (%.1f kB) %s", len(travelling),
        state_bytes(travelling) / 1e6, statistics / 1e3,
        "travel with it" if cfg.bn_mode == "shared" else "stay on each camera's node")


@dataclass
class Session:
    """What every phase of one run shares."""

    grid: RoundsGrid
    cfg: RunConfig
    run: RunDir
    network: Network
    roster: Roster
    model: ReidNet
    evaluator: Evaluator | None
    base_config: dict
    metrics: dict = field(default_factory=dict)
    network_events: int = -1  # the roster's events when network.json was last written

    @property
    def nodes(self) -> list[tuple[int, int]]:
        """(node id, camera) of the cameras taking part now."""
        return self.roster.live()

    def evaluate(self, state: State, stage: str, hop: int) -> dict | None:
        """Scores of ``state``, recorded in evaluations.jsonl (None with eval-mode none);
        federated scores over fewer cameras list the missing ones."""
        if self.cfg.eval_mode == "none":
            return None
        with self.grid.phase("evaluation"):
            if self.cfg.eval_mode == "federated":
                self.roster.begin_phase(self.grid, "evaluation")
            scores = evaluate_state(state, self.cfg, self.model, self.evaluator, self.grid,
                                    self.nodes, self.base_config)
        out = sorted(self.roster.out)
        if self.cfg.eval_mode == "federated" and out:
            scores["missing-cameras"] = sorted({*scores.get("missing-cameras", []), *out})
        for camera in scores.get("missing-cameras", []):
            if camera not in self.roster.out:
                self.roster.failed(camera, "evaluation", "no answer to query.embed")
        self.run.append("evaluations.jsonl", {"stage": stage, "hop": hop, **scores})
        log_scores(stage, hop, scores)
        return scores

    def save_network(self) -> None:
        """network.json: every camera, its node, which are left out and why, and each
        failure and return so far, written only when the roster changed (every change of a
        node or of the cameras left out adds an event): not after every hop, as it grows
        with the events. rounds.json: the message rounds per phase so far; messages.json:
        the messages, replies and their bytes per message type and phase so far (both of a
        size fixed by the phases and message types, whatever the run's length)."""
        if len(self.roster.events) != self.network_events:
            self.run.write_json(NETWORK_JSON, {
                "cameras": {str(c): n for c, n in self.network.tracklets.items()},
                "nodes": {str(c): n for c, n in self.roster.nodes.items()},
                "left_out": {str(c): why for c, why in sorted(self.roster.out.items())},
                "events": self.roster.events})
            self.network_events = len(self.roster.events)
        self.run.write_json(ROUNDS_JSON, self.grid.rounds)
        self.run.write_json(MESSAGES_JSON, self.grid.messages)

    def record(self, stage: str, state: State, hop: int, again: bool = False) -> None:
        """Score ``state`` as ``stage`` of metrics.json; once, unless ``again`` (a resumed
        run keeps what it measured before)."""
        if stage in self.metrics and not again:
            return
        scores = self.evaluate(state, stage, hop)
        if scores is not None:
            self.metrics[stage] = scores
            self.run.write_metrics(self.metrics)


def walk_phase(session: Session, phase: str, state: State, steps: int, seed: int, start: int,
               offset: int, payload=None, head: State | None = None,
               stop: int | None = None, head_like: State | None = None,
               among: set[int] | None = None, clustering: int = 0,
               classes: dict[int, np.ndarray] | None = None, segment: int = 0,
               saved: Walkers | None = None) -> tuple[State, State | None]:
    """Run hops (rounds under FedAvg) ``start..stop-1`` of a ``steps``-hop training phase
    (the walk, or the incremental one after clustering ``clustering``, whose steps restart
    every ``segment`` hops; each with its own ``seed``) with records, checkpoints and
    evaluations. The walk runs ``walkers`` hops a step (from ``saved`` walkers when resumed
    mid-segment); FedAvg one round. A travelling head must look like ``head_like``; only the
    cameras ``among`` (with global ``classes``) take part (all when None)."""
    cfg, run = session.cfg, session.run
    server_stem = stem_digest(session.model)
    step_name = "hop" if cfg.walk_strategy == "random-walk" else "round"
    eval_every = cfg.schedule(len(session.roster.cameras)).eval_every
    walkers = cfg.walkers if cfg.walk_strategy == "random-walk" else 1

    def after_step(hops: range, records: list[Hop | SkippedHop], new_state: State,
                   new_head: State | None) -> None:
        for hop in records:
            if isinstance(hop, SkippedHop) and hop.camera < 0:
                log(WARNING, "%s %s %d/%d: %s", phase, step_name, hop.hop + 1, steps,
                    hop.skipped)
            elif isinstance(hop, SkippedHop):
                log(WARNING, "%s %s %d/%d camera %d skipped, the %s keeps the last good "
                    "weights: %s", phase, step_name, hop.hop + 1, steps, hop.camera, phase,
                    hop.skipped)
            elif hop.stem_digest != server_stem:
                raise NodeError(f"camera {hop.camera} trained with a stem that differs from "
                                "the server's: every node needs the same pretrained-weights "
                                "file")
            else:
                log(INFO, "%s %s %d/%d%s camera %d: loss %.3f acc %.2f, %d images in %.1f s, "
                    "%.1f MB each way", phase, step_name, hop.hop + 1, steps,
                    f" (step {hop.step + 1}, walker {hop.walker})" if walkers > 1 else "",
                    hop.camera, hop.loss, hop.accuracy, hop.images, hop.seconds,
                    hop.bytes_sent / 1e6)
            run.append("hops.jsonl", hop.__dict__)
        session.save_network()
        if evaluates_after(hops, eval_every, steps):
            if walkers > 1:
                strategy.merge()  # evaluations, like everything after a phase, see one model
            session.evaluate(new_state, phase, offset + hops.stop)
        run.save_checkpoint(new_state, {
            "phase": phase, "hop": hops.stop - 1, "step": step_of(hops.start),
            "lines": run.count_lines("hops.jsonl"),
            "evaluations": run.count_lines("evaluations.jsonl")}, new_head,
            strategy.team.to_dict() if walkers > 1 else None)

    def step_of(hop: int) -> int:
        return step_number(hop, segment or steps, walkers)

    config = {**session.base_config, "phase": phase}
    if cfg.walk_strategy == "fedavg":  # each node keeps its head for the phase's rounds
        config["local-head"] = f"{phase}-{clustering}"
    with session.grid.phase(phase):
        session.roster.begin_phase(session.grid, phase)
        strategy = CameraWalk(session.roster, cfg.walk_order, seed, among, payload, walkers,
                              cfg.walker_merge, cfg.transfer_dtype, classes,
                              cfg.incremental_loss == "prototype" and classes is not None) \
            if cfg.walk_strategy == "random-walk" else \
            CameraFedAvg(session.roster, among, payload)
        return train_steps(session.grid, strategy, state, start,
                           steps if stop is None else stop, config, cfg.hop_wait, after_step,
                           head, head_like, cfg.transfer_dtype, step_of, saved)


def incremental_payload(session: Session, classes: dict[int, np.ndarray] | None):
    """Each incremental hop carries the node's global class per tracklet, and what travels
    from hop to hop: the head (``incremental-head = "travel"``) or the prototype memory
    (``incremental-loss = "prototype"``)."""
    cfg = session.cfg
    key = PROTOTYPES if cfg.incremental_loss == "prototype" else \
        HEAD if cfg.incremental_head == "travel" else None

    def payload(camera: int, head: State | None) -> dict[str, ArrayRecord]:
        if classes is None:  # the control: local labels, as in the first walk
            return {}
        records = {CLASSES: arrays_record({"classes": classes[camera]})}
        if key is not None and head is not None:
            records[key] = state_record(head, cfg.transfer_dtype)
        return records

    return payload


def global_labels(session: Session, state: State, partitions: Path | None, tag: str
                  ) -> GlobalLabels:
    """The incremental walk's labels (``incremental-labels``): the distributed clustering,
    or the oracle's true identities; the cameras without them are left out."""
    cfg, grid, roster = session.cfg, session.grid, session.roster
    with grid.phase("clustering"):
        roster.begin_phase(grid, "clustering")
        if cfg.incremental_labels == "oracle":
            labels = oracle_phase(grid, session.nodes, session.network.tracklets, state,
                                  session.base_config, cfg.node_timeout, session.run,
                                  partitions, cfg.incremental_loss == "prototype", tag,
                                  cfg.transfer_dtype)
        else:
            labels = cluster_phase(
                grid, session.nodes, session.network.tracklets, state, session.base_config,
                cfg.alpha, cfg.flood_reach, cfg.node_timeout, session.run, partitions,
                cfg.top1_max_distance, tag, cfg.transfer_dtype, cfg.feature_dtype)
    live = {c for _, c in session.nodes}
    roster.leave_out({c: f"clustering round {m['round']}: {m['cause']}"
                      for c, m in labels.missing.items() if c in live}, "clustering")
    session.save_network()
    return labels


def prototype_memory(cfg: RunConfig, labels: GlobalLabels) -> State:
    """``incremental-loss = "prototype"``: the cluster memory built from the banks the labels
    came from, as it travels (``transfer-dtype``)."""
    if sorted(labels.banks) != sorted(labels.classes):
        raise ConfigError("the prototype memory needs the memory bank of every labelled "
                          "camera, and this run's saved clustering has none (saved by an "
                          "earlier version of dmnreid): start the run again")
    memory = build_memory(labels.banks, labels.classes, cfg.prototype_cameras)
    record = state_record(memory.to_state(), cfg.transfer_dtype)
    log(INFO, "Prototype memory: %d entries of %d dimensions, %.1f KB on the wire each hop",
        len(memory.vectors), memory.vectors.shape[1], record.count_bytes() / 1e3)
    return record_state(record)


def trained_incremental(run: RunDir) -> list[int]:
    """The cameras that finished an incremental hop of this run: each holds a model copy."""
    return sorted({h["camera"] for h in run.read_lines("hops.jsonl")
                   if h["phase"] == "incremental" and "loss" in h})


def model_copy(content: RecordDict, camera: int, like: State) -> State:
    """A camera's model copy from its ``query.weights`` reply: a finite model like ``like``,
    or a StateError."""
    copy = record_state(content[WEIGHTS]) if WEIGHTS in content else State()
    check_state(copy, f"camera {camera}'s model copy", like=like)
    return copy


def usable_copies(answers: Answers, like: State, used: list[int],
                  rejected: dict[int, str]) -> Iterator[State]:
    """Each camera's model copy in camera order, decoded and checked only when it is taken
    (its reply released then); the camera goes to ``used`` or, with why, to ``rejected``."""
    for camera in sorted(answers.content):
        answers.replies.pop(camera, None)
        try:
            copy = model_copy(answers.content.pop(camera), camera, like)
        except StateError as err:
            rejected[camera] = str(err)
            continue
        used.append(camera)
        yield copy
        del copy  # released before the next copy is decoded


def unify_phase(session: Session, state: State) -> State:
    """Pick one node's model or average them (each node's own copy, fetched), among the
    cameras that trained an incremental hop and are taking part now.

    A copy that does not come (node failed or gone) or is not a finite model of the walking
    layers is left out and recorded; pick-one then picks again among the others. When no
    copy is left, the model stays the walk's last good weights ``state``. The average is a
    running mean over the copies as they are decoded, not over all of them held at once.
    """
    cfg, run = session.cfg, session.run
    session.roster.begin_phase(session.grid, "unification")
    live = {c for _, c in session.nodes}
    trained = trained_incremental(run)
    candidates = [c for c in trained if c in live]
    used: list[int] = []
    rejected: dict[int, str] = {}
    unified: State | None = None
    while candidates and unified is None:
        chosen = [pick_one(candidates, cfg.seed)] if cfg.unify == "pick-one" else candidates
        answers = ask_nodes(session.grid, [(n, c) for n, c in session.nodes if c in chosen],
                            "query.weights", session.base_config, cfg.node_timeout)
        rejected |= answers.missing
        copies = usable_copies(answers, state, used, rejected)
        if cfg.unify == "average":
            mean = running_mean(copies)
            # rounded as it travels, like every other model: the final model is the one the
            # nodes receive (and evaluate, with eval-mode = federated), not a finer one
            unified = as_sent(mean, cfg.transfer_dtype) if mean is not None else None
        else:
            unified = next(copies, None)
        for camera in chosen:
            if camera in rejected:
                log(WARNING, "Unification leaves out camera %d: %s", camera, rejected[camera])
        candidates = [c for c in candidates if c not in chosen]
    record = {"mode": cfg.unify, "cameras": sorted(used), "count": len(used),
              "trained": trained}
    if rejected:
        record["rejected"] = {str(c): why for c, why in sorted(rejected.items())}
    if unified is None:
        record["fallback"] = "the walk's last good weights"
        log(WARNING, "No usable model copy: the final model is the walk's last good weights")
    log(INFO, "Unified (%s) over %d camera(s) %s", cfg.unify, len(used), sorted(used))
    run.write_json("unification.json", record)
    return state if unified is None else unified


def saved_network(cfg: RunConfig) -> dict | None:
    """The network a resumed run started with (network.json), None for a new run."""
    if not cfg.resume_from:
        return None
    path = Path(cfg.resume_from).expanduser() / NETWORK_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def make_roster(cfg: RunConfig, network: Network, saved: dict | None,
                partitions: Path | None) -> Roster:
    """Every camera of the run with its node; on resume, those without a node now are left
    out (under their saved node id, which a SuperNode restarted with its key gets again)."""
    nodes = {int(c): int(n) for c, n in (saved or {}).get("nodes", {}).items()}
    nodes |= {c: n for n, c in network.nodes}
    roster = Roster(nodes, cfg.node_retries, str(partitions) if partitions else "",
                    cfg.probe_interval)
    if saved:
        roster.events = list(saved.get("events", []))
    roster.leave_out(network.missing, "resumed run")
    return roster


def run_pipeline(flower_grid: Grid, cfg: RunConfig) -> RunDir:
    # everything that can refuse the settings or the data comes before the run directory
    cfg = resolve_config(cfg)
    grid = RoundsGrid(flower_grid, cfg.poll_interval)
    partitions = prepare_partitions(cfg)
    if cfg.incremental_labels == "oracle" and cfg.incremental_walk:
        check_oracle(partitions)
    weights = pretrained_file(cfg)
    sha256 = weights_digest(weights) if weights else ""  # hashed once: it names the weights
    metrics = with_provenance(cfg, run_provenance(cfg, weights, sha256))
    model = build_model(cfg.arch, weights, 1, cfg.freeze_stem)
    saved = saved_network(cfg)
    network = discover_nodes(grid, expected_cameras(cfg, partitions), partitions,
                             cfg.node_timeout, cfg.target_camera,
                             {int(c): n for c, n in saved["cameras"].items()} if saved else None,
                             sha256)
    log(INFO, "%d nodes, cameras %s", len(network.nodes), [c for _, c in network.nodes])
    if cfg.walk_strategy == "random-walk":
        try:
            check_walkers(cfg.walkers, len(network.tracklets))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    run = open_run(cfg)
    grid.rounds = added(run.read_json(ROUNDS_JSON), grid.rounds)  # a resumed run adds to its own
    grid.messages = added(run.read_json(MESSAGES_JSON), grid.messages)
    session = Session(
        grid=grid, cfg=cfg, run=run, network=network,
        roster=make_roster(cfg, network, saved, partitions), model=model,
        evaluator=server_evaluator(cfg, partitions),
        base_config=node_settings(cfg, partitions, run, sha256),
        metrics=metrics,
    )
    roster = session.roster
    run.write_metrics(metrics)

    def rejoin(node: int, camera: int) -> None:  # a camera back needs the weights first
        sent = distribute_weights(grid, [(node, camera)], weights, session.base_config,
                                  cfg.hop_wait)
        if sent["missing"]:
            raise NodeError(f"camera {camera} did not take the pretrained weights: "
                            f"{sent['missing'][camera]}")

    roster.on_rejoin = rejoin
    session.save_network()
    if cfg.eval_mode == "none":
        log(WARNING, "eval-mode = 'none': nothing is evaluated (no labelled query/gallery)")
    record_walking_bytes(run, session.model, cfg)
    roster.leave_out(distribute_weights(grid, session.nodes, weights, session.base_config,
                                        cfg.node_timeout, network.holding)["missing"],
                     "set-up")
    if cfg.style_transfer:  # stage 1: before any evaluation uses the model's state
        with grid.phase("style transfer"):
            roster.begin_phase(grid, "style transfer")
            fresh = not (run.path / STYLE_JSON).is_file()
            summary = style_phase(grid, session.nodes, cfg, session.base_config, run,
                                  partitions, session.model)
        for camera, why in summary.get("missing", {}).items() if fresh else ():
            roster.failed(int(camera), "style transfer", why)
    state, head, info = walking_state(session.model, cfg.freeze_stem, cfg.bn_mode), None, {}
    saved_walkers = None  # several walkers stopped mid-phase: each one's weights
    if cfg.resume_from and run.has_checkpoint():
        state, info, head = run.load_checkpoint(like=state)
        saved_walkers = run.load_walkers()
        run.truncate_lines("hops.jsonl", int(info["lines"]))
        run.truncate_lines("evaluations.jsonl", int(info["evaluations"]))
        log(INFO, "Resuming after %s hop %d", info["phase"], info["hop"] + 1)
    session.record("baseline", state, 0)

    plan = cfg.schedule(len(roster.cameras))
    walk_steps = plan.walk
    def resumed_walkers(phase: str, first: int, start: int) -> Walkers | None:
        """The saved walkers where the run stopped inside this phase's segment from
        ``first``; a segment that starts afresh starts its walkers from the model."""
        if saved_walkers is None or info.get("phase") != phase or start <= first:
            return None
        return Walkers.from_dict(saved_walkers)

    if info.get("phase", "walk") == "walk":
        start = info["hop"] + 1 if info else 0
        state, _ = walk_phase(session, "walk", state, walk_steps, cfg.seed, start, 0,
                              saved=resumed_walkers("walk", 0, start))
    session.record("walk", state, walk_steps)

    if plan.incremental > 0:
        inc_steps, every = plan.incremental, plan.recluster_every
        start = info["hop"] + 1 if info.get("phase") == "incremental" else 0
        for first in range(0, inc_steps, every):
            stop = min(first + every, inc_steps)
            if stop <= start:
                continue
            classes, head_like, num_classes = None, None, 0
            if cfg.incremental_labels != "local":
                labels = global_labels(session, state, partitions, f"-{first}" if first else "")
                classes, num_classes = labels.classes, labels.num_classes
                head = head if start > first else None  # new labels: a new head or memory
                if cfg.incremental_loss == "prototype":
                    head_like = prototype_memory(cfg, labels)
                    head = head if head is not None else head_like
                elif cfg.incremental_head == "travel":
                    head_like = new_head(session.model.feature_dim, num_classes).state_dict()
            session.base_config["num-classes"] = num_classes
            state, head = walk_phase(session, "incremental", state, inc_steps, cfg.seed + 1,
                                     max(start, first), walk_steps,
                                     incremental_payload(session, classes), head, stop,
                                     head_like, set(classes) if classes is not None else None,
                                     first, classes, every,
                                     resumed_walkers("incremental", first, start))
        hops = walk_steps + inc_steps
        session.record("incremental", state, hops)
        with grid.phase("unification"):
            state = unify_phase(session, state)
        session.record("final", state, hops, again=True)
    elif "walk" in session.metrics:
        session.metrics["final"] = session.metrics["walk"]
    session.save_network()
    run.save_final_model(state, {"bn-mode": cfg.bn_mode, "unify": cfg.unify})
    run.write_metrics(session.metrics)
    run.plot_curve()
    if {"baseline", "final"} <= set(session.metrics):
        gain = session.metrics["final"]["mAP"] - session.metrics["baseline"]["mAP"]
        log(INFO if gain > 0 else WARNING, "mAP %.1f -> %.1f (%+.1f). Outputs in %s",
            session.metrics["baseline"]["mAP"], session.metrics["final"]["mAP"], gain, run.path)
    else:
        log(INFO, "Finished. Outputs in %s", run.path)
    return run


def reevaluate(flower_grid: Grid, cfg: RunConfig) -> dict[str, float]:
    """Score a finished run's final model again under this call's ``bn-mode``, ``eval-mode``
    and ``bn-adapt-images``; nothing is trained. Appends to the run's re-evaluations.jsonl."""
    grid = RoundsGrid(flower_grid, cfg.poll_interval)
    run = RunDir.resume(Path(cfg.evaluate_run).expanduser(), "evaluate-run")
    saved = RunConfig.from_mapping(run.read_json("config.json"))
    state, info = run.load_final_model()
    if info.get("bn-mode") == "camera" and cfg.bn_mode == "shared":
        raise ConfigError(f"{run.path} was trained with bn-mode = 'camera': its model carries "
                          "no shared BN statistics, so it can only be evaluated with "
                          "bn-mode = 'camera'")
    if cfg.bn_mode == "camera":
        state = without_bn_statistics(state)
    eval_cfg = replace(saved, bn_mode=cfg.bn_mode, eval_mode=cfg.eval_mode,
                       bn_adapt_images=cfg.bn_adapt_images, node_timeout=cfg.node_timeout,
                       resume_from="", evaluate_run=cfg.evaluate_run)
    eval_cfg.validate()  # e.g. a dataset = 'devices' run cannot be scored by the server
    partitions = prepare_partitions(eval_cfg)
    weights = pretrained_file(eval_cfg)
    sha256 = weights_digest(weights) if weights else ""
    network = discover_nodes(grid, expected_cameras(eval_cfg, partitions), partitions,
                             cfg.node_timeout, eval_cfg.target_camera, weights_sha256=sha256) \
        if cfg.eval_mode == "federated" else None
    nodes = network.nodes if network else None
    log(INFO, "Re-evaluating the final model of %s: bn-mode %s, eval-mode %s", run.path,
        cfg.bn_mode, cfg.eval_mode)
    settings = node_settings(eval_cfg, partitions, run, sha256)
    if network is not None:
        distribute_weights(grid, network.nodes, weights, settings, cfg.node_timeout,
                           network.holding)
    scores = evaluate_state(state, eval_cfg, build_model(saved.arch, weights, 1, saved.freeze_stem),
                            server_evaluator(eval_cfg, partitions), grid, nodes, settings)
    run.append(REEVALUATIONS, {"trained-bn-mode": info.get("bn-mode"), "bn-mode": cfg.bn_mode,
                               "eval-mode": cfg.eval_mode,
                               "bn-adapt-images": cfg.bn_adapt_images, **scores})
    log_scores("final", -1, scores)
    return scores


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_mapping(context.run_config)
    if cfg.evaluate_run:
        reevaluate(grid, cfg)
    else:
        run_pipeline(grid, cfg)
