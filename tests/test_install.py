"""The installed stack works together: torch and torchvision are a matching pair."""

from __future__ import annotations

import torch
import torchvision
from torchvision.ops import nms


def test_torchvision_ops_load_against_this_torch():
    # A torchvision built for another torch fails here ("torchvision::nms does not exist").
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20, 20, 30, 30]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    pair = (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])
    assert pair in {("2.15.0", "0.29.2"), ("2.12.0", "0.27.0")}
