"""Evaluation by the server (``eval-mode = "server"``) or by the nodes (``"federated"``).

Federated: every node embeds its own camera's query and gallery images (``query.embed``) and
sends back only feature vectors with item, person and camera ids; the server ranks them. No
test image is needed at the server, as in a deployed camera network. Both modes compute each
camera's features with the same function on the same images, so they give the same numbers.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from flwr.serverapp import Grid

from dmnreid.checks import check_features
from dmnreid.config import RunConfig
from dmnreid.messages import PAYLOAD, WEIGHTS, NodeError, ask_nodes, causes, state_record
from dmnreid.reid.evaluator import SPLITS, Evaluator, ItemFeatures, rank
from dmnreid.reid.model import ReidNet, load_walking_state

State = OrderedDict[str, torch.Tensor]


def federated_embeddings(grid: Grid, nodes: list[tuple[int, int]], state: State,
                         config: dict, timeout: float, dtype: str = "float32"
                         ) -> tuple[dict[int, dict[str, ItemFeatures]], dict[int, str]]:
    """The query/gallery features of every node that answers, under the walking weights
    ``state``, and why each other camera is missing.

    The weights are converted once and the one record goes in every camera's message, as
    Flower's FedAvg shares one record among its messages (a Message holds its content by
    reference; nothing on the way changes it), not M conversions of the same model."""
    answers = ask_nodes(grid, nodes, "query.embed", config, timeout,
                        {WEIGHTS: state_record(state, dtype)})
    embedded = {}
    model_width = None  # every camera's features must have the first camera's dimension
    for camera, content in sorted(answers.content.items()):
        if PAYLOAD not in content:
            raise NodeError(f"camera {camera} sent an embedding reply without features")
        arrays = {k: a.numpy() for k, a in content[PAYLOAD].items()}
        try:
            embedded[camera] = {s: ItemFeatures.from_arrays(arrays, s) for s in SPLITS}
            for split in SPLITS:
                check_features(arrays[f"{split}-features"], f"{split} features",
                               width=model_width)
        except ValueError as err:  # StateError included
            raise NodeError(f"camera {camera}: malformed embedding ({err})") from err
        model_width = embedded[camera]["query"].features.shape[1]
        foreign = {int(c) for s in SPLITS for c in embedded[camera][s].camids} - {camera}
        if foreign:
            raise NodeError(f"camera {camera} sent features of camera(s) {sorted(foreign)}")
    return embedded, answers.missing


def evaluate_state(state: State, cfg: RunConfig, model: ReidNet, evaluator: Evaluator | None,
                   grid: Grid | None = None, nodes: list[tuple[int, int]] | None = None,
                   config: dict | None = None) -> dict:
    """CMC/mAP of the walking weights ``state`` in the run's ``eval-mode`` and ``bn-mode``.

    Federated scores over fewer cameras than ``nodes`` say so: ``missing-cameras`` lists the
    cameras whose queries and galleries were not scored (none answered: NodeError).
    """
    if cfg.eval_mode == "federated":
        if grid is None or nodes is None or config is None:
            raise ValueError("federated evaluation needs the grid, the nodes and the config")
        embedded, missing = federated_embeddings(grid, nodes, state, config, cfg.node_timeout,
                                                 cfg.transfer_dtype)
        if not embedded:
            raise NodeError(f"no camera answered the evaluation: {causes(missing)}")
        scores: dict = rank(embedded.values())
        if missing:
            scores["missing-cameras"] = sorted(missing)
        return scores
    if evaluator is None:
        raise ValueError("server-side evaluation needs the server's copy of the test images")
    load_walking_state(model, state, cfg.freeze_stem, cfg.bn_mode)
    return evaluator.evaluate(model, cfg.bn_mode, cfg.bn_adapt_images)
