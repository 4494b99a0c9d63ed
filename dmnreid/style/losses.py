"""CycleGAN's loss terms and how they combine, as plain functions of tensors.

Naming follows the paper: G maps domain A (a node's own camera) to domain B (the target
camera), F maps B back to A; D_A judges images of domain A, D_B images of domain B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as tf


def adversarial_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean((p - 1)^2) for real, mean(p^2) for fake.

    The paper uses it instead of the log loss because it trains more stably.
    """
    return torch.mean((prediction - 1.0) ** 2) if target_is_real else torch.mean(prediction**2)


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance after a round trip: keeps the content (the person) of the image."""
    return tf.l1_loss(reconstructed, original)


def identity_loss(mapped: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean L1 change of an image already in the output domain: discourages colour drift."""
    return tf.l1_loss(mapped, original)


def generator_objective(
    *,
    d_b_on_g_a: torch.Tensor,
    d_a_on_f_b: torch.Tensor,
    real_a: torch.Tensor,
    real_b: torch.Tensor,
    f_g_a: torch.Tensor,
    g_f_b: torch.Tensor,
    g_b: torch.Tensor | None,
    f_a: torch.Tensor | None,
    cycle_weight: float = 10.0,
    identity_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The generators' loss, and its terms as floats for logging.

    Arguments are named by what produced them (``f_g_a`` = F(G(A)), ``d_b_on_g_a`` = D_B(G(A))).
    ``g_b`` and ``f_a`` feed the identity term and may be None only when its weight is 0.

    total = adv(D_B(G(A)), real) + adv(D_A(F(B)), real)
            + cycle_weight * (|F(G(A)) - A| + |G(F(B)) - B|)
            + cycle_weight * identity_weight * (|G(B) - B| + |F(A) - A|)

    The logged "cycle" and "identity" terms are the unweighted sums of their two L1 means.
    """
    g_adv = adversarial_loss(d_b_on_g_a, True)
    f_adv = adversarial_loss(d_a_on_f_b, True)
    cycle = cycle_loss(f_g_a, real_a) + cycle_loss(g_f_b, real_b)
    if g_b is not None and f_a is not None:
        identity = identity_loss(g_b, real_b) + identity_loss(f_a, real_a)
    elif identity_weight == 0:
        identity = torch.zeros(())
    else:
        raise ValueError("the identity term has a weight but G(B) or F(A) is missing")
    total = g_adv + f_adv + cycle_weight * cycle + cycle_weight * identity_weight * identity
    terms = {"g_adv": g_adv.item(), "f_adv": f_adv.item(), "cycle": cycle.item(),
             "identity": identity.item(), "g_total": total.item()}
    return total, terms


def discriminator_objective(on_real: torch.Tensor, on_fake: torch.Tensor) -> torch.Tensor:
    """One discriminator's loss; halved, as in the paper, to slow it relative to the generators."""
    return 0.5 * (adversarial_loss(on_real, True) + adversarial_loss(on_fake, False))
