"""Normalised Softmax (Table II baseline).

The same formula as the clustering loss (paper Eq. 5: softmax over
L2-normalised building proxies with temperature 0.05, on both views); the
baseline uses it alone. A separate name so that the two can be combined or
configured independently; see :mod:`dycl.losses.cluster` for the computation
and the proxies' optimiser.
"""

from __future__ import annotations

from .cluster import ClusterLoss


class NormalizedSoftmaxLoss(ClusterLoss):
    """Normalised softmax over building proxies; same arguments as :class:`~dycl.losses.ClusterLoss`."""
