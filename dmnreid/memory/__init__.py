"""Distributed clustering of tracklet memories (paper §3.3), as pure functions without Flower.

- ``reference``: the centralised reference (full distance matrix, sparse products, connected
  components) and the types both implementations share: ``GlobalIds`` (the (camera, label) ->
  int64 gid encoding), ``ClusterResult``, ``validate_banks`` and the distance formula.
- ``protocol``: the node-side functions of the distributed protocol (``node_top1``,
  ``node_triangle``, ``node_flood``), the server's relaying functions (``route_top1``,
  ``route_triangle``, ``route_flood`` and the reply checks) and an in-process driver,
  ``cluster_distributed``, that plays the server's part.
- ``diagnostics``: pairwise precision/recall/F-score and NMI of a clustering against true ids.

The algorithm: (1) mutual top-1 by squared L2 distance across every pair of cameras, ties to the
lowest label; (2) triangle relation: an edge survives iff its endpoints share >= alpha step-1
neighbours (judged simultaneously on the step-1 graph); (3) cluster id = smallest gid in the
connected component of the surviving graph.
"""
