"""``ByzantineWorker``: a ``SignWorker`` whose outgoing message passes through an attack.

The attack (``raysign.signsgd.attacks``, chosen by ``SignSGDConfig.attack``) acts on the momentum
before compression; the worker otherwise behaves like an honest one, including applying the
vote to its own replica.
"""

from __future__ import annotations

from raysign.actors.worker import SignWorker


class ByzantineWorker(SignWorker):
    byzantine = True
